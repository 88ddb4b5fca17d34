"""docs/pipeline.md's SQL, run as written on PostgreSQL and SQLite, gives the documented state.

A pipeline in another language copies these statements; an example that stopped working on
one back end, or wrote a state the exporter reads differently from what the page says, would
mislead every such pipeline. The blocks are taken from the page itself (```sql name=...), so
page and test cannot drift: a block this test does not run fails the test.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, text

from exporter.health import evaluate
from exporter.model import Health, IntegrationFacts
from exporter.source.reader import last_run_errors, read_snapshot

PAGE = Path(__file__).resolve().parents[3] / "docs" / "pipeline.md"
BLOCK = re.compile(r"^```sql name=(\w+)\n(.*?)^```$", re.MULTILINE | re.DOTALL)
ORG = {"org": "hlf", "connector": "xledger"}


def blocks() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for name, body in BLOCK.findall(PAGE.read_text()):
        assert name not in found, f"two blocks named {name}"
        found[name] = [s.strip() for s in body.split(";") if s.strip()]
    return found


class Page:
    """Runs the page's blocks by name, each in one transaction, as the page prescribes."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.blocks = blocks()
        self.ran: set[str] = set()

    def run(self, name: str, **params: Any) -> Any:
        returned = None
        with self.engine.begin() as connection:
            for statement in self.blocks[name]:
                result = connection.execute(text(statement), {**ORG, **params})
                if result.returns_rows:
                    returned = result.scalar_one()
        self.ran.add(name)
        return returned


def facts(engine: Engine) -> IntegrationFacts:
    (only,) = read_snapshot(engine).integrations
    return only


def health(engine: Engine) -> Health:
    return evaluate(facts(engine), datetime.now(UTC)).health


def test_the_page_has_sql_blocks_to_check():
    assert len(blocks()) >= 5 and all(blocks().values())


def test_a_pipeline_writing_the_documented_sql_produces_the_documented_snapshot(engine: Engine):
    page = Page(engine)
    before = datetime.now(UTC) - timedelta(seconds=2)  # SQLite's CURRENT_TIMESTAMP: seconds

    page.run("register", org_name="HLF")
    page.run("register", org_name="Hørselshemmedes Landsforbund")  # again: updates in place
    registered = facts(engine)
    assert (registered.org_name, registered.active) == ("Hørselshemmedes Landsforbund", True)
    assert registered.stale_after_seconds == 86400 and registered.created_at >= before
    assert registered.last_run_status is None and health(engine) is Health.GREEN

    synced, retried, given_up = (
        page.run("enqueue", record_type="expense", record_ref=ref) for ref in ("E-1", "E-2", "E-3")
    )
    assert facts(engine).pending_records == 3
    assert facts(engine).oldest_pending_at is not None

    run = page.run("start_run")
    assert facts(engine).running_since is not None
    assert facts(engine).last_run_status is None, "a running run is not the last finished run"

    page.run("record_synced", record_id=synced)
    page.run(
        "record_failed",
        run_id=run,
        record_id=retried,
        error_code="Application_FieldValidationException",
        error_message="Account 4010 is blocked",
    )
    page.run(
        "record_rejected",
        run_id=run,
        record_id=given_up,
        error_code="Internal_EntityWithSameKeyExists",
        error_message="Voucher E-3 already exists",
    )
    page.run("finish_run", run_id=run, status="partial", records_total=3, records_failed=2)

    finished = facts(engine)
    assert finished.pending_records == 1, "the retried record is pending, the others are not"
    assert (finished.last_run_status, finished.last_run_records_total) == ("partial", 3)
    assert finished.last_run_records_failed == 2
    assert finished.last_success_at is not None and finished.running_since is None
    assert health(engine) is Health.AMBER
    assert sorted((e.record_ref, e.error_code) for e in last_run_errors(engine, "hlf")) == [
        ("E-2", "Application_FieldValidationException"),
        ("E-3", "Internal_EntityWithSameKeyExists"),
    ]
    with engine.connect() as connection:
        states = {
            ref: state
            for ref, state in connection.execute(text("SELECT record_ref, state FROM sync_record"))
        }
    assert states == {"E-1": "synced", "E-2": "pending", "E-3": "rejected"}

    aborted = page.run("start_run")
    page.run(
        "fail_run",
        run_id=aborted,
        records_total=0,
        records_failed=0,
        error_message="AADSTS7000222: the client secret has expired",
    )
    failed = facts(engine)
    assert failed.last_run_status == "failed" and failed.last_run_records_failed == 0
    assert failed.last_success_at == finished.last_success_at, "a failed run is no success"
    assert health(engine) is Health.AMBER
    assert last_run_errors(engine, "hlf") == [], "the failed run's own records are none"

    assert page.ran == set(page.blocks), "every block of the page is checked"
