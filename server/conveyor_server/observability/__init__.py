"""Metrics and recorded history for operators: the Prometheus implementation of the core's
Metrics seam, the in-memory per-minute history behind the dashboard's graphs, and the small
HTTP server both are served with. The only place the prometheus client library is imported."""
