"""The status pages as HTML, rendered on the server from the snapshot being served.

Plain functions over the immutable model, with the standard library's ``html.escape`` on
every value (a template library would add a dependency for a handful of fixed shapes, and
auto-escaping is only as good as the one place that forgets it; here every value goes
through ``_t`` or ``_a``). Rows are rendered one by one so the event stream can push just
the rows that changed, rendered by the very code that drew the page.
"""

from __future__ import annotations

import html
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import quote

from exporter.model import Health, IntegrationStatus, ServedState
from exporter.serve.status.records import OrgRecords, RecordRow

INACTIVE = "inactive"
# Worst first: what needs a person comes to the top.
_RANK = {"red": 0, "amber": 1, "green": 2, INACTIVE: 3}
_WORD = {"red": "Red", "amber": "Amber", "green": "Green", INACTIVE: "Inactive"}
_HEALTH = {Health.RED: "red", Health.AMBER: "amber", Health.GREEN: "green"}
WARNING = "No successful sync in the last {window}"


def _t(value: object) -> str:
    """A value as text inside an element: never markup."""
    return html.escape(str(value), quote=False)


def _a(value: object) -> str:
    """A value inside a double-quoted attribute."""
    return html.escape(str(value), quote=True)


def shown_health(status: IntegrationStatus) -> str:
    """The health a person sees: an inactive integration is never Green, nor Red."""
    return INACTIVE if not status.facts.active else _HEALTH[status.health]


def worst_first(statuses: Iterable[IntegrationStatus]) -> list[IntegrationStatus]:
    return sorted(
        statuses,
        key=lambda s: (
            _RANK[shown_health(s)],
            s.facts.org_name.casefold(),
            s.facts.org_id,
            s.facts.connector,
        ),
    )


def row_key(status: IntegrationStatus) -> str:
    # Unique because the connector is one word (a check constraint): "xledger:hlf".
    return f"{status.facts.connector}:{status.facts.org_id}"


def org_url(org_id: str) -> str:
    return "/status/org/" + quote(org_id, safe="")


def window(seconds: int) -> str:
    """The red threshold in the words of the warning: 86400 -> "24 hours"."""
    for size, unit in ((3600, "hour"), (60, "minute"), (1, "second")):
        if seconds % size == 0:
            count = seconds // size
            return f"{count} {unit}{'' if count == 1 else 's'}"
    return f"{seconds} seconds"  # pragma: no cover - seconds always divides


def ago(instant: datetime, now: datetime) -> str:
    seconds = int((now - instant).total_seconds())
    if seconds < 0:
        return "in the future"
    if seconds < 60:
        return f"{seconds} s ago"
    if seconds < 3600:
        return f"{seconds // 60} min ago"
    if seconds < 2 * 86400:
        return f"{seconds // 3600} h ago"
    return f"{seconds // 86400} days ago"


def when(instant: datetime | None, now: datetime, never: str = "never") -> str:
    """An instant as the instant and as "x ago"; the script keeps "ago" current."""
    if instant is None:
        return f'<span class="never">{_t(never)}</span>'
    instant = instant.astimezone(UTC)
    iso = instant.strftime("%Y-%m-%dT%H:%M:%SZ")
    return (
        f'<span class="when"><time datetime="{iso}">{instant.strftime("%Y-%m-%d %H:%M:%S")} UTC'
        f'</time> <span class="ago" data-since="{iso}">{ago(instant, now)}</span></span>'
    )


def badge(status: IntegrationStatus) -> str:
    health = shown_health(status)
    return f'<span class="badge {health}" title="{_a(status.reason)}">{_WORD[health]}</span>'


def overview_row(status: IntegrationStatus, now: datetime) -> str:
    facts = status.facts
    return (
        f'<tr class="row {shown_health(status)}" data-key="{_a(row_key(status))}">'
        f'<td data-label="Organization"><a href="{_a(org_url(facts.org_id))}">'
        f"{_t(facts.org_name)}</a></td>"
        f'<td data-label="Connector">{_t(facts.connector)}</td>'
        f'<td data-label="Health">{badge(status)}</td>'
        f'<td data-label="Last successful sync">{when(facts.last_success_at, now)}</td>'
        f'<td data-label="Pending" class="num">{facts.pending_records}</td>'
        f'<td data-label="Failed in last sync" class="num">{facts.last_run_records_failed}</td>'
        f'<td data-label="Rejected" class="num">{facts.rejected_records}</td>'
        "</tr>"
    )


@dataclass(frozen=True, slots=True)
class Page:
    """What every page shares: the head, the live indicator and the snapshot line."""

    title: str
    stream: str  # the event stream of this page
    event_id: str  # the snapshot the page shows, so the stream sends only what is newer
    refresh_seconds: int  # the fallback for a browser without the script
    asset_version: str


def snapshot_line(state: ServedState, now: datetime) -> str:
    read_at = (
        datetime.fromtimestamp(state.last_refresh_at, UTC)
        if state.last_refresh_at is not None
        else None
    )
    line = f"Snapshot of the sync log read {when(read_at, now, never='not yet')}."
    if not state.source_up and state.generation > 0:
        line += (
            ' <strong class="source-down">The sync log cannot be read right now: this is the'
            " last snapshot read.</strong>"
        )
    return line


def _document(page: Page, state: ServedState, now: datetime, body: str, crumbs: str) -> str:
    version = _a(page.asset_version)
    return (
        "<!doctype html>"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_t(page.title)}</title>"
        f'<link rel="stylesheet" href="/status/static/status.css?v={version}">'
        f'<noscript><meta http-equiv="refresh" content="{page.refresh_seconds}"></noscript>'
        f'<script src="/status/static/status.js?v={version}" defer></script>'
        "</head>"
        f'<body data-stream="{_a(page.stream)}" data-event-id="{_a(page.event_id)}">'
        f"<header><nav>{crumbs}</nav><h1>{_t(page.title)}</h1>"
        '<p id="live" class="live" role="status" aria-live="polite">'
        "Updates by itself when a sync finishes.</p>"
        '<p id="stale" class="stale" role="alert" hidden>Disconnected from the exporter: this page'
        " is not updating and may be out of date. Reconnecting…</p>"
        "</header>"
        f'<main id="main">'
        f'<p id="snapshot" class="snapshot">{snapshot_line(state, now)}</p>'
        f"{body}</main></body></html>"
    )


def overview(
    page: Page, state: ServedState, statuses: Sequence[IntegrationStatus], now: datetime
) -> str:
    rows = "".join(overview_row(status, now) for status in worst_first(statuses))
    empty = "" if statuses else '<p class="empty">No integrations to show.</p>'
    body = (
        '<table class="status"><thead><tr><th scope="col">Organization</th>'
        '<th scope="col">Connector</th><th scope="col">Health</th>'
        '<th scope="col">Last successful sync</th><th scope="col" class="num">Pending</th>'
        '<th scope="col" class="num">Failed in last sync</th>'
        '<th scope="col" class="num">Rejected</th></tr></thead>'
        f'<tbody id="rows">{rows}</tbody></table>{empty}'
    )
    return _document(page, state, now, body, crumbs="")


def integration(status: IntegrationStatus, now: datetime) -> str:
    facts = status.facts
    warning = ""
    if status.health is Health.RED and facts.active:
        warning = (
            '<p class="warning" role="alert">'
            f"{_t(WARNING.format(window=window(facts.stale_after_seconds)))}</p>"
        )
    run_error = ""
    if facts.last_run_status == "failed" and facts.last_run_error_message:
        code = f" ({_t(facts.last_run_error_code)})" if facts.last_run_error_code else ""
        run_error = f"<dt>Last run failed</dt><dd>{_t(facts.last_run_error_message)}{code}</dd>"
    last_run = (
        f"{_t(facts.last_run_status)}, finished {when(facts.last_run_finished_at, now)}"
        if facts.last_run_status
        else '<span class="never">none yet</span>'
    )
    return (
        f'<section class="integration {shown_health(status)}" data-key="{_a(row_key(status))}">'
        f"<h2>{_t(facts.connector)} {badge(status)}</h2>{warning}"
        f'<dl class="facts">'
        f"<dt>Last successful sync</dt><dd>{when(facts.last_success_at, now)}</dd>"
        f"<dt>Last finished run</dt><dd>{last_run}</dd>{run_error}"
        f'<dt>Records pending</dt><dd class="num">{facts.pending_records}</dd>'
        f'<dt>Failed in last sync</dt><dd class="num">{facts.last_run_records_failed}</dd>'
        f'<dt>Rejected</dt><dd class="num">{facts.rejected_records}</dd>'
        f"<dt>Why this health</dt><dd>{_t(status.reason)}</dd>"
        "</dl></section>"
    )


def integrations(statuses: Iterable[IntegrationStatus], now: datetime) -> str:
    """An organization's integration cards, worst first (the page and its stream)."""
    return "".join(integration(status, now) for status in worst_first(statuses))


def _records_table(
    title: str,
    rows: Sequence[RecordRow],
    limit: int,
    at_label: str,
    empty: str,
    table_id: str,
    now: datetime,
) -> str:
    head = f'<h2 id="{table_id}-title">{_t(title)}</h2>'
    if not rows:
        return f'{head}<p class="empty" id="{table_id}">{_t(empty)}</p>'
    note = f'<p class="note">The newest {limit} are shown.</p>' if len(rows) >= limit else ""
    body = "".join(
        "<tr>"
        f'<td data-label="Connector">{_t(row.connector)}</td>'
        f'<td data-label="Type">{_t(row.record_type)}</td>'
        f'<td data-label="Reference" class="ref">{_t(row.record_ref)}</td>'
        f'<td data-label="Error code">{_t(row.error_code or "–")}</td>'
        f'<td data-label="Class">{_t(row.error_class or "–")}</td>'
        f'<td data-label="Message" class="message">{_t(row.error_message or "–")}</td>'
        f'<td data-label="{_a(at_label)}">{when(row.at, now)}</td>'
        "</tr>"
        for row in rows
    )
    return (
        f'{head}{note}<table class="records" id="{table_id}"><thead><tr>'
        '<th scope="col">Connector</th><th scope="col">Type</th><th scope="col">Reference</th>'
        '<th scope="col">Error code</th><th scope="col">Class</th><th scope="col">Message</th>'
        f'<th scope="col">{_t(at_label)}</th></tr></thead><tbody>{body}</tbody></table>'
    )


def organization(
    page: Page,
    state: ServedState,
    statuses: Sequence[IntegrationStatus],
    records: OrgRecords,
    now: datetime,
) -> str:
    crumbs = '<a href="/status">All organizations</a>'
    sections = integrations(statuses, now)
    if records.error:
        lists = f'<p class="source-down" role="alert">{_t(records.error)}</p>'
    else:
        lists = _records_table(
            "Failed records in the last sync",
            records.failed,
            records.limit,
            "Failed at",
            "No record failed in the last finished run.",
            "failed",
            now,
        ) + _records_table(
            "Rejected records",
            records.rejected,
            records.limit,
            "Rejected at",
            "No rejected records: nothing is waiting for a person.",
            "rejected",
            now,
        )
    body = f'<div class="integrations" id="integrations">{sections}</div>{lists}'
    return _document(page, state, now, body, crumbs)


def event(name: str, event_id: str, data: object) -> bytes:
    """One Server-Sent Event; JSON has no raw newline, so ``data`` is one line."""
    payload = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    return f"event: {name}\nid: {event_id}\ndata: {payload}\n\n".encode()
