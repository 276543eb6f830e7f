"""Watching the fleet: `jobrunner status`, the Prometheus exporter, alerts, Flower and lineage."""
