"""The metric names: one home for the contract's names and the exporter's own.

Rules, dashboards and users' PromQL depend on these spellings (``DESIGN.md``).
"""

from __future__ import annotations

PREFIX = "accounting_sync_"

# Per integration, labels org and connector.
PENDING_RECORDS = "accounting_sync_pending_records"
FAILED_RECORDS = "accounting_sync_failed_records"
LAST_SUCCESS_TIMESTAMP = "accounting_sync_last_success_timestamp_seconds"
LAST_RUN_TIMESTAMP = "accounting_sync_last_run_timestamp_seconds"
HEALTH = "accounting_sync_health"
INTEGRATION_ACTIVE = "accounting_sync_integration_active"
STALE_AFTER_SECONDS = "accounting_sync_stale_after_seconds"
OLDEST_PENDING_TIMESTAMP = "accounting_sync_oldest_pending_record_timestamp_seconds"
ORG_INFO = "accounting_sync_org_info"
# Beyond the contract.
LAST_RUN_DURATION = "accounting_sync_last_run_duration_seconds"
LAST_RUN_RECORDS = "accounting_sync_last_run_records"
LAST_RUN_STATUS = "accounting_sync_last_run_status"
RUNNING_SINCE_TIMESTAMP = "accounting_sync_running_run_started_timestamp_seconds"

# The exporter itself, no labels.
SOURCE_UP = "accounting_sync_exporter_source_up"
LAST_REFRESH_TIMESTAMP = "accounting_sync_exporter_last_refresh_timestamp_seconds"
REFRESH_DURATION = "accounting_sync_exporter_refresh_duration_seconds"
REFRESH_FAILURES = "accounting_sync_exporter_refresh_failures"  # counter, _total on the wire
REFRESHES = "accounting_sync_exporter_refreshes"  # counter by trigger, _total on the wire
INTEGRATIONS = "accounting_sync_exporter_integrations"
BUILD_INFO = "accounting_sync_exporter_build"  # info, _info on the wire

INTEGRATION_LABELS = ("org", "connector")
