"""What ``pip install`` of the project gives someone without a checkout: the wheel holds
the migrations and the alerting rules, and ``python -m alerting.render`` works from it."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def unpacked_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(out), str(ROOT)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    (wheel,) = out.glob("accounting_sync_exporter-*.whl")
    target = out / "site"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(target)
    return target


def test_the_wheel_carries_the_migrations_and_the_alerting_rules(unpacked_wheel):
    for shipped in (
        "exporter/source/migrations/env.py",
        "exporter/source/migrations/versions/0001_initial.py",
        "alerting/render.py",
        "alerting/rules/accounting-sync.rules.yml",
    ):
        assert (unpacked_wheel / shipped).is_file(), shipped
    assert not (unpacked_wheel / "tests").exists()


def test_alerting_render_works_from_the_installed_package(unpacked_wheel, tmp_path):
    result = subprocess.run(
        [
            sys.executable, "-m", "alerting.render",
            "--grafana-url", "https://grafana.example.org",
            "--runbook-url", "https://wiki.example.org/accounting-sync",
        ],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,  # not the checkout
        env={"PYTHONPATH": str(unpacked_wheel), "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "https://wiki.example.org/accounting-sync#" in result.stdout
    assert "runbooks.example.com/accounting-sync/alerting/README.md#" not in result.stdout
