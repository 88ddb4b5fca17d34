"""The exposition a scraper receives, parsed back with prometheus_client's own parsers.

Fixture states go through the collector and the cached renderer (``Exposition``) exactly
as the server serves them; every assertion is about what a Prometheus user would query.
"""

from __future__ import annotations

import gzip
import zlib
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from exporter.exposition.body import Exposition, wants_gzip, wants_openmetrics
from exporter.health import evaluate
from exporter.model import IntegrationFacts, ServedState, Snapshot
from exporter.serve.refresher import Refresher
from tests.support import Samples, parse_metrics, series, value

NOW = datetime(2026, 11, 28, 12, 0, 0, tzinfo=UTC)
CONTRACT_PER_INTEGRATION = (
    "accounting_sync_pending_records",
    "accounting_sync_failed_records",
    "accounting_sync_last_success_timestamp_seconds",
    "accounting_sync_last_run_timestamp_seconds",
    "accounting_sync_health",
    "accounting_sync_integration_active",
    "accounting_sync_stale_after_seconds",
    "accounting_sync_oldest_pending_record_timestamp_seconds",
)
CONTRACT_EXPORTER = (
    "accounting_sync_exporter_source_up",
    "accounting_sync_exporter_last_refresh_timestamp_seconds",
    "accounting_sync_exporter_refresh_duration_seconds",
)
AWKWARD_NAME = 'Norges "Blinde" forbund \\ Ærlig Øl & Å, 北京 \\n\n'


def busy() -> IntegrationFacts:
    """Everything set: a partial run ten minutes ago, records waiting, a run in progress."""
    return IntegrationFacts(
        org_id="blindeforbundet",
        org_name="Norges Blindeforbund",
        connector="xledger",
        active=True,
        stale_after_seconds=86400,
        created_at=NOW - timedelta(days=30),
        pending_records=7,
        oldest_pending_at=NOW - timedelta(hours=2),
        last_run_status="partial",
        last_run_started_at=NOW - timedelta(minutes=11),
        last_run_finished_at=NOW - timedelta(minutes=10),
        last_run_records_total=12,
        last_run_records_failed=3,
        last_success_at=NOW - timedelta(minutes=10),
        running_since=NOW - timedelta(seconds=30),
    )


def fresh(org_id: str = "hlf", connector: str = "dynamics", name: str = "HLF") -> IntegrationFacts:
    """Registered an hour ago, never ran, nothing pending."""
    return IntegrationFacts(
        org_id=org_id,
        org_name=name,
        connector=connector,
        active=False,
        stale_after_seconds=3600,
        created_at=NOW - timedelta(hours=1),
    )


def state(*integrations: IntegrationFacts, source_up: bool = True) -> ServedState:
    return ServedState(
        statuses=tuple(evaluate(f, NOW) for f in integrations),
        source_up=source_up,
        last_refresh_at=NOW.timestamp(),
        refresh_duration=0.0125,
        generation=1,
    )


def scrape(served: ServedState, *, openmetrics: bool = False) -> str:
    return Exposition(served).body(openmetrics=openmetrics, compressed=False).decode()


def parse_openmetrics(text: str) -> Samples:
    return parse_metrics(text, openmetrics=True)


def ours(samples: Samples) -> Samples:
    """The series that describe the sync log (process_* and python_* change between scrapes)."""
    return {k: v for k, v in samples.items() if k[0].startswith("accounting_sync_")}


BLIND = {"org": "blindeforbundet", "connector": "xledger"}
HLF = {"org": "hlf", "connector": "dynamics"}


def test_every_contract_metric_with_its_labels_and_values() -> None:
    samples = parse_metrics(scrape(state(busy())))
    f = busy()
    expected = {
        "accounting_sync_pending_records": 7,
        "accounting_sync_failed_records": 3,
        "accounting_sync_last_success_timestamp_seconds": f.last_success_at.timestamp(),  # type: ignore[union-attr]
        "accounting_sync_last_run_timestamp_seconds": f.last_run_finished_at.timestamp(),  # type: ignore[union-attr]
        "accounting_sync_health": 1,  # amber: 3 records failed
        "accounting_sync_integration_active": 1,
        "accounting_sync_stale_after_seconds": 86400,
        "accounting_sync_oldest_pending_record_timestamp_seconds": f.oldest_pending_at.timestamp(),  # type: ignore[union-attr]
    }
    for name, want in expected.items():
        assert series(samples, name) == {frozenset(BLIND.items()): want}, name
    assert series(samples, "accounting_sync_org_info") == {
        frozenset({**BLIND, "org_name": "Norges Blindeforbund"}.items()): 1
    }
    assert value(samples, "accounting_sync_exporter_source_up") == 1
    assert value(samples, "accounting_sync_exporter_last_refresh_timestamp_seconds") == (
        NOW.timestamp()
    )
    assert value(samples, "accounting_sync_exporter_refresh_duration_seconds") == 0.0125


def test_the_extra_run_metrics() -> None:
    samples = parse_metrics(scrape(state(busy())))
    assert value(samples, "accounting_sync_last_run_duration_seconds", **BLIND) == 60
    assert value(samples, "accounting_sync_last_run_records", **BLIND) == 12
    assert value(
        samples, "accounting_sync_running_run_started_timestamp_seconds", **BLIND
    ) == pytest.approx((NOW - timedelta(seconds=30)).timestamp())
    states = {
        dict(labels)["accounting_sync_last_run_status"]: v
        for labels, v in series(samples, "accounting_sync_last_run_status").items()
    }
    assert states == {"succeeded": 0, "partial": 1, "failed": 0}  # never "running"
    assert value(samples, "accounting_sync_exporter_integrations") == 1
    assert value(samples, "accounting_sync_exporter_refresh_failures_total") == 0


@pytest.mark.parametrize("openmetrics", [False, True], ids=["text", "openmetrics"])
def test_the_run_counters_with_every_status(openmetrics: bool) -> None:
    from dataclasses import replace

    counted = replace(
        busy(), runs_finished_total=(("succeeded", 120), ("partial", 7), ("failed", 2)),
        records_failed_total=19,
    )  # fmt: skip
    body = scrape(state(counted, fresh()), openmetrics=openmetrics)
    samples = parse_metrics(body, openmetrics=openmetrics)
    runs = {
        (dict(labels)["org"], dict(labels)["status"]): v
        for labels, v in series(samples, "accounting_sync_runs_finished_total").items()
    }
    # An integration that never ran still has all three series, at 0, so that rate() and
    # increase() see the first run finish instead of a series appearing.
    assert runs == {
        ("blindeforbundet", "succeeded"): 120,
        ("blindeforbundet", "partial"): 7,
        ("blindeforbundet", "failed"): 2,
        ("hlf", "succeeded"): 0,
        ("hlf", "partial"): 0,
        ("hlf", "failed"): 0,
    }
    assert value(samples, "accounting_sync_records_failed_total", **BLIND) == 19
    assert value(samples, "accounting_sync_records_failed_total", **HLF) == 0
    # Typed as counters, so Prometheus and its rate() treat a reset as a reset.
    family = "accounting_sync_runs_finished" + ("" if openmetrics else "_total")
    assert f"# TYPE {family} counter\n" in scrape(state(counted), openmetrics=openmetrics)


def test_series_the_contract_says_are_absent_are_absent() -> None:
    samples = parse_metrics(scrape(state(fresh())))
    for name in (
        "accounting_sync_last_success_timestamp_seconds",
        "accounting_sync_last_run_timestamp_seconds",
        "accounting_sync_oldest_pending_record_timestamp_seconds",
        "accounting_sync_running_run_started_timestamp_seconds",
        "accounting_sync_last_run_duration_seconds",
        "accounting_sync_last_run_records",
        "accounting_sync_last_run_status",
    ):
        assert series(samples, name) == {}, name
    # ...while the ones that always have a value are there, with the "no run" values.
    assert value(samples, "accounting_sync_failed_records", **HLF) == 0
    assert value(samples, "accounting_sync_pending_records", **HLF) == 0
    assert value(samples, "accounting_sync_integration_active", **HLF) == 0
    assert value(samples, "accounting_sync_stale_after_seconds", **HLF) == 3600
    assert value(samples, "accounting_sync_health", **HLF) == 0


def test_a_failed_run_is_last_run_but_not_last_success() -> None:
    aborted = IntegrationFacts(
        org_id="hlf",
        org_name="HLF",
        connector="dynamics",
        active=True,
        stale_after_seconds=86400,
        created_at=NOW - timedelta(hours=3),
        last_run_status="failed",
        last_run_started_at=NOW - timedelta(minutes=2),
        last_run_finished_at=NOW - timedelta(minutes=1),
    )
    samples = parse_metrics(scrape(state(aborted)))
    assert value(samples, "accounting_sync_last_run_timestamp_seconds", **HLF) == pytest.approx(
        (NOW - timedelta(minutes=1)).timestamp()
    )
    assert series(samples, "accounting_sync_last_success_timestamp_seconds") == {}
    assert value(samples, "accounting_sync_health", **HLF) == 1


def test_no_duplicate_series_with_many_integrations_of_one_org() -> None:
    integrations = [busy(), fresh(), fresh(connector="xledger"), fresh("b"), fresh("c")]
    for openmetrics in (False, True):
        text = scrape(state(*integrations), openmetrics=openmetrics)
        samples = parse_openmetrics(text) if openmetrics else parse_metrics(text)  # both assert
        assert len(series(samples, "accounting_sync_health")) == 5
        assert len(series(samples, "accounting_sync_org_info")) == 5
    families = [line for line in text.splitlines() if line.startswith("# TYPE ")]
    assert len(families) == len(set(families))


@pytest.mark.parametrize("openmetrics", [False, True], ids=["text", "openmetrics"])
def test_display_name_with_quotes_backslashes_and_non_ascii_round_trips(openmetrics: bool) -> None:
    text = scrape(state(fresh(name=AWKWARD_NAME)), openmetrics=openmetrics)
    samples = parse_openmetrics(text) if openmetrics else parse_metrics(text)
    (labels,) = series(samples, "accounting_sync_org_info")
    assert dict(labels) == {**HLF, "org_name": AWKWARD_NAME}


def test_openmetrics_and_text_carry_the_same_series() -> None:
    served = state(busy(), fresh())
    text = parse_metrics(scrape(served))
    openmetrics_text = scrape(served, openmetrics=True)
    assert openmetrics_text.endswith("# EOF\n")
    assert openmetrics_text.count("# EOF") == 1
    om = parse_openmetrics(openmetrics_text)
    # The text parser names the state set's samples like gauges; OpenMetrics the same.
    assert ours(om) == ours(text)


@pytest.mark.parametrize("openmetrics", [False, True], ids=["text", "openmetrics"])
def test_gzip_body_decompresses_to_the_same_content(openmetrics: bool) -> None:
    exposition = Exposition(state(busy(), fresh(name=AWKWARD_NAME)))
    plain = exposition.body(openmetrics=openmetrics, compressed=False)
    packed = exposition.body(openmetrics=openmetrics, compressed=True)
    assert packed[:2] == b"\x1f\x8b"
    unpacked = gzip.decompress(packed).decode()
    parse = parse_openmetrics if openmetrics else parse_metrics
    assert ours(parse(unpacked)) == ours(parse(plain.decode()))
    # The runtime series are there too (rendered per scrape, so their values may differ).
    assert "process_" in unpacked or "python_" in unpacked


def test_source_down_keeps_the_last_good_series() -> None:
    samples = parse_metrics(scrape(state(busy(), source_up=False)))
    assert value(samples, "accounting_sync_exporter_source_up") == 0
    assert value(samples, "accounting_sync_pending_records", **BLIND) == 7


def test_before_the_first_read_only_the_exporters_own_series() -> None:
    samples = parse_metrics(scrape(ServedState()))
    assert value(samples, "accounting_sync_exporter_source_up") == 0
    assert value(samples, "accounting_sync_exporter_integrations") == 0
    assert not [k for k in ours(samples) if not k[0].startswith("accounting_sync_exporter_")]


def test_a_removed_integration_leaves_no_series_after_the_next_refresh() -> None:
    snapshots = iter(
        [
            Snapshot(read_at=NOW, integrations=(busy(), fresh())),
            Snapshot(read_at=NOW + timedelta(seconds=15), integrations=(fresh(),)),
        ]
    )
    refresher = Refresher(None, 15.0, reader=lambda _engine: next(snapshots))  # type: ignore[arg-type]
    assert refresher.refresh()
    before = parse_metrics(refresher.exposition.body(openmetrics=False, compressed=False).decode())
    assert value(before, "accounting_sync_health", **BLIND) == 1
    assert refresher.refresh()
    after = parse_metrics(refresher.exposition.body(openmetrics=False, compressed=False).decode())
    assert not [labels for (_, labels) in ours(after) if ("org", "blindeforbundet") in labels]
    assert value(after, "accounting_sync_health", **HLF) == 0
    assert value(after, "accounting_sync_exporter_integrations") == 1


def test_content_negotiation() -> None:
    assert wants_openmetrics("application/openmetrics-text; version=1.0.0,text/plain;q=0.5")
    assert not wants_openmetrics("text/plain;version=0.0.4")
    assert not wants_openmetrics(None)
    assert wants_gzip("gzip, deflate")
    assert not wants_gzip("identity")


@pytest.mark.parametrize(
    ("header", "accepted"),
    [
        ("gzip", True),
        ("GZIP;q=0.5", True),
        ("deflate, gzip;q=1.0, br", True),
        ("*", True),
        ("gzip;q=0", False),
        ("gzip; q=0.000", False),
        ("identity, *;q=0", False),
        ("*;q=1, gzip;q=0", False),
        ("x-gzip", True),
        ("br", False),
        ("gzip;q=bogus", False),
        ("", False),
        (None, False),
    ],
)
def test_gzip_is_sent_only_when_its_quality_is_above_zero(
    header: str | None, accepted: bool
) -> None:
    assert wants_gzip(header) is accepted


def _runtime_free(body: bytes) -> list[bytes]:
    """The lines that do not change between scrapes (the process's own series do)."""
    lines = body.splitlines()
    return [line for line in lines if b"process_" not in line and b"python_" not in line]


@pytest.mark.parametrize("openmetrics", [False, True], ids=["text", "openmetrics"])
def test_gzip_body_is_one_member_holding_every_series(openmetrics: bool) -> None:
    exposition = Exposition(state(busy(), fresh(name=AWKWARD_NAME)))
    for _ in range(2):  # the second scrape continues the kept compressor again
        packed = exposition.body(openmetrics=openmetrics, compressed=True)
        plain = exposition.body(openmetrics=openmetrics, compressed=False)
        reader = zlib.decompressobj(31)  # reads exactly one gzip member, as curl does
        first_member = reader.decompress(packed) + reader.flush()
        assert reader.eof
        assert reader.unused_data == b"", "more than one gzip member"
        assert first_member == gzip.decompress(packed)
        assert b"process_" in first_member or b"python_" in first_member
        assert _runtime_free(first_member) == _runtime_free(plain)
        if openmetrics:
            assert first_member.endswith(b"# EOF\n")


# --- reconciliation and error classes (DESIGN.md) ---------------------------------------------


def expired_secret() -> IntegrationFacts:
    """The last run failed as a whole on an expired client secret; records were rejected."""
    return IntegrationFacts(
        org_id="hlf",
        org_name="HLF",
        connector="dynamics",
        active=True,
        stale_after_seconds=86400,
        created_at=NOW - timedelta(days=3),
        last_run_status="failed",
        last_run_started_at=NOW - timedelta(minutes=2),
        last_run_finished_at=NOW - timedelta(minutes=1),
        last_success_at=NOW - timedelta(hours=1),
        rejected_records=4,
        expected_interval_seconds=900,
        last_run_id=77,
        last_run_error_code="AADSTS7000222",
        last_run_error_message="AADSTS7000222: The provided client secret keys are expired.",
        last_run_error_class="auth",
    )


def test_rejected_records_are_always_present_and_zero_when_none() -> None:
    samples = parse_metrics(scrape(state(expired_secret(), busy())))
    assert series(samples, "accounting_sync_rejected_records") == {
        frozenset(HLF.items()): 4,
        frozenset(BLIND.items()): 0,
    }


def test_a_run_that_failed_as_a_whole_carries_its_class() -> None:
    samples = parse_metrics(scrape(state(expired_secret(), busy())))
    # Only the failed run has a class; the partial one (busy) has none.
    assert series(samples, "accounting_sync_last_run_error_class") == {
        frozenset({**HLF, "error_class": "auth"}.items()): 1
    }


def test_the_last_runs_failed_records_by_class_only_for_classes_with_records() -> None:
    partial = replace(busy(), last_run_failures_by_class=(("throttled", 1), ("validation", 2)))
    samples = parse_metrics(scrape(state(partial, fresh())))
    assert series(samples, "accounting_sync_last_run_failed_records_by_class") == {
        frozenset({**BLIND, "error_class": "throttled"}.items()): 1,
        frozenset({**BLIND, "error_class": "validation"}.items()): 2,
    }


def test_expected_interval_is_absent_when_unknown_and_created_at_always_present() -> None:
    samples = parse_metrics(scrape(state(expired_secret(), fresh("doveforbundet", "xledger"))))
    assert series(samples, "accounting_sync_expected_interval_seconds") == {
        frozenset(HLF.items()): 900
    }
    assert series(samples, "accounting_sync_integration_created_timestamp_seconds") == {
        frozenset(HLF.items()): (NOW - timedelta(days=3)).timestamp(),
        frozenset({"org": "doveforbundet", "connector": "xledger"}.items()): (
            NOW - timedelta(hours=1)
        ).timestamp(),
    }
