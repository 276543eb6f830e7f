"""Reading the exporter's /metrics as samples."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import Server


def scrape(server: Server) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of one scrape, keyed by (name, sorted labels)."""
    reply = server.get("/metrics")
    assert reply.status == 200, reply.body
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(reply.body.decode())
        for sample in family.samples
    }


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)
