"""``alertmanager-config``: one Alertmanager route and receiver per organization of the sync log.

Why a command: organizations are added to the sync log by the pipeline, and an organization
whose alerts reach nobody of its own is easy to miss by hand. This reads the organizations,
takes the project's Alertmanager configuration as the base (global settings, templates, grouping,
inhibition, the administrators' catch-all route) and writes it back with the per-organization
routes and receivers regenerated from a small contacts file::

    # contacts.yml: organization slug -> where its people hear about it
    blindeforbundet:
      email: [finance@blindeforbundet.example.com]
      chat: [https://chat.example.com/hooks/blindeforbundet]    # Slack-compatible webhooks
      webhook: [https://bridge.example.com/blindeforbundet]     # Alertmanager JSON

An organization without contacts keeps reaching the global administrators only, and is named in
a warning; so is a contact for an organization the sync log does not have.

``AccountingSyncActionRequired`` (a failed run that no retry gets past) must reach people at
once and silence the same integration's amber and late warnings, whatever base it starts from:
every generated organization route, and the base's catch-all route, gets the child route that
sends it without group wait, and the inhibition is added when the base has none for it (with a
warning, since the base is then older than the rules).
"""

from __future__ import annotations

import argparse
import copy
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from exporter.config import Settings
from exporter.errors import UsageError
from exporter.source import reader as repository
from exporter.source.engine import engine_for, require_existing_sqlite

RECEIVER_PREFIX = "org-"
CONTACT_KINDS = ("email", "chat", "webhook")
_ORG_MATCHER = re.compile(r'^\s*org\s*=\s*"?([^"]*)"?\s*$')

TITLE = '{{ template "accounting_sync.title" . }}'
EMAIL = {
    "send_resolved": True,
    "headers": {"Subject": TITLE},
    "html": '{{ template "accounting_sync.email.html" . }}',
    "text": '{{ template "accounting_sync.text" . }}',
}
ACTION_REQUIRED = "AccountingSyncActionRequired"
_ACTION_REQUIRED_MATCHER = f'alertname="{ACTION_REQUIRED}"'
# A child route inherits receiver and grouping; only the wait differs. Alertmanager keeps an
# explicit 0s (it does not fall back to the parent's group_wait).
AT_ONCE_ROUTE: dict[str, Any] = {"matchers": [_ACTION_REQUIRED_MATCHER], "group_wait": "0s"}
ACTION_REQUIRED_INHIBITION: dict[str, Any] = {
    "source_matchers": [_ACTION_REQUIRED_MATCHER],
    "target_matchers": ['alertname=~"AccountingSyncRecordsFailed|AccountingSyncLate"'],
    "equal": ["org", "connector"],
}

CHAT = {
    "send_resolved": True,
    "title": TITLE,
    "title_link": '{{ template "accounting_sync.link" . }}',
    "text": '{{ template "accounting_sync.text" . }}',
}


class ContactsError(UsageError):
    """A bad contacts file or base configuration: one line naming the key."""


@dataclass(frozen=True)
class Generated:
    config: dict[str, Any]
    warnings: list[str] = field(default_factory=list)


def parse_contacts(data: Any) -> dict[str, dict[str, list[str]]]:
    """Validate the contacts mapping; every value is a list of strings."""
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise ContactsError("contacts: expected a mapping of organization slug to contacts")
    contacts: dict[str, dict[str, list[str]]] = {}
    for org, entry in data.items():
        if not isinstance(entry, Mapping):
            raise ContactsError(
                f"contacts.{org}: expected a mapping with {', '.join(CONTACT_KINDS)}"
            )
        unknown = sorted(set(entry) - set(CONTACT_KINDS))
        if unknown:
            raise ContactsError(f"contacts.{org}.{unknown[0]}: unknown key")
        kinds: dict[str, list[str]] = {}
        for kind in CONTACT_KINDS:
            value = entry.get(kind, [])
            if isinstance(value, str):
                value = [value]
            if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
                raise ContactsError(f"contacts.{org}.{kind}: expected a list of non-empty strings")
            for item in value:
                if kind != "email" and not item.startswith(("http://", "https://")):
                    raise ContactsError(f"contacts.{org}.{kind}: not an http(s) URL: {item!r}")
                if kind == "email" and "@" not in item:
                    raise ContactsError(f"contacts.{org}.{kind}: not an address: {item!r}")
            kinds[kind] = value
        contacts[str(org)] = kinds
    return contacts


def _org_of(route: Mapping[str, Any]) -> str | None:
    """The organization a route is for, when it matches on org alone."""
    matchers = route.get("matchers") or []
    if len(matchers) == 1 and isinstance(matchers[0], str):
        match = _ORG_MATCHER.match(matchers[0])
        if match:
            return match.group(1)
    return None


def _is_catch_all(route: Mapping[str, Any]) -> bool:
    return not any(route.get(key) for key in ("matchers", "match", "match_re"))


def _with_at_once_route(route: dict[str, Any]) -> dict[str, Any]:
    """The route, with the child that sends ActionRequired at once first among its children."""
    children = list(route.get("routes") or [])
    if AT_ONCE_ROUTE not in children:
        children.insert(0, copy.deepcopy(AT_ONCE_ROUTE))
    return {**route, "routes": children}


def _inhibitions(config: Mapping[str, Any], warnings: list[str]) -> list[Any]:
    """The base's inhibit rules, plus the ActionRequired one when the base has none for it."""
    rules = list(config.get("inhibit_rules") or [])
    if not any(
        isinstance(rule, Mapping)
        and rule.get("source_matchers") == ACTION_REQUIRED_INHIBITION["source_matchers"]
        for rule in rules
    ):
        rules.append(copy.deepcopy(ACTION_REQUIRED_INHIBITION))
        warnings.append(
            f"base: no inhibit rule with {ACTION_REQUIRED} as its source; added the project's"
        )
    return rules


def receiver(org: str, contacts: Mapping[str, list[str]]) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": f"{RECEIVER_PREFIX}{org}"}
    if contacts["email"]:
        entry["email_configs"] = [{"to": to, **copy.deepcopy(EMAIL)} for to in contacts["email"]]
    if contacts["chat"]:
        entry["slack_configs"] = [{"api_url": u, **copy.deepcopy(CHAT)} for u in contacts["chat"]]
    if contacts["webhook"]:
        entry["webhook_configs"] = [{"url": u, "send_resolved": True} for u in contacts["webhook"]]
    return entry


def generate(
    base: Mapping[str, Any],
    organizations: Sequence[tuple[str, str]],
    contacts: Mapping[str, Mapping[str, list[str]]],
) -> Generated:
    """The base configuration with one route and receiver per organization that has contacts.

    Routes that match on ``org`` alone (and their ``org-`` receivers) are replaced; every other
    route and receiver of the base is kept as it is, except that a catch-all route (the
    administrators') gains the child that sends ActionRequired at once if it lacks it.
    """
    config = copy.deepcopy(dict(base))
    route = config.get("route")
    if not isinstance(route, dict):
        raise ContactsError("base: the Alertmanager configuration has no route")
    kept_routes = [
        _with_at_once_route(r) if _is_catch_all(r) else r
        for r in route.get("routes") or []
        if _org_of(r) is None
    ]
    generated_names = {r["receiver"] for r in route.get("routes") or [] if _org_of(r) is not None}
    receivers = [r for r in config.get("receivers") or [] if r.get("name") not in generated_names]
    warnings: list[str] = []
    config["inhibit_rules"] = _inhibitions(config, warnings)
    org_routes = []
    known = {org for org, _ in organizations}
    for org, name in sorted(organizations):
        entry = contacts.get(org)
        if not entry or not any(entry.values()):
            warnings.append(
                f"organization {org} ({name}) has no contacts; "
                "its alerts reach the global administrators only"
            )
            continue
        org_routes.append(
            _with_at_once_route(
                {"receiver": f"{RECEIVER_PREFIX}{org}", "matchers": [f'org="{org}"']}
            )
        )
        receivers.append(receiver(org, entry))
    for org in sorted(set(contacts) - known):
        warnings.append(f"contacts.{org}: no such organization in the sync log; left out")
    route["routes"] = kept_routes + org_routes
    config["receivers"] = receivers
    return Generated(config, warnings)


def _load_yaml(flag: str, path: str) -> Any:
    try:
        return yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ContactsError(f"{flag}: cannot read {path!r}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise ContactsError(f"{flag}: {path!r} is not YAML: {str(exc).splitlines()[0]}") from exc


def generated_header(base: str) -> str:
    """Said at the top of the output, since YAML round-tripping loses the base's comments.

    Keeping them would need a comment-preserving YAML library for one command; the
    comments stay where the administrator wrote them, in the base file, and this says so.
    """
    return (
        "# GENERATED by `accounting-sync-exporter alertmanager-config`: do not edit.\n"
        f"# Edit the base ({Path(base).name}) or the contacts file and run it again;\n"
        "# the base file's comments are not copied here (read them there).\n"
    )


def arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--base",
        required=True,
        metavar="FILE",
        help="the Alertmanager configuration to start from (the project's alertmanager.yml)",
    )
    parser.add_argument(
        "--contacts",
        required=True,
        metavar="FILE",
        help="YAML: organization slug -> email, chat and webhook lists",
    )
    parser.add_argument("--output", metavar="FILE", help="where to write (default: stdout)")


def run(args: argparse.Namespace, settings: Settings) -> int:
    contacts = parse_contacts(_load_yaml("--contacts", args.contacts))
    base = _load_yaml("--base", args.base)
    if not isinstance(base, Mapping):
        raise ContactsError(f"--base: {args.base!r} is not an Alertmanager configuration")
    url = settings.require_database_url()
    require_existing_sqlite(url)
    engine = engine_for(url, settings.database_password_file, existing_only=True)
    try:
        found = repository.organizations(engine)
    finally:
        engine.dispose()
    outcome = generate(base, found, contacts)
    for warning in outcome.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    text = generated_header(args.base) + yaml.safe_dump(
        outcome.config, sort_keys=False, allow_unicode=True
    )
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0
