"""Rows a sloppy writer can produce never crash the exporter nor spoil other organizations.

The tables are created here WITHOUT the migrations' constraints (no checks, no foreign or
primary keys, nullable columns), as a pipeline that made its own schema on SQLite would, and
on PostgreSQL the same, as if someone had dropped the constraints. The exporter then reads
them for several refreshes; a well-behaved organization beside them must come out exact.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, insert, text

from exporter.classification import ERROR_CLASSES
from exporter.source.engine import create_sync_log_engine, normalize_url
from exporter.source.schema import Integration, Organization, Record, RecordError, Run
from tests.support import exporter_process, series, value, wait_until

NOW = datetime.now(UTC).replace(microsecond=0)
HOUR = timedelta(hours=1)


def _sloppy_schema(engine: Engine) -> None:
    serial = "integer primary key" if engine.dialect.name == "sqlite" else "bigserial primary key"
    statements = [
        "create table sync_organization (id text, name text)",
        "create table sync_integration (org_id text, connector text, active boolean,"
        " stale_after_seconds integer, created_at timestamp with time zone,"
        " expected_interval_seconds integer)",
        f"create table sync_run (id {serial}, org_id text, connector text,"
        " started_at timestamp with time zone, finished_at timestamp with time zone,"
        " status text, records_total integer, records_failed integer, error_message text,"
        " error_code text)",
        f"create table sync_record (id {serial}, org_id text, connector text, record_type text,"
        " record_ref text, state text, enqueued_at timestamp with time zone,"
        " updated_at timestamp with time zone)",
        f"create table sync_record_error (id {serial}, run_id bigint, org_id text,"
        " connector text, record_type text, record_ref text, error_code text,"
        " error_message text, occurred_at timestamp with time zone)",
    ]
    with engine.begin() as connection:
        for statement in statements:
            connection.execute(text(statement))


def _org(
    connection, org: str | None, name: str | None, connector: str | None = "xledger", **integration
) -> None:  # type: ignore[no-untyped-def]
    if name is not None or org == "noname":
        connection.execute(insert(Organization).values(id=org, name=name))
    values = {"active": True, "stale_after_seconds": 86400, "created_at": NOW - 2 * HOUR}
    connection.execute(
        insert(Integration).values(org_id=org, connector=connector, **{**values, **integration})
    )


def _run(
    connection,
    org: str,
    status: str,
    started: datetime,
    finished: datetime | None,
    total: int = 10,
    failed: int = 0,
    **answer: str,
) -> int:  # type: ignore[no-untyped-def]
    return int(
        connection.execute(
            insert(Run)
            .values(
                org_id=org,
                connector="xledger",
                status=status,
                started_at=started,
                finished_at=finished,
                records_total=total,
                records_failed=failed,
                **answer,
            )
            .returning(Run.id)
        ).scalar_one()
    )


def _pending(connection, org: str, state: str, count: int) -> None:  # type: ignore[no-untyped-def]
    for index in range(count):
        connection.execute(
            insert(Record).values(
                org_id=org,
                connector="xledger",
                record_type="expense",
                record_ref=f"{org}-{index}",
                state=state,
                enqueued_at=NOW - HOUR,
                updated_at=NOW - HOUR,
            )
        )


# An accounting system's answer at its worst: control characters, escape sequences, any
# script, and far too long. It must classify into the vocabulary and never become a label.
NASTY_CODE = "\x1b[31m\x07\u202e" + "Ω" * 5000
NASTY_MESSAGE = "\r\n\t<script>alert(1)</script> 北京 " * 40_000


def _write_bad_log(engine: Engine) -> None:
    with engine.begin() as c:
        _org(c, "good", "Good Org", expected_interval_seconds=900)
        _run(c, "good", "succeeded", NOW - 2 * HOUR, NOW - HOUR, total=7)
        _pending(c, "good", "pending", 2)
        _org(c, "sap", "Unknown Connector Org", connector="sap")
        _org(c, "badstatus", "Bad Status Org")
        _run(c, "badstatus", "done", NOW - 2 * HOUR, NOW - HOUR)
        _org(c, "negative", "Negative Counts Org")
        _run(c, "negative", "partial", NOW - 2 * HOUR, NOW - HOUR, total=-10, failed=-3)
        _org(c, "noname", None)
        _org(c, "orphan", None)  # an integration without an organization row
        _org(c, "backwards", "Backwards Org")
        _run(c, "backwards", "succeeded", NOW - HOUR, NOW - 2 * HOUR)
        _org(c, "future", "Future Org", created_at=NOW - 72 * HOUR)
        _run(c, "future", "succeeded", NOW + 999 * 24 * HOUR, NOW + 1000 * 24 * HOUR)
        _org(c, "lostrecords", "Unknown Record State Org")
        _pending(c, "lostrecords", "lost", 3)
        _pending(c, "lostrecords", "pending", 1)
        _org(c, None, None)  # no organization id at all
        _org(c, "twice", "Twice Org")
        _org(c, "twice", "Twice Org")
        c.execute(insert(Organization).values(id="lonely", name="Org Without Integrations"))
        _org(c, "zerointerval", "Zero Interval Org", expected_interval_seconds=0)
        _org(c, "negativeinterval", "Negative Interval Org", expected_interval_seconds=-900)
        _org(c, "nasty", "Nasty Answers Org")
        run = _run(
            c,
            "nasty",
            "failed",
            NOW - 2 * HOUR,
            NOW - HOUR,
            error_code=NASTY_CODE,
            error_message=NASTY_MESSAGE,
        )
        for index, code in enumerate((NASTY_CODE, None, "", "429\x1b")):
            c.execute(
                insert(RecordError).values(
                    run_id=run,
                    org_id="nasty",
                    connector="xledger",
                    record_type="expense",
                    record_ref=f"N-{index}",
                    error_code=code,
                    error_message=NASTY_MESSAGE,
                    occurred_at=NOW - HOUR,
                )
            )
        if engine.dialect.name == "sqlite":  # only SQLite lets text into an integer column
            _org(c, "textual", "Textual Org", stale_after_seconds="soon")


EXPECTED_PROBLEMS = {
    ("sap", "connector_unknown"),
    ("badstatus", "run_status_unknown"),
    ("negative", "records_total_negative"),
    ("negative", "records_failed_negative"),
    ("noname", "org_name_missing"),
    ("orphan", "org_name_missing"),
    ("backwards", "run_finished_before_started"),
    ("future", "run_finished_in_future"),
    ("future", "last_success_at_in_future"),
    ("None", "org_id_missing"),
    ("twice", "integration_duplicated"),
    ("lostrecords", "record_state_unknown"),
    ("zerointerval", "expected_interval_invalid"),
    ("negativeinterval", "expected_interval_invalid"),
}


@pytest.fixture
def sloppy_url(db_url: str) -> str:
    engine = create_sync_log_engine(normalize_url(db_url))
    _sloppy_schema(engine)
    _write_bad_log(engine)
    engine.dispose()
    return db_url


def _problems_logged(log: str) -> list[tuple[str, str]]:
    found = []
    for line in log.splitlines():
        if 'msg="bad row in the sync log"' in line:
            org = re.search(r" org=(\S+)", line)
            kind = re.search(r" problem=(\S+)", line)
            assert org and kind, line
            assert "detail=" in line, line
            found.append((org.group(1), kind.group(1)))
    return found


def test_bad_rows_are_repaired_or_skipped_and_logged_once(sloppy_url, tmp_path):
    expected = set(EXPECTED_PROBLEMS)
    if sloppy_url.startswith("sqlite"):
        expected.add(("textual", "stale_after_invalid"))
    args = ["--database-url", sloppy_url, "--refresh-interval", "100ms", "--refresh.notify=false"]
    with exporter_process(args, tmp_path) as exporter:
        first = exporter.metrics()
        stamp = value(first, "accounting_sync_exporter_last_refresh_timestamp_seconds")

        def refreshed_again():  # type: ignore[no-untyped-def]
            samples = exporter.metrics()
            later = value(samples, "accounting_sync_exporter_last_refresh_timestamp_seconds")
            return samples if later and stamp and later > stamp + 0.25 else None

        m = wait_until(refreshed_again, what="three more refreshes")
        log = exporter.log()
    assert value(m, "accounting_sync_exporter_source_up") == 1
    assert "Traceback" not in log

    # The well-behaved organization is exactly right.
    good = {"org": "good", "connector": "xledger"}
    assert value(m, "accounting_sync_health", **good) == 0
    assert value(m, "accounting_sync_pending_records", **good) == 2
    assert value(m, "accounting_sync_last_run_records", **good) == 7
    assert (
        value(m, "accounting_sync_last_success_timestamp_seconds", **good)
        == (NOW - HOUR).timestamp()
    )

    # Rows that cannot be labelled are left out; everything else is repaired.
    orgs = {dict(labels)["org"] for labels in series(m, "accounting_sync_health")}
    assert "sap" not in orgs and "None" not in orgs and "" not in orgs and "lonely" not in orgs
    assert len(series(m, "accounting_sync_org_info")) == len(orgs)  # "twice" is not doubled
    assert value(m, "accounting_sync_failed_records", org="negative", connector="xledger") == 0
    assert value(m, "accounting_sync_last_run_records", org="negative", connector="xledger") == 0
    for org in ("noname", "orphan"):
        assert value(m, "accounting_sync_org_info", org=org, org_name=org, connector="xledger") == 1
    assert (
        value(m, "accounting_sync_last_run_duration_seconds", org="backwards", connector="xledger")
        is None
    )
    # A success dated in the future does not count: no success in 72 hours is red.
    future = {"org": "future", "connector": "xledger"}
    assert value(m, "accounting_sync_health", **future) == 2
    assert value(m, "accounting_sync_last_success_timestamp_seconds", **future) is None
    statuses = {
        dict(labels)["accounting_sync_last_run_status"]: v
        for labels, v in series(m, "accounting_sync_last_run_status").items()
        if dict(labels)["org"] == "badstatus"
    }
    assert statuses and not any(statuses.values()), statuses
    # Records in a state the exporter does not know are not pending (and are reported below).
    assert value(m, "accounting_sync_pending_records", org="lostrecords", connector="xledger") == 1
    if sloppy_url.startswith("sqlite"):
        textual = {"org": "textual", "connector": "xledger"}
        assert value(m, "accounting_sync_stale_after_seconds", **textual) == 86400

    # A bad expected interval is unknown for its own row; the good one is exact.
    intervals = {
        dict(labels)["org"]: v
        for labels, v in series(m, "accounting_sync_expected_interval_seconds").items()
    }
    assert intervals == {"good": 900}
    # Whatever the answers were, the class labels stay within the vocabulary.
    nasty = {"org": "nasty", "connector": "xledger"}
    assert series(m, "accounting_sync_last_run_error_class") == {
        frozenset({**nasty, "error_class": "unknown"}.items()): 1
    }
    by_class = {
        dict(labels)["error_class"]: v
        for labels, v in series(m, "accounting_sync_last_run_failed_records_by_class").items()
    }
    assert set(by_class) <= set(ERROR_CLASSES) and sum(by_class.values()) == 4, by_class
    assert all(len(k) < 200 for labels in series(m, "accounting_sync_health") for k in labels)

    logged = _problems_logged(log)
    assert set(logged) == expected
    assert len(logged) == len(set(logged)), "a problem was logged more than once"
    assert not any(org == "good" for org, _ in logged)
