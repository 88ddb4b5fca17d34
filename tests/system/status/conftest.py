"""A real Chromium (the Debian package, driven by Playwright) and real exporter processes.

Playwright's own browser download cannot work on these machines, so the browser is
always ``/usr/bin/chromium``; without it the tests skip locally and fail under CI=true.
Screenshots of every page go to tests/output/screenshots/ at desktop and phone widths.
"""

from __future__ import annotations

import base64
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from exporter.source.engine import create_sync_log_engine, normalize_url
from exporter.source.migrate import upgrade
from exporter.source.pipeline import Pipeline
from tests.support import EXPORTER, IN_CI, free_port, http_get, stop_process, wait_until

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "output" / "screenshots"
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}


def _missing(message: str) -> None:
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    if not os.access(CHROMIUM, os.X_OK):
        _missing(f"{CHROMIUM} is not installed (make test installs the Debian chromium package)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("the playwright package is not installed (pip install -e '.[dev]')")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        yield chromium
        chromium.close()


def screenshot(page: Any, name: str) -> None:
    """The page at desktop and at phone width, kept under the test output."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    size = page.viewport_size
    for label, viewport in (("desktop", DESKTOP), ("phone", PHONE)):
        page.set_viewport_size(viewport)
        page.screenshot(path=str(SCREENSHOTS / f"{name}-{label}.png"), full_page=True)
    page.set_viewport_size(size)


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


@dataclass
class StatusExporter:
    """``serve`` as a real process on a fixed port, so it can be stopped and started again."""

    args: list[str]
    work: Path
    probe_headers: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        log = open(self.work / f"exporter-{self.port}.log", "ab")  # noqa: SIM115
        self.process = subprocess.Popen(
            [*EXPORTER, "serve", "--web.listen-address", f"127.0.0.1:{self.port}", *self.args],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        process = self.process

        def ready() -> bool:
            if process.poll() is not None:
                pytest.fail(f"exporter exited: {self.log()}")
            return http_get(self.url + "/readyz", self.probe_headers)[0] == 200

        wait_until(ready, timeout=30, interval=0.1, what="the exporter's /readyz")

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)

    def log(self) -> str:
        return (self.work / f"exporter-{self.port}.log").read_text(errors="replace")


@pytest.fixture
def pipeline(pg_url: str) -> Iterator[Pipeline]:
    engine = create_sync_log_engine(normalize_url(pg_url))
    upgrade(engine)
    yield Pipeline(engine)
    engine.dispose()


@pytest.fixture
def start_exporter(tmp_path: Path) -> Iterator[Any]:
    started: list[StatusExporter] = []

    def start(args: list[str], probe_headers: dict[str, str] | None = None) -> StatusExporter:
        exporter = StatusExporter(args, tmp_path, probe_headers or {})
        exporter.start()
        started.append(exporter)
        return exporter

    yield start
    for exporter in started:
        exporter.stop()
