"""Error classes: what a person must do about a failure, read off the accounting system's answer.

The contract ("Reconciliation and error classes" in the README) sorts every run-level failure
and every record error into one class of a fixed vocabulary. An expired client secret
(``AADSTS7000222``) and a burst of throttling (``BAD_REQUEST.BURST_RATE_LIMIT_REACHED``)
both make a run fail, but only the second heals by itself; the first must page someone at
once. A recognised code decides; an unrecognised or missing code falls through to the
message; what neither matches is ``unknown``.

Pure and total: any code and any message (NULL, megabytes long, control characters, any
language) classifies as a member of ``ERROR_CLASSES``, so the ``error_class`` label can
never take a value outside the vocabulary, whatever the pipeline writes.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

ERROR_CLASSES = (
    "auth",
    "permission",
    "period_closed",
    "validation",
    "duplicate",
    "throttled",
    "timeout",
    "conflict",
    "unavailable",
    "unknown",
)
# Failures that will not go away until a person acts: these page at once.
NEEDS_ACTION = frozenset({"auth", "permission", "period_closed", "validation", "duplicate"})
# Failures the next runs are expected to get past without anyone doing anything.
HEALS_BY_ITSELF = frozenset({"throttled", "timeout", "conflict", "unavailable"})
UNKNOWN = "unknown"

# Only so much of a message is searched: a pattern that matters sits near the start, and a
# megabyte-long message must not cost a megabyte of regex work per refresh. The reader cuts
# messages and codes at these lengths in SQL already, so they never cross the wire whole.
MESSAGE_PREFIX = 4096
CODE_PREFIX = 200
# An operator's code must be shorter than what is compared, so a cut code never equals it.
CODE_RULE_LIMIT = 100


@dataclass(frozen=True, slots=True)
class Rule:
    """One line of the table: a code (exact, or a prefix ending in ``*``) or a message
    pattern (a regular expression searched case-insensitively), and the class it means."""

    error_class: str
    code: str | None = None
    message: re.Pattern[str] | None = None

    def matches_code(self, code: str) -> bool:
        if self.code is None:
            return False
        if self.code.endswith("*"):
            return code.startswith(self.code[:-1])
        return code == self.code


def _codes(error_class: str, *codes: str) -> list[Rule]:
    return [Rule(error_class, code=code.casefold()) for code in codes]


def _messages(error_class: str, *patterns: str) -> list[Rule]:
    return [Rule(error_class, message=re.compile(p, re.IGNORECASE)) for p in patterns]


# The shipped table: every example in the contract, for Xledger, Dynamics 365 (Business
# Central) and Microsoft Entra. Codes are compared case-insensitively. Where the
# accounting system answered only with an HTTP status, the pipeline writes its three digits.
BUILTIN_RULES: tuple[Rule, ...] = (
    *_codes(
        "auth",
        "Authentication_InvalidCredentials",
        "AADSTS7000222",  # client secret expired
        "AADSTS700082",  # refresh token expired
        "AADSTS7000215",  # invalid client secret
        "401",
    ),
    *_codes("permission", "Authorization_*", "403"),
    *_codes(
        "validation",
        "Application_FieldValidationException",
        "Application_StringExceededLength",
        "BadRequest_RequiredParamNotProvided",
        "Internal_InvalidTableRelation",
        "INVALID_VALUE",
    ),
    *_codes("duplicate", "Internal_EntityWithSameKeyExists"),
    *_codes(
        "throttled",
        "429",
        "BAD_REQUEST.BURST_RATE_LIMIT_REACHED",
        "BAD_REQUEST.CONCURRENCY_LIMIT_REACHED",
        "BAD_REQUEST.INSUFFICIENT_CREDITS",
    ),
    *_codes("timeout", "504"),
    *_codes("conflict", "Request_EntityChanged"),
    *_codes("unavailable", "Internal_TenantUnavailable", "Internal_ServerError", "502", "503"),
    # Messages, for answers without a (recognised) code.
    *_messages(
        "auth",
        r"\bAADSTS(7000222|700082|7000215)\b",
        r"bad format for api token",
    ),
    *_messages("period_closed", r"not within your range of allowed posting dates"),
    *_messages("duplicate", r"you may not enter numbers manually"),
    *_messages("timeout", r"your query timed out"),
)


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]+")


def _clean(value: object, limit: int) -> str:
    """Text to match: runs of control characters folded to one space, cut at ``limit``."""
    if value is None:
        return ""
    text = value if isinstance(value, str) else str(value)
    return _CONTROL.sub(" ", text[:limit]).strip()


class Classifier:
    """The operators' rules (from the YAML config) ahead of the shipped table.

    Results are memoised: a refresh classifies the last run's errors of every
    integration, and the same few (code, message) pairs recur from refresh to refresh.
    The memo is bounded so an endless variety of messages cannot grow it without limit.
    """

    MEMO_LIMIT = 2048  # keys hold up to MESSAGE_PREFIX characters: a few MiB at most

    def __init__(self, rules: Iterable[Rule] = ()) -> None:
        extra = tuple(rules)
        self.rules = (*extra, *BUILTIN_RULES)
        self._code_rules = tuple(r for r in self.rules if r.code is not None)
        self._message_rules = tuple(r for r in self.rules if r.message is not None)
        self._memo: dict[tuple[str, str], str] = {}

    def classify(self, code: object, message: object) -> str:
        """The class of one failure: a recognised code decides, then the message."""
        key = (_clean(code, CODE_PREFIX).casefold(), _clean(message, MESSAGE_PREFIX))
        found = self._memo.get(key)
        if found is None:
            found = self._classify(*key)
            if len(self._memo) >= self.MEMO_LIMIT:
                self._memo.clear()
            self._memo[key] = found
        return found

    def _classify(self, code: str, message: str) -> str:
        if code:
            for rule in self._code_rules:
                if rule.matches_code(code):
                    return rule.error_class
        if message:
            for rule in self._message_rules:
                if rule.message is not None and rule.message.search(message):
                    return rule.error_class
        return UNKNOWN


def parse_rules(raw: object, key: str = "classification.rules") -> list[Rule]:
    """Operator rules from the YAML config: a list of ``{class, code}`` or ``{class,
    message}`` mappings. A bad entry raises ``ValueError`` naming its dotted key."""
    if raw is None:
        return []
    if not isinstance(raw, Sequence) or isinstance(raw, str):
        raise ValueError(f"{key}: expected a list of rules, got {type(raw).__name__}")
    rules = []
    for index, entry in enumerate(raw):
        where = f"{key}[{index}]"
        if not isinstance(entry, Mapping):
            raise ValueError(f"{where}: expected a mapping with class and code or message")
        unknown = set(entry) - {"class", "code", "message"}
        if unknown:
            raise ValueError(f"{where}.{sorted(unknown)[0]}: unknown key")
        error_class = entry.get("class")
        if error_class not in ERROR_CLASSES:
            raise ValueError(
                f"{where}.class: must be one of {', '.join(ERROR_CLASSES)}; got {error_class!r}"
            )
        code, message = entry.get("code"), entry.get("message")
        if (code is None) == (message is None):
            raise ValueError(f"{where}: give exactly one of code or message")
        if code is not None:
            text = str(code).strip() if isinstance(code, str | int) else ""
            if isinstance(code, bool) or not text or _CONTROL.search(text):
                raise ValueError(f"{where}.code: expected a non-empty string, got {code!r}")
            if len(text) > CODE_RULE_LIMIT or "*" in text[:-1]:
                raise ValueError(
                    f"{where}.code: at most {CODE_RULE_LIMIT} characters, with * only at the end"
                )
            rules.append(Rule(error_class, code=text.casefold()))
            continue
        if not isinstance(message, str) or not message:
            raise ValueError(f"{where}.message: expected a non-empty pattern, got {message!r}")
        try:
            pattern = re.compile(message, re.IGNORECASE)
        except re.error as exc:
            raise ValueError(f"{where}.message: not a regular expression: {exc}") from None
        rules.append(Rule(error_class, message=pattern))
    return rules
