"""`alertmanager-config`: per-organization receivers generated from the sync log's organizations.

The generated file is checked by the real amtool: it must be valid and route each organization
with contacts to its own receiver plus the administrators', and the rest to the administrators.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from sqlalchemy import Engine

from exporter.admin.alert_receivers import ACTION_REQUIRED_INHIBITION
from exporter.admin.alert_receivers import generate as generate_config
from exporter.source.pipeline import Pipeline
from tests.support import require_binary, run_cli

pytestmark = pytest.mark.alertmanager

AM_DIR = Path(__file__).resolve().parents[3] / "alerting" / "alertmanager"

CONTACTS = {
    "blindeforbundet": {
        "email": ["finance@blindeforbundet.example.com"],
        "webhook": ["https://bridge.example.com/blindeforbundet"],
    },
    "newcomer": {"email": "books@newcomer.example.com", "chat": ["https://chat.example.com/x"]},
    "ghost": {"email": ["nobody@ghost.example.com"]},
}


def amtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [require_binary("amtool"), *args], capture_output=True, text=True, timeout=60
    )


def routes_to(config: Path, *labels: str) -> str:
    result = amtool("config", "routes", "test", "--config.file", str(config), *labels)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def matching_routes(config: Path, *labels: str) -> list[str]:
    """amtool's tree of the routes an alert takes, one route per line."""
    result = amtool("config", "routes", "test", "--tree", "--config.file", str(config), *labels)
    assert result.returncode == 0, result.stderr
    return [line.strip(" \u00a0│├└─") for line in result.stdout.splitlines()]


ACTION_REQUIRED = ["alertname=AccountingSyncActionRequired", "error_class=auth"]
AT_ONCE = '{alertname="AccountingSyncActionRequired"}  receiver: '


def generate(db_url: str, tmp_path: Path, contacts: object) -> subprocess.CompletedProcess[str]:
    contacts_file = tmp_path / "contacts.yml"
    contacts_file.write_text(yaml.safe_dump(contacts))
    return run_cli(
        "alertmanager-config",
        "--database-url",
        db_url,
        "--base",
        str(AM_DIR / "alertmanager.yml"),
        "--contacts",
        str(contacts_file),
        "--output",
        str(tmp_path / "alertmanager.yml"),
    )


def test_each_organization_with_contacts_gets_its_receiver(engine: Engine, db_url, tmp_path):
    pipeline = Pipeline(engine)
    pipeline.register("blindeforbundet", "Norges Blindeforbund", "xledger")
    pipeline.register("hlf", "Hørselshemmedes Landsforbund", "dynamics")
    pipeline.register("newcomer", "Newcomer AS", "dynamics")

    result = generate(db_url, tmp_path, CONTACTS)
    assert result.returncode == 0, result.stderr
    warnings = result.stderr.splitlines()
    assert any("hlf" in w and "global administrators only" in w for w in warnings), warnings
    assert any("ghost" in w and "no such organization" in w for w in warnings), warnings

    shutil.copytree(AM_DIR / "templates", tmp_path / "templates")
    config = tmp_path / "alertmanager.yml"
    check = subprocess.run(
        [require_binary("amtool"), "check-config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert check.returncode == 0, check.stdout + check.stderr

    assert routes_to(config, "org=blindeforbundet") == "global-admins,org-blindeforbundet"
    assert routes_to(config, "org=newcomer") == "global-admins,org-newcomer"
    # hlf has no contacts here: the base's hand-written route is not kept stale.
    assert routes_to(config, "org=hlf") == "global-admins"
    assert routes_to(config, "alertname=AccountingSyncExporterDown") == "global-admins"
    # ActionRequired takes each receiver's at-once child route (no group wait).
    assert routes_to(config, "org=newcomer", *ACTION_REQUIRED) == "global-admins,org-newcomer"
    taken = matching_routes(config, "org=newcomer", *ACTION_REQUIRED)
    assert f"{AT_ONCE}global-admins" in taken and f"{AT_ONCE}org-newcomer" in taken, taken
    assert not any(line.startswith(AT_ONCE) for line in matching_routes(config, "org=newcomer"))

    generated = yaml.safe_load(config.read_text())
    receivers = {r["name"]: r for r in generated["receivers"]}
    assert set(receivers) == {"global-admins", "org-blindeforbundet", "org-newcomer"}
    newcomer = receivers["org-newcomer"]
    assert [e["to"] for e in newcomer["email_configs"]] == ["books@newcomer.example.com"]
    assert newcomer["slack_configs"][0]["api_url"] == "https://chat.example.com/x"
    assert all(c["send_resolved"] for c in newcomer["email_configs"] + newcomer["slack_configs"])
    # What the base says beyond the organizations survives unchanged.
    base = yaml.safe_load((AM_DIR / "alertmanager.yml").read_text())
    assert generated["inhibit_rules"] == base["inhibit_rules"]
    assert generated["route"]["group_by"] == base["route"]["group_by"]
    assert receivers["global-admins"] == next(
        r for r in base["receivers"] if r["name"] == "global-admins"
    )


@pytest.mark.parametrize(
    ("contacts", "key"),
    [
        ({"hlf": {"email": ["not-an-address"]}}, "contacts.hlf.email"),
        ({"hlf": {"chat": ["ftp://x"]}}, "contacts.hlf.chat"),
        ({"hlf": {"pager": ["x"]}}, "contacts.hlf.pager"),
        (["hlf"], "contacts"),
    ],
)
def test_bad_contacts_exit_2_naming_the_key(sqlite_url, tmp_path, contacts, key):
    assert run_cli("db", "upgrade", "--database-url", sqlite_url).returncode == 0
    result = generate(sqlite_url, tmp_path, contacts)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and f"error: {key}:" in result.stderr
    assert not (tmp_path / "alertmanager.yml").exists()


def test_a_base_older_than_action_required_gains_its_route_and_inhibition(tmp_path):
    """A deployment's own base written before AccountingSyncActionRequired existed: the
    generated configuration still sends it at once and mutes the amber alert, and says so."""
    base = yaml.safe_load((AM_DIR / "alertmanager.yml").read_text())
    for route in base["route"]["routes"]:
        route.pop("routes", None)
    base["inhibit_rules"] = base["inhibit_rules"][:1]  # the red-over-warnings rule only

    outcome = generate_config(
        base,
        [("hlf", "Hørselshemmedes Landsforbund")],
        {"hlf": {"email": ["finance@hlf.example.com"], "chat": [], "webhook": []}},
    )
    assert any("AccountingSyncActionRequired" in w for w in outcome.warnings), outcome.warnings
    shutil.copytree(AM_DIR / "templates", tmp_path / "templates")
    config = tmp_path / "alertmanager.yml"
    config.write_text(yaml.safe_dump(outcome.config, allow_unicode=True))
    check = amtool("check-config", str(config))
    assert check.returncode == 0, check.stdout + check.stderr

    taken = matching_routes(config, "org=hlf", *ACTION_REQUIRED)
    assert f"{AT_ONCE}global-admins" in taken and f"{AT_ONCE}org-hlf" in taken, taken
    inhibits = outcome.config["inhibit_rules"]
    assert inhibits[0] == base["inhibit_rules"][0]
    assert [rule["source_matchers"] for rule in inhibits[1:]] == [
        ['alertname="AccountingSyncActionRequired"']
    ]


def test_the_projects_base_needs_nothing_added():
    """The committed alertmanager.yml already routes and inhibits as the generator would."""
    base = yaml.safe_load((AM_DIR / "alertmanager.yml").read_text())
    outcome = generate_config(base, [], {})
    assert outcome.warnings == []
    assert outcome.config["inhibit_rules"] == base["inhibit_rules"]
    # What the generator adds to an older base is what the project's base says.
    assert ACTION_REQUIRED_INHIBITION in base["inhibit_rules"]
    [catch_all] = outcome.config["route"]["routes"]
    assert catch_all == base["route"]["routes"][0]
