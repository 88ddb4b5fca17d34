"""Helpers shared by the test modules: real services, the real command line, polling.

Polling with a deadline (``wait_until``) replaces sleeping: a test waits exactly as long
as the behaviour takes, and fails with the last observation when it never comes.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families

T = TypeVar("T")
EXPORTER = [sys.executable, "-m", "exporter"]
IN_CI = os.environ.get("CI") == "true"


def require_binary(name: str) -> str:
    """The binary's path; a missing one skips locally and fails under CI."""
    path = shutil.which(name)
    if path:
        return path
    message = f"{name} is not installed (make test installs it from Debian packages)"
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(
    probe: Callable[[], T | None], timeout: float = 10.0, interval: float = 0.05, what: str = ""
) -> T:
    """Call ``probe`` until it returns something truthy; fail with ``what`` at the deadline."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = probe()
        except Exception as exc:  # the thing we wait for may not be up yet
            last = exc
        else:
            if last:
                return last
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what or probe}: last {last!r}")
        time.sleep(interval)


def http_get(
    url: str, headers: dict[str, str] | None = None, timeout: float = 5.0, context: Any = None
) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse_metrics(text: str, *, openmetrics: bool = False) -> Samples:
    """Every sample of an exposition (text format, or OpenMetrics), keyed by (name, labels)."""
    parser = openmetrics_families if openmetrics else text_string_to_metric_families
    samples: Samples = {}
    for family in parser(text):
        for sample in family.samples:
            key = (sample.name, frozenset(sample.labels.items()))
            assert key not in samples, f"duplicate series {key}"
            samples[key] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def series(samples: Samples, name: str) -> dict[frozenset[tuple[str, str]], float]:
    return {labels: v for (n, labels), v in samples.items() if n == name}


@dataclass
class RunningExporter:
    process: subprocess.Popen[str]
    url: str
    log_path: Path

    def metrics(self) -> Samples:
        status, _, body = http_get(self.url + "/metrics")
        assert status == 200, body
        return parse_metrics(body.decode())

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@contextmanager
def exporter_process(
    args: Sequence[str],
    tmp_path: Path,
    *,
    port: int | None = None,
    command: str = "serve",
    env: dict[str, str] | None = None,
    ready: bool = True,
) -> Iterator[RunningExporter]:
    """``accounting-sync-exporter serve`` as a real subprocess on a free port."""
    port = port or free_port()
    log_path = tmp_path / f"exporter-{port}.log"
    with open(log_path, "w") as log_file:
        process = subprocess.Popen(
            [*EXPORTER, command, "--web.listen-address", f"127.0.0.1:{port}", *args],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, **(env or {})},
        )
    running = RunningExporter(process, f"http://127.0.0.1:{port}", log_path)
    try:
        path = "/readyz" if ready else "/healthz"

        def answers() -> bool:
            if process.poll() is not None:
                pytest.fail(f"exporter exited with {process.returncode}: {running.log()}")
            return http_get(running.url + path)[0] == 200

        wait_until(answers, timeout=20, what=f"exporter {path}")
        yield running
    finally:
        stop_process(process)


def run_cli(
    *args: str,
    env: dict[str, str] | None = None,
    timeout: float = 60,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*EXPORTER, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        cwd=cwd,
    )


def stop_process(process: subprocess.Popen[Any]) -> None:
    """SIGTERM, then SIGKILL if it has not stopped within 15 s."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextmanager
def background_process(args: Sequence[str], log_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A real server process with its output in ``log_path``, stopped on exit."""
    with open(log_path, "wb") as log:
        process = subprocess.Popen(list(args), stdout=log, stderr=subprocess.STDOUT)
    try:
        yield process
    finally:
        stop_process(process)


def wait_ready(url: str, process: subprocess.Popen[Any], log_path: Path) -> None:
    """Poll ``url`` until it answers 200; fail at once with the log if the process died."""

    def answers() -> bool:
        if process.poll() is not None:
            pytest.fail(f"{process.args[0]} exited: {log_path.read_text(errors='replace')}")
        return http_get(url)[0] == 200

    wait_until(answers, timeout=30, interval=0.2, what=url)


@contextmanager
def prometheus_server(
    targets: Sequence[str],
    work: Path,
    *,
    rule_files: Sequence[Path] = (),
    alertmanagers: Sequence[str] = (),
    job: str = "accounting-sync-exporter",
) -> Iterator[str]:
    """A real ``prometheus`` scraping ``targets`` (host:port) in one job every second,
    evaluating ``rule_files`` every second; yields its URL once it is ready."""
    import yaml

    binary = require_binary("prometheus")
    port = free_port()
    config: dict[str, Any] = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(path) for path in rule_files],
        "scrape_configs": [{"job_name": job, "static_configs": [{"targets": list(targets)}]}],
    }
    if alertmanagers:
        config["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": alertmanagers}]}]}
    config_path = work / "prometheus.yml"
    config_path.write_text(yaml.safe_dump(config))
    log_path = work / "prometheus.log"
    args = [
        binary,
        f"--config.file={config_path}",
        f"--storage.tsdb.path={work / 'prometheus-data'}",
        f"--web.listen-address=127.0.0.1:{port}",
    ]
    with background_process(args, log_path) as process:
        url = f"http://127.0.0.1:{port}"
        wait_ready(url + "/-/ready", process, log_path)
        yield url
