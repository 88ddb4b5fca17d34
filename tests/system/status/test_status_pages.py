"""The status screen in a real Chromium, against a real exporter on a real PostgreSQL.

The refresh interval is 60 s in every test, so a page that changes within the test's
deadline can only have been told by the change notification and the event stream; the
commit-to-pixels figure printed here is measured from the commit (bench/status.py has the
percentiles).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import bcrypt
import pytest
import yaml

from exporter.source.pipeline import Pipeline
from tests.support import http_get, wait_until
from tests.system.status.conftest import DESKTOP, basic, screenshot

pytestmark = pytest.mark.postgres

POLL_60S = ["--refresh-interval", "60s"]
NAMES = {
    "kirkens-bymisjon": "Kirkens Bymisjon",
    "hlf": "Hørselshemmedes Landsforbund",
    "blindeforbundet": "Norges Blindeforbund",
    "naturvernforbundet": "Naturvernforbundet",
}
MARKUP_NAME = '<img src=x onerror="window.__ran=1">Evil & Co'
MARKUP_ERROR = "<script>window.__ran=2</script><b>bold</b>"


def seed(pipeline: Pipeline) -> datetime:
    """Red (never synced in 2 days), amber (2 failed records, 1 rejected), green, inactive."""
    now = datetime.now(UTC)
    month = now - timedelta(days=30)
    pipeline.register("kirkens-bymisjon", NAMES["kirkens-bymisjon"], "xledger",
                      created_at=now - timedelta(days=2))  # fmt: skip
    pipeline.register("hlf", NAMES["hlf"], "dynamics", created_at=month)
    pipeline.register("blindeforbundet", NAMES["blindeforbundet"], "xledger", created_at=month)
    pipeline.register("naturvernforbundet", NAMES["naturvernforbundet"], "xledger",
                      active=False, created_at=month)  # fmt: skip
    pipeline.add_finished_run("blindeforbundet", "xledger", "succeeded",
                              started_at=now - timedelta(minutes=6),
                              finished_at=now - timedelta(minutes=5), records_total=4)  # fmt: skip
    ids = pipeline.enqueue("hlf", "dynamics",
                           [("expense", "HLF-1001"), ("travel", "HLF-1002"), ("invoice", "HLF-7")],
                           at=now - timedelta(hours=1))  # fmt: skip
    old = pipeline.start_run("hlf", "dynamics", at=now - timedelta(hours=3))
    pipeline.record_failure(old, ids[2], "Internal_EntityWithSameKeyExists: invoice exists",
                            error_code="Internal_EntityWithSameKeyExists", give_up=True,
                            at=now - timedelta(hours=3))  # fmt: skip
    pipeline.finish_run(old, "partial", records_total=1, records_failed=1,
                        at=now - timedelta(hours=3))  # fmt: skip
    run = pipeline.start_run("hlf", "dynamics", at=now - timedelta(minutes=3))
    pipeline.record_failure(run, ids[0], "The field Amount must be positive",
                            error_code="Application_FieldValidationException")  # fmt: skip
    pipeline.record_failure(run, ids[1], "Rate limit", error_code="429")
    pipeline.finish_run(run, "partial", records_total=5, records_failed=2,
                        at=now - timedelta(minutes=2))  # fmt: skip
    return now


def healths(page: Any) -> list[tuple[str, str]]:
    rows = page.locator("#rows tr")
    return [
        (rows.nth(i).locator("td").nth(0).inner_text(), rows.nth(i).locator(".badge").inner_text())
        for i in range(rows.count())
    ]


def connected(page: Any) -> bool:
    """The script marks the page once its event stream is open (EventSource onopen)."""
    return bool(page.evaluate("document.body.dataset.connected === 'true'"))


def test_overview_is_worst_first_and_drills_down_to_the_red_warning(
    browser, pipeline, pg_url, start_exporter
):  # type: ignore[no-untyped-def]
    seed(pipeline)
    exporter = start_exporter(["--database-url", pg_url, *POLL_60S])
    page = browser.new_page(viewport=DESKTOP)
    page.goto(exporter.url + "/status")
    assert healths(page) == [
        (NAMES["kirkens-bymisjon"], "Red"),
        (NAMES["hlf"], "Amber"),
        (NAMES["blindeforbundet"], "Green"),
        (NAMES["naturvernforbundet"], "Inactive"),
    ]
    # Health is a colour as well as a word; an inactive integration is grey.
    red = page.locator("#rows tr").nth(0).locator(".badge")
    assert red.evaluate("e => getComputedStyle(e).backgroundColor") == "rgb(180, 35, 24)"
    grey = page.locator("#rows tr").nth(3).locator(".badge")
    assert grey.evaluate("e => getComputedStyle(e).backgroundColor") == "rgb(95, 102, 115)"
    # Times are shown as the instant and as "x ago".
    last = page.locator("#rows tr").nth(2).locator("td").nth(3).inner_text()
    assert "UTC" in last and "5 min ago" in last, last
    screenshot(page, "overview")
    page.get_by_role("link", name=NAMES["kirkens-bymisjon"]).click()
    page.wait_for_url(exporter.url + "/status/org/kirkens-bymisjon")
    assert page.locator(".warning").inner_text() == "No successful sync in the last 24 hours"
    screenshot(page, "organization-red")
    page.go_back()
    page.get_by_role("link", name=NAMES["hlf"]).click()
    page.wait_for_url(exporter.url + "/status/org/hlf")
    assert page.locator(".warning").count() == 0


def test_the_organization_page_lists_failed_and_rejected_records_with_their_errors(
    browser, pipeline, pg_url, start_exporter
):  # type: ignore[no-untyped-def]
    seed(pipeline)
    exporter = start_exporter(["--database-url", pg_url, *POLL_60S])
    page = browser.new_page(viewport=DESKTOP)
    page.goto(exporter.url + "/status/org/hlf")
    failed = page.locator("#failed tbody tr")
    rows = sorted(
        tuple(failed.nth(i).locator("td").nth(c).inner_text() for c in range(6))
        for i in range(failed.count())
    )
    assert rows == [
        ("dynamics", "expense", "HLF-1001", "Application_FieldValidationException", "validation",
         "The field Amount must be positive"),
        ("dynamics", "travel", "HLF-1002", "429", "throttled", "Rate limit"),
    ]  # fmt: skip
    rejected = page.locator("#rejected tbody tr")
    assert rejected.count() == 1
    cells = [rejected.nth(0).locator("td").nth(c).inner_text() for c in range(6)]
    assert cells == ["dynamics", "invoice", "HLF-7", "Internal_EntityWithSameKeyExists",
                     "duplicate", "Internal_EntityWithSameKeyExists: invoice exists"]  # fmt: skip
    screenshot(page, "organization-amber")


def test_the_page_turns_green_by_itself_after_a_commit_without_a_reload(
    browser, pipeline, pg_url, start_exporter
):  # type: ignore[no-untyped-def]
    seed(pipeline)
    exporter = start_exporter(["--database-url", pg_url, *POLL_60S])
    overview = browser.new_page(viewport=DESKTOP)
    overview.goto(exporter.url + "/status")
    drill = browser.new_page(viewport=DESKTOP)
    drill.goto(exporter.url + "/status/org/hlf")
    for page in (overview, drill):
        page.evaluate("window.__sameDocument = true")
        wait_until(lambda p=page: connected(p), what="the page's event stream to open")
    hlf = overview.locator("#rows tr", has_text=NAMES["hlf"])
    assert hlf.locator(".badge").inner_text() == "Amber"
    committed = time.monotonic()
    now = datetime.now(UTC)
    pipeline.add_finished_run("hlf", "dynamics", "succeeded", started_at=now - timedelta(seconds=5),
                              finished_at=now, records_total=3)  # fmt: skip
    wait_until(lambda: hlf.locator(".badge").inner_text() == "Green", timeout=20, interval=0.02,
               what="the overview row to turn green")  # fmt: skip
    overview_latency = time.monotonic() - committed
    # Green moved the row below the other active integrations: the order is worst first.
    assert [h for _, h in healths(overview)] == ["Red", "Green", "Green", "Inactive"]
    wait_until(lambda: drill.locator(".badge").first.inner_text() == "Green", timeout=20,
               interval=0.02, what="the organization page to turn green")  # fmt: skip
    drill_latency = time.monotonic() - committed
    # The record lists follow with the page's own read of the sync log.
    wait_until(lambda: drill.locator("#failed").inner_text().startswith("No record failed"),
               timeout=20, what="the failed records list to empty")  # fmt: skip
    for page in (overview, drill):
        assert page.evaluate("window.__sameDocument") is True  # changed in place, not reloaded
    print(f"\ncommit to green: overview {overview_latency * 1000:.0f} ms, "
          f"organization page {drill_latency * 1000:.0f} ms (refresh interval 60 s)")  # fmt: skip


def test_markup_in_names_and_errors_is_shown_as_text_and_never_run(
    browser, pipeline, pg_url, start_exporter
):  # type: ignore[no-untyped-def]
    now = datetime.now(UTC)
    pipeline.register("evil", MARKUP_NAME, "xledger", created_at=now - timedelta(days=1))
    [record] = pipeline.enqueue("evil", "xledger", [("expense", "<i>REF</i>")])
    run = pipeline.start_run("evil", "xledger")
    pipeline.record_failure(run, record, MARKUP_ERROR, error_code='"><svg onload=1>')
    pipeline.finish_run(run, "partial", records_total=1, records_failed=1)
    exporter = start_exporter(["--database-url", pg_url, *POLL_60S])
    page = browser.new_page(viewport=DESKTOP)
    page.goto(exporter.url + "/status")
    assert page.locator("#rows tr td").first.inner_text() == MARKUP_NAME
    page.goto(exporter.url + "/status/org/evil")
    assert page.locator("h1").inner_text() == MARKUP_NAME
    cells = page.locator("#failed tbody td")
    assert cells.nth(2).inner_text() == "<i>REF</i>"
    assert cells.nth(3).inner_text() == '"><svg onload=1>'
    assert cells.nth(5).inner_text() == MARKUP_ERROR
    # A change pushed by the stream is text too.
    [second] = pipeline.enqueue("evil", "xledger", [("travel", "R2")])
    run = pipeline.start_run("evil", "xledger")
    pipeline.record_failure(run, second, MARKUP_ERROR + "again")
    pipeline.finish_run(run, "partial", records_total=1, records_failed=1)
    wait_until(lambda: "again" in page.locator("#failed").inner_text(), timeout=20,
               what="the pushed error")  # fmt: skip
    assert page.locator("main img, main script, main svg, main b").count() == 0
    assert page.evaluate("window.__ran") is None
    screenshot(page, "organization-markup")


def test_the_stale_notice_appears_when_the_exporter_stops_and_clears_when_it_returns(
    browser, pipeline, pg_url, start_exporter
):  # type: ignore[no-untyped-def]
    seed(pipeline)
    exporter = start_exporter(["--database-url", pg_url, *POLL_60S])
    page = browser.new_page(viewport=DESKTOP)
    page.goto(exporter.url + "/status")
    stale = page.locator("#stale")
    wait_until(lambda: connected(page), what="the page's event stream to open")
    assert not stale.is_visible()
    exporter.stop()
    wait_until(stale.is_visible, timeout=20, what="the stale notice")
    assert "not updating" in stale.inner_text()
    screenshot(page, "overview-stale")
    # Meanwhile the pipeline goes on; the page catches up once it reconnects by itself.
    now = datetime.now(UTC)
    pipeline.add_finished_run("hlf", "dynamics", "succeeded", started_at=now, finished_at=now)
    exporter.start()
    wait_until(lambda: connected(page) and not stale.is_visible(), timeout=20,
               what="the notice to clear")  # fmt: skip
    hlf = page.locator("#rows tr", has_text=NAMES["hlf"])
    wait_until(lambda: hlf.locator(".badge").inner_text() == "Green", timeout=20,
               what="the missed change after reconnecting")  # fmt: skip


def _web_config(tmp_path: Path, users: dict[str, str]) -> Path:
    hashes = {u: bcrypt.hashpw(p.encode(), bcrypt.gensalt(4)).decode() for u, p in users.items()}
    path = tmp_path / "web.yml"
    path.write_text(yaml.safe_dump({"basic_auth_users": hashes}))
    return path


def test_an_organization_user_sees_only_their_organization_in_pages_and_stream(
    browser, pipeline, pg_url, start_exporter, tmp_path
):  # type: ignore[no-untyped-def]
    seed(pipeline)
    users = {"admin": "admin-pw", "hlf": "hlf-pw", "prometheus": "scrape-pw", "nobody": "x-pw"}
    web = _web_config(tmp_path, users)
    config = tmp_path / "config.yml"
    config.write_text(
        yaml.safe_dump({"status": {"users": {"admin": ["*"], "hlf": ["hlf"], "nobody": []}}})
    )
    exporter = start_exporter(
        ["--database-url", pg_url, *POLL_60S, "--web.config.file", str(web), "--config",
         str(config)],
        probe_headers=basic("admin", "admin-pw"),
    )  # fmt: skip
    context = browser.new_context(
        viewport=DESKTOP, http_credentials={"username": "hlf", "password": "hlf-pw"}
    )
    page = context.new_page()
    page.goto(exporter.url + "/status")
    assert healths(page) == [(NAMES["hlf"], "Amber")]
    screenshot(page, "overview-organization-user")
    for org in ("kirkens-bymisjon", "blindeforbundet", "no-such-org"):
        assert page.goto(f"{exporter.url}/status/org/{org}").status == 404
        assert page.goto(f"{exporter.url}/status/org/{org}/events").status == 404
    assert page.goto(exporter.url + "/metrics").status == 403
    page.goto(exporter.url + "/status")
    # What the stream carries after another organization changes: nothing of theirs.
    now = datetime.now(UTC)
    pipeline.add_finished_run("kirkens-bymisjon", "xledger", "succeeded", started_at=now,
                              finished_at=now)  # fmt: skip
    pipeline.add_finished_run("hlf", "dynamics", "succeeded", started_at=now, finished_at=now)
    received = page.evaluate(
        """() => new Promise((resolve) => {
            const seen = [];
            const source = new EventSource("/status/events");
            source.addEventListener("overview", (m) => {
                seen.push(m.data);
                if (m.data.includes("Green")) { source.close(); resolve(seen); }
            });
            setTimeout(() => { source.close(); resolve(seen); }, 15000);
        })"""
    )
    assert any("Green" in data for data in received), received
    for data in received:
        for org in ("kirkens-bymisjon", "blindeforbundet", "naturvernforbundet"):
            assert org not in data and NAMES[org] not in data
    # The other users, over plain HTTP.
    status, _, _ = http_get(exporter.url + "/metrics", basic("admin", "admin-pw"))
    assert status == 200
    assert http_get(exporter.url + "/metrics", basic("prometheus", "scrape-pw"))[0] == 200
    assert http_get(exporter.url + "/status", basic("prometheus", "scrape-pw"))[0] == 403
    for path in ("/status", "/metrics", "/status/org/hlf"):
        assert http_get(exporter.url + path, basic("nobody", "x-pw"))[0] == 403
    assert http_get(exporter.url + "/status")[0] == 401
    admin = browser.new_context(
        viewport=DESKTOP, http_credentials={"username": "admin", "password": "admin-pw"}
    ).new_page()
    admin.goto(exporter.url + "/status")
    assert len(healths(admin)) == 4
