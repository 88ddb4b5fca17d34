"""Grafana dashboards as code: built with grafana-foundation-sdk, written as provisioned JSON."""
