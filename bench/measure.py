"""Timing helpers and the exporter as the benchmark runs it: a real process on a free port."""

from __future__ import annotations

import gzip
import http.client
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

TEXT = "text/plain"
OPENMETRICS = "application/openmetrics-text; version=1.0.0,text/plain;version=0.0.4;q=0.5"


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile: with few samples it is one of them, never an interpolation."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def median_time(action: Callable[[], T], repeat: int) -> tuple[float, T]:
    """Median wall time of ``repeat`` runs (after one warm-up run) and the last result."""
    result = action()
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        result = action()
        times.append(time.perf_counter() - started)
    return statistics.median(times), result


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Exporter:
    process: subprocess.Popen[bytes]
    port: int
    log: Path

    def get(self, accept: str = TEXT, gzipped: bool = False) -> tuple[float, bytes]:
        """One scrape on a new connection, as Prometheus makes it: (seconds, body bytes)."""
        headers = {"Accept": accept}
        if gzipped:
            headers["Accept-Encoding"] = "gzip"
        started = time.perf_counter()
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            connection.request("GET", "/metrics", headers=headers)
            body = connection.getresponse().read()
        finally:
            connection.close()
        return time.perf_counter() - started, body

    def text(self) -> str:
        _, body = self.get(gzipped=True)
        return gzip.decompress(body).decode()

    def peak_rss_bytes(self) -> int:
        """VmHWM: the most resident memory the process has had since it started."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
        return 0


@contextmanager
def exporter(database_url: str, *args: str) -> Iterator[Exporter]:
    port = free_port()
    log = Path(tempfile.mkstemp(prefix="bench-exporter-", suffix=".log")[1])
    with open(log, "wb") as handle:
        process = subprocess.Popen(
            [sys.executable, "-m", "exporter", "serve", "--database-url", database_url,
             "--web.listen-address", f"127.0.0.1:{port}", *args],
            stdout=handle, stderr=subprocess.STDOUT,
        )  # fmt: skip
    running = Exporter(process, port, log)
    try:
        deadline = time.monotonic() + 120
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"exporter exited: {log.read_text()[-2000:]}")
            try:
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                connection.request("GET", "/readyz")
                if connection.getresponse().status == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("exporter not ready after 120 s")
            time.sleep(0.05)
        yield running
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        os.unlink(log)
