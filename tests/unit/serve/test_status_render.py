"""The status pages' HTML, from hand-built states: order, words, warning, escaping, times."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser

from exporter.model import Health, IntegrationFacts, IntegrationStatus, ServedState
from exporter.serve.status import render
from exporter.serve.status.records import OrgRecords, RecordRow

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
PAGE = render.Page("Status", "/status/events", "boot-1", 15, "v1")


def status(org: str, health: Health, *, active: bool = True, name: str | None = None,
           stale: int = 86400, **facts: object) -> IntegrationStatus:  # fmt: skip
    return IntegrationStatus(
        IntegrationFacts(
            org_id=org,
            org_name=name or f"Organization {org}",
            connector="xledger",
            active=active,
            stale_after_seconds=stale,
            created_at=NOW - timedelta(days=30),
            **facts,  # type: ignore[arg-type]
        ),
        health,
        reason="because",
    )


class Texts(HTMLParser):
    """The page as a browser would show it: text nodes, and the elements that exist."""

    def __init__(self) -> None:
        super().__init__()
        self.text: list[str] = []
        self.tags: list[str] = []

    def handle_starttag(self, tag: str, attrs: object) -> None:
        self.tags.append(tag)

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse(page: str) -> Texts:
    parser = Texts()
    parser.feed(page)
    return parser


def test_rows_are_worst_first_and_an_inactive_integration_is_never_green() -> None:
    statuses = [
        status("green", Health.GREEN),
        status("idle", Health.GREEN, active=False),
        status("amber", Health.AMBER),
        status("red", Health.RED),
        status("idle-amber", Health.AMBER, active=False),
    ]
    ordered = render.worst_first(statuses)
    assert [s.facts.org_id for s in ordered] == ["red", "amber", "green", "idle", "idle-amber"]
    assert [render.shown_health(s) for s in ordered][-2:] == ["inactive", "inactive"]
    page = render.overview(PAGE, ServedState(statuses=tuple(statuses)), statuses, NOW)
    words = [t for t in parse(page).text if t in ("Red", "Amber", "Green", "Inactive")]
    assert words == ["Red", "Amber", "Green", "Inactive", "Inactive"]


def test_every_row_links_to_its_organization_page_with_the_slug_quoted() -> None:
    row = render.overview_row(status("a/b c", Health.GREEN), NOW)
    assert 'href="/status/org/a%2Fb%20c"' in row


def test_values_from_the_sync_log_are_text_never_markup() -> None:
    evil = '<script>alert(1)</script>"><img src=x onerror=alert(2)>'
    statuses = [status("evil", Health.RED, name=evil)]
    state = ServedState(statuses=tuple(statuses))
    records = OrgRecords(
        failed=(RecordRow("xledger", "<b>t</b>", "<i>r</i>", NOW, '"><svg>', evil, "unknown"),)
    )
    for page in (
        render.overview(PAGE, state, statuses, NOW),
        render.organization(PAGE, state, statuses, records, NOW),
    ):
        parsed = parse(page)
        assert evil in "".join(parsed.text)
        assert not {"img", "svg", "b", "i"} & set(parsed.tags)
        assert parsed.tags.count("script") == 1  # the page's own, from /status/static


def test_the_red_warning_names_the_real_window() -> None:
    for seconds, words in ((86400, "24 hours"), (3600, "1 hour"), (5400, "90 minutes")):
        statuses = [status("late", Health.RED, stale=seconds)]
        page = render.organization(
            PAGE, ServedState(statuses=tuple(statuses)), statuses, OrgRecords(), NOW
        )
        assert f"No successful sync in the last {words}" in page
    amber = [status("amber", Health.AMBER)]
    page = render.organization(PAGE, ServedState(statuses=tuple(amber)), amber, OrgRecords(), NOW)
    assert "No successful sync" not in page


def test_times_show_the_instant_and_how_long_ago() -> None:
    shown = render.when(NOW - timedelta(minutes=5, seconds=3), NOW)
    assert "2026-12-01 11:54:57 UTC" in shown and "5 min ago" in shown
    assert 'datetime="2026-12-01T11:54:57Z"' in shown
    assert render.ago(NOW - timedelta(hours=30), NOW) == "30 h ago"
    assert render.ago(NOW - timedelta(days=3), NOW) == "3 days ago"
    assert "never" in render.when(None, NOW)


def test_a_full_list_says_that_only_the_newest_are_shown() -> None:
    rows = tuple(RecordRow("xledger", "expense", f"R{i}", NOW, None, "m", "unknown")
                 for i in range(3))  # fmt: skip
    statuses = [status("busy", Health.AMBER)]
    state = ServedState(statuses=tuple(statuses))
    full = render.organization(PAGE, state, statuses, OrgRecords(rejected=rows, limit=3), NOW)
    assert "The newest 3 are shown." in full
    partial = render.organization(PAGE, state, statuses, OrgRecords(rejected=rows, limit=4), NOW)
    assert "The newest" not in partial


def test_an_event_is_one_data_line_whatever_the_values() -> None:
    payload = render.event("overview", "b-2", {"rows": {"k": "line one\nline two"}}).decode()
    lines = payload.split("\n")
    assert lines[:2] == ["event: overview", "id: b-2"]
    assert lines[2].startswith("data: ") and lines[3:] == ["", ""]
