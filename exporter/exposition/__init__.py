"""From a served state to Prometheus exposition: the metric table, the collector, the fast
text format, and the body cached per refresh. Pure: no I/O."""
