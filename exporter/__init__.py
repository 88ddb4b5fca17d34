"""Prometheus exporter for the health of accounting-system sync pipelines."""

__version__ = "0.1.0"
