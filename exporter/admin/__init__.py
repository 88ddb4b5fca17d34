"""One-off administration beside the exporter: database roles, Grafana tenants and
Alertmanager receivers."""
