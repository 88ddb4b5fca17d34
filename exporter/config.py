"""Configuration: one typed, validated object from defaults, a YAML file, the environment
and flags, in that order (each later source overrides the earlier ones).

Every option is declared once in ``OPTIONS`` with its YAML key (dotted path), flag and
environment variable, so a bad value is reported the same way wherever it came from:
one line naming the key, flag or variable, and exit code 2.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from exporter.classification import Classifier, Rule, parse_rules
from exporter.durations import parse_duration
from exporter.errors import UsageError
from exporter.logs import FORMATS, LEVELS
from exporter.source.engine import DatabaseURLError, normalize_url, read_secret_file

ENV_PREFIX = "ACCOUNTING_SYNC_"
DEFAULT_PORT = 9839
DEFAULT_LISTEN_ADDRESS = f":{DEFAULT_PORT}"
# A notification burst is gathered for this long at most: longer only delays what it announces.
MAX_DEBOUNCE = 10.0


class ConfigError(UsageError):
    """A bad option: ``str()`` is the one line shown to the user, naming where it came from."""

    def __init__(self, source: str, message: str) -> None:
        super().__init__(f"{source}: {message}")
        self.source = source


# --- value parsers: each takes the raw value and returns the typed one or raises ValueError


def _duration(value: Any) -> float:
    seconds = parse_duration(str(value))
    if seconds <= 0:
        raise ValueError(f"must be greater than zero, got {value!r}")
    return seconds


def _debounce(value: Any) -> float:
    seconds = _duration(value)
    if seconds > MAX_DEBOUNCE:
        raise ValueError(
            f"must be at most {MAX_DEBOUNCE:g}s (every refresh after a change waits this long), "
            f"got {value!r}"
        )
    return seconds


def _listen_address(value: Any) -> tuple[str, int]:
    text = str(value)
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected HOST:PORT (e.g. :{DEFAULT_PORT}), got {text!r}")
    return host.strip("[]"), int(port)


def _path(value: Any) -> str:
    text = str(value)
    if not text.startswith("/") or " " in text:
        raise ValueError(f"must be an absolute URL path such as /metrics, got {text!r}")
    if text in ("/", "/healthz", "/readyz"):
        raise ValueError(f"{text} is reserved for the exporter's own pages")
    return text


def _existing_file(value: Any) -> str:
    path = Path(str(value)).expanduser()
    if not path.is_file():
        raise ValueError(f"no such file: {str(value)!r}")
    return str(path)


def _secret_file(value: Any) -> str:
    """A file holding one secret: checked now, so a bad one stops start-up with its name."""
    path = _existing_file(value)
    read_secret_file(path)
    return path


class _Choice:
    """A parser that also tells ``--help`` its choices."""

    def __init__(self, choices: tuple[str, ...]) -> None:
        self.choices = choices

    def __call__(self, value: Any) -> str:
        text = str(value).lower()
        if text not in self.choices:
            raise ValueError(f"must be one of {', '.join(self.choices)}; got {value!r}")
        return text


def _choice(choices: tuple[str, ...]) -> _Choice:
    return _Choice(choices)


def _boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected true or false, got {value!r}")


def _positive_int(value: Any) -> int:
    text = str(value).strip()
    if not text.isdigit() or int(text) <= 0:
        raise ValueError(f"expected a whole number greater than zero, got {value!r}")
    return int(text)


def _status_users(value: Any, where: str) -> dict[str, tuple[str, ...]]:
    """``status.users``: user -> organization slugs, or ``["*"]`` for every organization."""
    if not isinstance(value, Mapping):
        raise ConfigError(where, 'must map user names to lists of organizations (or ["*"])')
    users: dict[str, tuple[str, ...]] = {}
    for user, orgs in value.items():
        key = f"{where}.{user}"
        if not isinstance(orgs, list) or not all(isinstance(o, str) and o for o in orgs):
            raise ConfigError(key, 'must be a list of organization slugs, or ["*"]')
        if "*" in orgs and len(orgs) > 1:
            raise ConfigError(key, '"*" already means every organization; list nothing else')
        users[str(user)] = tuple(orgs)
    return users


# Options only a file can give: their values are mappings, which a flag cannot carry.
YAML_ONLY = ("status.users",)


def _string(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"expected a non-empty string, got {value!r}")
    return value


def _rules(value: Any) -> tuple[Rule, ...]:
    return tuple(parse_rules(value, "classification.rules"))


@dataclass(frozen=True)
class Option:
    key: str  # dotted YAML path and attribute name (dots become underscores)
    flag: str  # empty for an option only the YAML file can set (a list, say)
    parse: Callable[[Any], Any]
    default: Any
    help: str
    group: str
    # Other spellings of the flag: the contract's hyphenated flags also take the dotted form.
    aliases: tuple[str, ...] = ()

    @property
    def flags(self) -> tuple[str, ...]:
        return (self.flag, *self.aliases)

    @property
    def choices(self) -> tuple[str, ...] | None:
        return self.parse.choices if isinstance(self.parse, _Choice) else None

    @property
    def attribute(self) -> str:
        return self.key.replace(".", "_")

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.attribute.upper()


OPTIONS: tuple[Option, ...] = (
    Option(
        "database.url",
        "--database-url",
        _string,
        None,
        "Sync log URL: postgresql://user@host/db or sqlite:///path.",
        "database",
        ("--database.url",),
    ),
    Option(
        "database.password_file",
        "--database.password-file",
        _secret_file,
        None,
        "File holding the database password (overrides one in the URL).",
        "database",
    ),
    Option(
        "database.statement_timeout",
        "--database.statement-timeout",
        _duration,
        10.0,
        "Longest a snapshot query may run before the refresh gives up.",
        "database",
    ),
    Option(
        "web.listen_address",
        "--web.listen-address",
        _listen_address,
        ("", DEFAULT_PORT),
        "Address to listen on for /metrics.",
        "web",
    ),
    Option(
        "web.telemetry_path",
        "--web.telemetry-path",
        _path,
        "/metrics",
        "Path under which to expose metrics.",
        "web",
    ),
    Option(
        "web.config_file",
        "--web.config.file",
        _existing_file,
        None,
        "Exporter-toolkit web config (TLS, basic auth).",
        "web",
    ),
    Option(
        "refresh.interval",
        "--refresh-interval",
        _duration,
        15.0,
        "How often to re-read the sync log (the fallback when notifications are off).",
        "refresh",
        ("--refresh.interval",),
    ),
    Option(
        "refresh.notify",
        "--refresh.notify",
        _boolean,
        True,
        "On PostgreSQL, refresh as soon as the sync log announces a change.",
        "refresh",
    ),
    Option(
        "refresh.debounce",
        "--refresh.debounce",
        _debounce,
        0.2,
        "Wait this long after a change notification to gather a burst into one refresh "
        f"(at most {MAX_DEBOUNCE:g}s).",
        "refresh",
    ),
    Option(
        "log.level",
        "--log.level",
        _choice(LEVELS),
        "info",
        "Only log messages at this level or above.",
        "log",
    ),
    Option("log.format", "--log.format", _choice(FORMATS), "logfmt", "Log line format.", "log"),
    Option(
        "status.max_streams",
        "--status.max-streams",
        _positive_int,
        64,
        "Most live-update streams of the status page open at once (one more gets 503).",
        "status",
    ),
    # A list of {class, code} or {class, message} mappings, ahead of the shipped table
    # (exporter/classification.py); too structured for a flag or a variable.
    Option(
        "classification.rules",
        "",
        _rules,
        (),
        "Extra error classification rules (YAML only).",
        "classification",
    ),
)
OPTIONS_BY_KEY = {option.key: option for option in OPTIONS}
ENVIRONMENT = frozenset(option.env for option in OPTIONS)


def unknown_environment(environ: Mapping[str, str] | None = None) -> list[str]:
    """One warning per ``ACCOUNTING_SYNC_*`` variable that is no option, with a suggestion.

    A misspelled YAML key stops start-up, but the environment is shared with other
    programs, so a variable only warns: it is named, so the typo cannot go unnoticed.
    """
    environ = os.environ if environ is None else environ
    warnings = []
    for name in sorted(environ):
        if not name.startswith(ENV_PREFIX) or name in ENVIRONMENT:
            continue
        close = difflib.get_close_matches(name, sorted(ENVIRONMENT), n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        warnings.append(f"{name}: not an option of this exporter, ignored{hint}")
    return warnings


@dataclass(frozen=True)
class Settings:
    database_url: str | None
    database_password_file: str | None
    database_statement_timeout: float
    web_listen_address: tuple[str, int]
    web_telemetry_path: str
    web_config_file: str | None
    refresh_interval: float
    refresh_notify: bool
    refresh_debounce: float
    log_level: str
    log_format: str
    status_max_streams: int = 64
    # status.users (YAML only): user -> organizations it may see; None when not configured.
    status_users: dict[str, tuple[str, ...]] | None = None
    classification_rules: tuple[Rule, ...] = ()

    def classifier(self) -> Classifier:
        """The operators' rules ahead of the shipped table."""
        return Classifier(self.classification_rules)

    def require_database_url(self) -> str:
        if not self.database_url:
            raise ConfigError(
                "--database-url",
                f"required (or set database.url in --config, or {ENV_PREFIX}DATABASE_URL)",
            )
        return self.database_url


def _flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and dotted not in YAML_ONLY:
            flat.update(_flatten(value, dotted + "."))
        else:
            flat[dotted] = value
    return flat


def read_config_file(path: str) -> dict[str, Any]:
    """The file's options by dotted key; unknown keys are rejected by name."""
    source = f"--config {path}"
    try:
        with open(path, encoding="utf-8") as handle:
            data = yaml.safe_load(handle)
    except OSError as exc:
        raise ConfigError("--config", f"cannot read {path!r}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(source, f"not valid YAML{where}") from exc
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise ConfigError(source, "the top level must be a mapping of options")
    flat = _flatten(data)
    for key in flat:
        if key not in OPTIONS_BY_KEY and key not in YAML_ONLY:
            if any(known.startswith(f"{key}.") for known in OPTIONS_BY_KEY):
                raise ConfigError(f"{path}: {key}", "must be a mapping of options")
            raise ConfigError(f"{path}: {key}", "unknown key")
    return flat


def load(
    flags: Mapping[str, Any],
    config_file: str | None = None,
    environ: Mapping[str, str] | None = None,
    defaults: Mapping[str, Any] | None = None,
    flags_only: frozenset[str] = frozenset(),
) -> Settings:
    """Merge the sources (defaults < file < environment < flags) and validate every value.

    ``flags`` maps option keys to the raw strings given on the command line (absent or
    ``None`` when not given); ``defaults`` lets a subcommand such as ``demo`` change them;
    keys in ``flags_only`` are read from the command line alone (the demo's database).
    """
    environ = os.environ if environ is None else environ
    from_file = read_config_file(config_file) if config_file else {}
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}  # where each given value came from, to name it in errors
    for option in OPTIONS:
        raw: Any = None
        source = ""
        from_elsewhere = option.key not in flags_only
        if from_elsewhere and option.key in from_file and from_file[option.key] is not None:
            raw, source = from_file[option.key], f"{config_file}: {option.key}"
        if from_elsewhere and option.flag and environ.get(option.env):
            raw, source = environ[option.env], option.env
        if option.flag and flags.get(option.key) is not None:
            raw, source = flags[option.key], option.flag
        if source:
            sources[option.key] = source
            try:
                values[option.attribute] = option.parse(raw)
            except ValueError as exc:
                # A structured option names the exact entry (classification.rules[2].class).
                where = f"{config_file}" if not option.flag else source
                raise ConfigError(where, str(exc)) from None
        elif defaults and option.key in defaults:
            values[option.attribute] = defaults[option.key]
        else:
            values[option.attribute] = option.default
    if from_file.get("status.users") is not None:
        values["status_users"] = _status_users(
            from_file["status.users"], f"{config_file}: status.users"
        )
    settings = Settings(**values)
    if settings.database_url:
        try:
            normalize_url(settings.database_url)
        except DatabaseURLError as exc:
            raise ConfigError(sources.get("database.url", "--database-url"), str(exc)) from None
    return settings
