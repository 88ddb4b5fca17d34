"""The contract's access rules for the status page and /metrics, and status.users checks."""

from __future__ import annotations

from pathlib import Path

import bcrypt
import pytest
import yaml

from exporter.cli import main
from exporter.serve.status.access import AccessRules


def test_without_basic_auth_everyone_sees_every_organization_and_metrics() -> None:
    viewer = AccessRules({"hlf": ["hlf"]}, auth_required=False).viewer(None)
    assert viewer.is_global and viewer.metrics and viewer.sees("anything")


def test_with_basic_auth_and_no_map_every_user_is_a_global_administrator() -> None:
    viewer = AccessRules(None, auth_required=True).viewer("alice")
    assert viewer.is_global and viewer.metrics


def test_the_map_decides_for_each_kind_of_user() -> None:
    rules = AccessRules({"root": ["*"], "hlf": ["hlf", "dnt"], "empty": []}, auth_required=True)
    root = rules.viewer("root")
    assert root.is_global and root.metrics
    admin = rules.viewer("hlf")
    assert admin.sees("hlf") and admin.sees("dnt") and not admin.sees("redd-barna")
    assert not admin.metrics and not admin.is_global
    empty = rules.viewer("empty")
    assert not empty.anything and not empty.status and not empty.metrics
    scraper = rules.viewer("prometheus")
    assert scraper.metrics and not scraper.status and not scraper.sees("hlf")


def _check(tmp_path: Path, users: object, web_users: tuple[str, ...] = ("alice",)) -> int:
    web = tmp_path / "web.yml"
    hashed = bcrypt.hashpw(b"pw", bcrypt.gensalt(4)).decode()
    web.write_text(yaml.safe_dump({"basic_auth_users": {u: hashed for u in web_users}}))
    config = tmp_path / "config.yml"
    config.write_text(yaml.safe_dump({"status": {"users": users}}))
    return main(["serve", "--check-config", "--database-url", "sqlite:///x.db",
                 "--config", str(config), "--web.config.file", str(web)])  # fmt: skip


@pytest.mark.parametrize(
    ("users", "named"),
    [
        ({"alice": "hlf"}, "status.users.alice"),
        ({"alice": ["*", "hlf"]}, "status.users.alice"),
        ({"alice": [1]}, "status.users.alice"),
        ({"bob": ["hlf"]}, "status.users.bob"),  # not a user of the web config
        (["alice"], "status.users"),
    ],
)
def test_a_bad_status_users_entry_exits_2_naming_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], users: object, named: str
) -> None:
    assert _check(tmp_path, users) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and named in lines[0], lines


def test_a_good_status_users_map_is_accepted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _check(tmp_path, {"alice": ["*"], "carol": []}, ("alice", "carol")) == 0
    assert "configuration is valid" in capsys.readouterr().out


def test_max_streams_must_be_a_positive_whole_number(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = main(["serve", "--check-config", "--database-url", "sqlite:///x.db",
                 "--status.max-streams", "0"])  # fmt: skip
    assert code == 2
    assert "--status.max-streams" in capsys.readouterr().err
