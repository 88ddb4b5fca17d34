"""The bytes a scrape returns, rendered once per refresh instead of once per scrape.

At 10,000 integrations prometheus_client needs most of a second to render the text
format, and its gzip runs at level 9; both would be paid by every scraper and every
replica. A refresh produces a new immutable ``ServedState``; this renders it at most
once per (format, compression) and hands the same bytes to every scrape after that.

The process metrics (memory, CPU, file descriptors) change between scrapes, so they
are rendered per scrape and appended. A compressed body stays one gzip member: the
compressor that packed the cached part is kept unflushed, and each scrape continues a
copy of it with the per-scrape tail. A second member would be legal gzip, but
``curl --compressed`` (and other clients) silently stop after the first one.
"""

from __future__ import annotations

import threading
import zlib

from prometheus_client import GCCollector, PlatformCollector, ProcessCollector
from prometheus_client.openmetrics import exposition as openmetrics_format
from prometheus_client.registry import CollectorRegistry

from exporter.exposition import textformat
from exporter.model import ServedState

# What prometheus_client itself labels an un-negotiated text body: since 0.22 its
# CONTENT_TYPE_LATEST says version=1.0.0, which promises a format we do not negotiate.
TEXT_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS_CONTENT_TYPE = openmetrics_format.CONTENT_TYPE_LATEST
GZIP_LEVEL = 6


def wants_openmetrics(accept_header: str | None) -> bool:
    """Content negotiation as prometheus_client does it (Prometheus asks for OpenMetrics)."""
    for accepted in (accept_header or "").split(","):
        if accepted.split(";")[0].strip() == "application/openmetrics-text":
            return True
    return False


def wants_gzip(accept_encoding: str | None) -> bool:
    """Whether the client accepts gzip, by RFC 9110 content coding and q-value.

    prometheus_client's ``gzip_accepted`` matches the coding name only, so it would send
    gzip to a client that says ``gzip;q=0`` ("not gzip"); hence this parser. ``*`` stands
    for every coding not named; an unreadable q-value counts as not acceptable.
    """
    named: dict[str, float] = {}
    for item in (accept_encoding or "").split(","):
        coding, *parameters = (part.strip() for part in item.split(";"))
        quality = 1.0
        for parameter in parameters:
            name, _, raw = parameter.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(raw.strip())
                except ValueError:
                    quality = 0.0
        if coding:
            named[coding.lower()] = quality
    if "gzip" in named:
        return named["gzip"] > 0
    if "x-gzip" in named:
        return named["x-gzip"] > 0
    return named.get("*", 0.0) > 0


def _render(registry: CollectorRegistry, openmetrics: bool) -> bytes:
    # Same bytes as prometheus_client's generate_latest, several times faster (textformat.py).
    return textformat.generate(registry, openmetrics=openmetrics)


def _runtime_registry() -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


# The process's own series, the same for every refreshed state: one registry for them all.
_RUNTIME = _runtime_registry()


class Exposition:
    """The rendered forms of one ``ServedState``, filled in lazily and kept."""

    def __init__(
        self,
        state: ServedState,
        previous: Exposition | None = None,
    ) -> None:
        self.state = state
        # Unchanged integrations reuse the previous refresh's lines (textformat.LineCache).
        self._lines: textformat.LineCache = textformat.LineCache(
            previous._lines if previous is not None else None
        )
        self._rendered: textformat.Pieces | None = None
        # Per format: the compressed cached part and its compressor, not yet flushed.
        self._gzipped: dict[bool, tuple[bytes, zlib._Compress]] = {}
        self._lock = threading.RLock()

    def _pieces(self) -> textformat.Pieces:
        pieces = self._rendered
        if pieces is None:
            with self._lock:
                pieces = self._rendered
                if pieces is None:
                    pieces = textformat.render_pieces(self.state, self._lines)
                    self._rendered = pieces
        return pieces

    def _compressed(self, openmetrics: bool, extra: bytes) -> list[bytes]:
        """The cached part once compressed, then ``extra`` and the gzip trailer: one member."""
        with self._lock:
            cached = self._gzipped.get(openmetrics)
            if cached is None:
                # Streamed chunk by chunk: no second copy of the uncompressed body.
                packer = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)
                parts = [packer.compress(c) for c in self._pieces().chunks(openmetrics=openmetrics)]
                cached = (b"".join(parts), packer)
                self._gzipped[openmetrics] = cached
            # A copy, so that the kept compressor stays where the cached part ends.
            tail = cached[1].copy()
        return [cached[0], tail.compress(extra) + tail.flush()]

    def prerender(self) -> None:
        """Render both formats now, off the scrape path."""
        self._pieces()

    def chunks(self, *, openmetrics: bool, compressed: bool) -> list[bytes]:
        """The response body as pieces to write one after the other.

        Joining them would copy the whole body (12 MiB at 10,000 integrations) on every
        uncompressed scrape, and the allocator keeps such copies as resident memory.
        """
        runtime = _render(_RUNTIME, openmetrics)
        if compressed:
            return self._compressed(openmetrics, runtime)
        return self._pieces().chunks(openmetrics=openmetrics, extra=runtime)

    def body(self, *, openmetrics: bool, compressed: bool) -> bytes:
        return b"".join(self.chunks(openmetrics=openmetrics, compressed=compressed))
