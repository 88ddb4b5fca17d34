"""Error classes in the dashboards: the exporter's table turned into SQL, and into words.

The SQL panels read ``sync_record_error`` directly, so they must classify the same way the
exporter does. Rather than a second, hand-kept table that would drift, the ``CASE``
expression is generated from :data:`exporter.classification.BUILTIN_RULES`: a code rule
becomes an equality (or, for a ``*`` prefix, a ``LIKE``) on the lower-cased code, a message
rule becomes PostgreSQL's case-insensitive ``~*`` with ``\\b`` written as ``\\y``. Code
rules come first, as in :class:`~exporter.classification.Classifier`: a recognised code
decides, otherwise the message does, otherwise ``unknown``.

Operator rules from the exporter's YAML config are not known here (the dashboards are
generated once and shipped); they reach the Prometheus panels, which read the exporter's
``error_class`` labels, but not the SQL ones.
"""

from __future__ import annotations

import re

from exporter.classification import (
    BUILTIN_RULES,
    ERROR_CLASSES,
    HEALS_BY_ITSELF,
    MESSAGE_PREFIX,
    NEEDS_ACTION,
    UNKNOWN,
    Rule,
)

# What a finance team reads instead of the class name: what happened and who must act.
CLASS_WORDS = {
    "auth": "Sign-in to the accounting system failed: renew the credentials or client secret",
    "permission": "The integration user lacks a permission in the accounting system",
    "period_closed": "The posting date is in a closed accounting period: open it or re-date",
    "validation": "The accounting system rejected a value: correct the record",
    "duplicate": "The record already exists in the accounting system (or its number)",
    "throttled": "Rate limited by the accounting system: retried automatically",
    "timeout": "The accounting system timed out: retried automatically",
    "conflict": "Changed in the accounting system meanwhile: retried automatically",
    "unavailable": "The accounting system was unavailable: retried automatically",
    "unknown": "Not recognised: read the message",
}

HEALS_WORDS = {True: "Yes", False: "No: a person must act", None: "Unknown"}

# Grey, as the status page shows an inactive integration.
INACTIVE_COLOR = "#8e8e8e"

# Control characters become spaces before matching, exactly as the exporter cleans text.
_CONTROL = r"'[\x01-\x1f\x7f]'"
# Python regex syntax with no PostgreSQL equivalent, or that Grafana would read as a variable.
_UNSUPPORTED = re.compile(r"\(\?P|\(\?<[=!]?|\\[AZzG]|\\\d|\$[\w{]|\[\[")


def heals_by_itself(error_class: str) -> bool | None:
    if error_class in HEALS_BY_ITSELF:
        return True
    if error_class in NEEDS_ACTION:
        return False
    return None


def literal(value: str) -> str:
    """A SQL string literal (standard_conforming_strings: backslashes are plain)."""
    return "'" + value.replace("'", "''") + "'"


def _cleaned(column: str, limit: int) -> str:
    return f"btrim(regexp_replace(substr({column}, 1, {limit}), {_CONTROL}, ' ', 'g'))"


def _like(prefix: str) -> str:
    escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return literal(escaped + "%")


def postgres_regex(pattern: str) -> str:
    """A Python pattern of the table as a PostgreSQL ARE; refuses what would not mean the same."""
    if _UNSUPPORTED.search(pattern):
        raise ValueError(f"no PostgreSQL equivalent for the pattern {pattern!r}")
    return re.sub(r"\\([bB])|\\.", _translate_escape, pattern)


def _translate_escape(match: re.Match[str]) -> str:
    if match.group(1) == "b":
        return r"\y"
    if match.group(1) == "B":
        return r"\Y"
    return match.group(0)


# A pattern with none of these is a plain piece of text: found by strpos on the lower-cased
# message, about ten times faster in PostgreSQL than ~* (bench/dashboards.py).
_REGEX_SYNTAX = re.compile(r"[\\.^$|?*+()\[\]{}]")


def _condition(rule: Rule, code: str, message: str, lowered: str) -> str:
    if rule.code is not None:
        if rule.code.endswith("*"):
            return f"{code} LIKE {_like(rule.code[:-1])} ESCAPE '\\'"
        return f"{code} = {literal(rule.code)}"
    assert rule.message is not None
    pattern = rule.message.pattern
    if not _REGEX_SYNTAX.search(pattern) and pattern.isascii():
        return f"strpos({lowered}, {literal(pattern.lower())}) > 0"
    return f"{message} ~* {literal(postgres_regex(pattern))}"


def class_case(
    code: str, message: str, lowered: str, rules: tuple[Rule, ...] = BUILTIN_RULES
) -> str:
    """``CASE ... END`` giving the class of (code, message), as the exporter's Classifier does.

    The arguments are SQL expressions for the cleaned, lower-cased code, the cleaned
    message and the same lower-cased (:func:`classify_join` computes them once per row,
    not once per rule).
    """
    ordered = [r for r in rules if r.code is not None] + [r for r in rules if r.message is not None]
    lines = ["CASE"]
    for rule in ordered:
        condition = _condition(rule, code, message, lowered)
        lines.append(f"    WHEN {condition} THEN {literal(rule.error_class)}")
    lines.append(f"    ELSE {literal(UNKNOWN)}")
    lines.append("  END")
    return "\n".join(lines)


def classify_join(
    code_column: str, message_column: str, alias: str = "c", *, only_if: str = ""
) -> str:
    """FROM-clause items adding ``{alias}.error_class`` to each row of the query.

    The code and message are cleaned as the exporter cleans them (control characters to
    spaces, trimmed, the message cut where the exporter stops searching), then classified.
    With ``only_if`` (a condition), rows that fail it get a NULL class instead: a record
    with no error logged has no class, rather than ``unknown``.
    """
    code = f"lower({_cleaned(code_column, 200)})"
    message = _cleaned(message_column, MESSAGE_PREFIX)
    text = f"{alias}_text"
    join = "LEFT JOIN LATERAL" if only_if else "CROSS JOIN LATERAL"
    on = f" ON {only_if}" if only_if else ""
    case = class_case(f"{text}.code", f"{text}.message", f"{text}.lowered")
    return (
        # OFFSET 0 keeps the planner from inlining the cleaned text into every WHEN,
        # which would clean it again once per rule (bench/dashboards.py).
        f"CROSS JOIN LATERAL (SELECT code, message, lower(message) AS lowered\n"
        f"  FROM (SELECT {code} AS code, {message} AS message OFFSET 0) cleaned OFFSET 0) {text}\n"
        f"{join} (SELECT\n  {case} AS error_class) {alias}{on}"
    )


def _mapping_case(column: str, words: dict[str, str]) -> str:
    lines = [f"CASE {column}"]
    lines += [f"    WHEN {literal(key)} THEN {literal(text)}" for key, text in words.items()]
    lines.append("  END")
    return "\n".join(lines)


def words_case(class_column: str) -> str:
    """The class in words, for a SQL table column."""
    return _mapping_case(class_column, {c: CLASS_WORDS[c] for c in ERROR_CLASSES})


def heals_case(class_column: str) -> str:
    """Whether the class heals by itself, in words, for a SQL table column."""
    return _mapping_case(class_column, {c: HEALS_WORDS[heals_by_itself(c)] for c in ERROR_CLASSES})
