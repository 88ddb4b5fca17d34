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


def test_make_demo_installs_the_runtime_only_into_its_own_venv(tmp_path):
    """The development extras (pytest, mypy, the dashboards SDK) made the demo's venv
    208 MB and its first output about a minute away; the demo needs none of them."""
    make = subprocess.run(
        ["make", "-n", "demo", f"DEMO_VENV={tmp_path / 'demo-venv'}", f"VENV={tmp_path / 'dev'}"],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip
    assert make.returncode == 0, make.stderr
    installs = [line for line in make.stdout.splitlines() if "pip install" in line]
    assert installs, make.stdout
    for line in installs:
        assert str(tmp_path / "demo-venv") in line
        assert "[" not in line.split("pip install", 1)[1], line  # no extras
    assert str(tmp_path / "dev") not in make.stdout
    assert f"{tmp_path / 'demo-venv'}/bin/accounting-sync-exporter demo" in make.stdout
