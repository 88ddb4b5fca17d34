"""The wheel is the release: installed anywhere, it migrates a sync log and has its dashboards.

Built from the files the Dockerfile copies (so the image build cannot lack one either) and
installed into a throwaway virtual environment, then run from a directory outside the
repository, where neither the source tree nor ``grafana/dashboards`` can be found.
The exporter's dependencies are taken from the test's own environment (a ``.pth`` line), so
the test needs no package index and stays well under a minute.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

import exporter
from exporter.admin.grafana_tenants import TENANT_DASHBOARD_UIDS

ROOT = Path(__file__).resolve().parents[2]
# What the Dockerfile's build stage copies before `pip wheel`.
BUILD_CONTEXT = ("pyproject.toml", "README.md", "exporter", "grafana/dashboards")

LIST_DASHBOARDS = """
import json, sys
from importlib import resources
import exporter
from exporter.admin.grafana_tenants import load_dashboards
print(exporter.__file__)
print(json.dumps({
    "files": sorted(p.name for p in (resources.files("exporter") / "dashboards").iterdir()),
    "tenant": sorted(d["uid"] for d in load_dashboards()),
}))
"""


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    source = tmp_path_factory.mktemp("source")
    for name in BUILD_CONTEXT:
        origin = ROOT / name
        if origin.is_dir():
            shutil.copytree(
                origin,
                source / name,
                symlinks=True,
                ignore=shutil.ignore_patterns("__pycache__"),
            )
        else:
            shutil.copy2(origin, source / name)
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(out), "."],
        cwd=source,
        check=True,
        timeout=180,
    )
    (built,) = out.glob("accounting_sync_exporter-*.whl")
    return built


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A new virtual environment with the wheel and nothing else of this checkout."""
    home = tmp_path_factory.mktemp("venv")
    venv.EnvBuilder(with_pip=False).create(home)
    python = home / "bin" / "python"
    purelib = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    (Path(purelib) / "test-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    pip = [sys.executable, "-m", "pip", "--python", str(python)]
    subprocess.run(
        [*pip, "install", "--no-deps", "--no-index", "--quiet", str(wheel)],
        check=True,
        timeout=120,
    )
    return home


def test_the_wheel_carries_the_dashboards_byte_for_byte_and_every_migration(wheel: Path):
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        for committed in (ROOT / "grafana" / "dashboards").glob("*.json"):
            packaged = f"exporter/dashboards/{committed.name}"
            assert archive.read(packaged) == committed.read_bytes()
        assert {n for n in names if n.startswith("exporter/dashboards/")} == {
            f"exporter/dashboards/{p.name}" for p in (ROOT / "grafana" / "dashboards").glob("*")
        }
        migrations = Path(exporter.__file__).parent / "source" / "migrations" / "versions"
        for script in migrations.glob("*.py"):
            assert f"exporter/source/migrations/versions/{script.name}" in names
        metadata = archive.read(
            next(n for n in names if n.endswith(".dist-info/METADATA"))
        ).decode()
    assert f"\nVersion: {exporter.__version__}\n" in metadata


def test_the_installed_exporter_migrates_sqlite_and_lists_its_dashboards(
    installed: Path, tmp_path: Path
):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    database = elsewhere / "sync-log.db"
    command = installed / "bin" / "accounting-sync-exporter"
    upgraded = subprocess.run(
        [command, "db", "upgrade", "--database-url", f"sqlite:///{database}"],
        cwd=elsewhere,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert upgraded.returncode == 0, upgraded.stderr
    version = subprocess.run(
        [command, "--version"], cwd=elsewhere, capture_output=True, text=True, timeout=60
    )
    assert version.stdout.split() == ["accounting-sync-exporter", exporter.__version__]

    import sqlite3

    with sqlite3.connect(database) as connection:
        tables = {r[0] for r in connection.execute("SELECT name FROM sqlite_master")}
    assert {"sync_organization", "sync_integration", "sync_run", "sync_record"} <= tables

    listed = subprocess.run(
        [installed / "bin" / "python", "-c", LIST_DASHBOARDS],
        cwd=elsewhere,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.splitlines()
    assert Path(listed[0]).is_relative_to(installed)
    found = json.loads(listed[1])
    assert found["files"] == sorted(p.name for p in (ROOT / "grafana/dashboards").glob("*.json"))
    assert found["tenant"] == sorted(TENANT_DASHBOARD_UIDS)
