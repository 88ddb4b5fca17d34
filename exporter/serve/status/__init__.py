"""The status screen served by the exporter: pages, live event streams and access rules."""

from exporter.serve.status.access import AccessRules, Viewer
from exporter.serve.status.site import StatusSite

__all__ = ["AccessRules", "StatusSite", "Viewer"]
