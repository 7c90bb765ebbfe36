"""Observability: engine-neutral request statistics, the daemon's Prometheus registry and endpoint."""
