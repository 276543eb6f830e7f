"""`jobrunner metrics`: a Prometheus exporter for what Flower does not show, behind basic auth.

Gauges (queues, workers, alerts) are read from Redis at scrape time; counters and histograms are
kept in Redis by JobStore (worker/store/jobs.py), in the same calls that record jobs, so every
process that submits or finishes jobs contributes and nothing is lost when the exporter restarts.
The exporter's loop also evaluates the alert rules (alerts.py). One exporter per deployment.
"""

from __future__ import annotations

import base64
import hmac
import logging
import threading
import time
from collections.abc import Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import redis
from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector

from jobrunner.config import TIERS, Settings
from jobrunner.worker.broker import connection
from jobrunner.worker.broker.keys import DEAD_LETTERS, METRICS
from jobrunner.worker.broker.queues import queue_stats
from jobrunner.worker.monitoring import alerts
from jobrunner.worker.monitoring.flower import Credentials, generated, parse_basic_auth
from jobrunner.worker.store import heartbeat, step_stats
from jobrunner.worker.store.audit import DENIED
from jobrunner.worker.store.control import PauseStore
from jobrunner.worker.store.jobs import SEP, bound_field

AUTH_FILE = "metrics.auth"
MB = 1024 * 1024
log = logging.getLogger("jobrunner.metrics")


def credentials(settings: Settings) -> Credentials:
    """Configured credentials, else ones generated once into <data_dir>/metrics.auth."""
    if settings.metrics.basic_auth:
        auth = parse_basic_auth(settings.metrics.basic_auth, "metrics.basic_auth")
        return Credentials(auth, "JOBRUNNER_METRICS__BASIC_AUTH / metrics.basic_auth")
    path = settings.data_dir / AUTH_FILE
    return Credentials(generated(path), f"generated, in {path}")


def url(settings: Settings) -> str:
    return f"http://{settings.metrics.address}:{settings.metrics.port}/metrics"


def _number(text: str) -> int | float:
    """A counter field: an integer (HINCRBY) or a float sum (HINCRBYFLOAT, maybe 1e-05)."""
    try:
        return int(text)
    except ValueError:
        return float(text)


def counter_families(
    fields: dict[str, Any], names: dict[str, tuple[str, str]], labels: list[str]
) -> list[CounterMetricFamily]:
    """Counter families from the metrics hash, whose fields read `<head>|<label>|<label>`:
    `names` maps each head to its metric name and help."""
    families = {
        head: CounterMetricFamily(name, doc, labels=labels) for head, (name, doc) in names.items()
    }
    for key, value in sorted(fields.items()):
        head, *values = key.rsplit(SEP, len(labels))
        if head in families and len(values) == len(labels):
            families[head].add_metric(values, value)
    return list(families.values())


def histogram_families(
    fields: dict[str, int | float],
    head: str,
    bounds: Sequence[float],
    family: HistogramMetricFamily,
    labels: int,
) -> HistogramMetricFamily:
    """Fill `family` from the stored per-bucket counts of histogram `head`, whose fields read
    `<head>|<label>...|<bound | +Inf | sum | count>`, with `labels` labels."""
    prefix = head + SEP
    label_sets = sorted(
        {
            tuple(key[len(prefix) :].split(SEP)[:labels])
            for key in fields
            if key.startswith(prefix) and key.endswith(SEP + "count")
        }
    )
    for values in label_sets:
        base = prefix + SEP.join(values) + SEP
        running = 0.0
        buckets = []
        for bound in bounds:
            running += fields.get(base + bound_field(bound), 0)
            buckets.append((bound_field(bound), running))
        buckets.append(("+Inf", float(fields[base + "count"])))
        family.add_metric(list(values), buckets, float(fields.get(base + "sum", 0.0)))
    return family


class JobrunnerCollector(Collector):
    """Reads Redis at every scrape: a few pipelined round trips, whatever the fleet's size."""

    def __init__(self, settings: Settings, broker_redis: redis.Redis, results: redis.Redis):
        self.settings = settings
        self.broker = broker_redis
        self.results = results

    def collect(self) -> Iterator[Metric]:
        yield from self._queues()
        with self.results.pipeline(transaction=False) as pipe:
            pipe.hgetall(METRICS)
            pipe.zcard(DEAD_LETTERS)
            raw, dead = pipe.execute()
        fields = {key.decode(): _number(value.decode()) for key, value in raw.items()}
        yield from self._jobs(fields)
        yield from self._data_flow(fields)
        yield from counter_families(  # written by the audit trail (worker/store/audit.py)
            fields,
            {DENIED: ("jobrunner_denied_calls", "Calls refused: no valid token, role or scope")},
            ["action"],
        )
        yield from self._steps(fields)
        letters = GaugeMetricFamily("jobrunner_dead_letters", "Failed jobs kept in the DLQ")
        letters.add_metric([], dead)
        yield letters
        yield from self._workers(heartbeat.read_all(self.results))
        now_firing = alerts.firing(self.results)
        firing = {alert["rule"] for alert in now_firing}
        alert = GaugeMetricFamily(
            "jobrunner_alert_firing", "1 while the alert rule's condition holds", labels=["rule"]
        )
        for rule in self.settings.alerts.rules:
            alert.add_metric([rule.name], 1.0 if rule.name in firing else 0.0)
        yield alert
        anomaly = GaugeMetricFamily(
            "jobrunner_anomaly_firing",
            "1 while a step's latest run is outside its own recent range (present only then)",
            labels=["pipeline", "step", "measure"],
        )
        for found in now_firing:
            if found["kind"] == alerts.ANOMALY:
                labels = found["labels"]
                anomaly.add_metric([labels["pipeline"], labels["step"], labels["measure"]], 1.0)
        yield anomaly

    def _queues(self) -> Iterator[Metric]:
        depth = GaugeMetricFamily(
            "jobrunner_queue_depth", "Messages waiting in the queue", labels=["tier", "queue"]
        )
        age = GaugeMetricFamily(
            "jobrunner_queue_oldest_age_seconds",
            "Age of the queue's oldest waiting message (0 when empty)",
            labels=["tier", "queue"],
        )
        paused = GaugeMetricFamily(
            "jobrunner_tier_paused",
            "1 while the tier is paused (`jobrunner pause`)",
            labels=["tier"],
        )
        pauses = PauseStore(self.broker).paused()
        for tier in TIERS:
            paused.add_metric([tier], 1.0 if tier in pauses else 0.0)
        for stat in queue_stats(self.broker, self.settings):
            depth.add_metric([stat.tier, stat.queue], stat.depth)
            age.add_metric([stat.tier, stat.queue], stat.oldest_age_s)
        yield paused
        yield depth
        yield age

    def _jobs(self, fields: dict[str, Any]) -> Iterator[Metric]:
        yield from counter_families(
            fields,
            {
                SEP.join(("jobs", outcome)): (f"jobrunner_jobs_{outcome}", f"Jobs {outcome}")
                for outcome in ("submitted", "succeeded", "failed", "cancelled")
            },
            ["pipeline", "tier"],
        )
        metrics = self.settings.metrics
        for name, bounds, meaning in (
            ("wait", metrics.wait_buckets_s, "submission to the first step starting"),
            ("run", metrics.run_buckets_s, "the first step starting to the job finishing"),
        ):
            family = HistogramMetricFamily(
                f"jobrunner_job_{name}_seconds", f"Seconds from {meaning}", labels=["tier"]
            )
            yield histogram_families(fields, name, bounds, family, 1)

    def _data_flow(self, fields: dict[str, Any]) -> Iterator[Metric]:
        """Rows in, out and quarantined per pipeline step (data pipelines' lineage facts)."""
        yield from counter_families(
            fields,
            {
                f"rows_{kind}": (f"jobrunner_step_rows_{kind}", f"Rows {kind} per step")
                for kind in ("in", "out", "quarantined")
            },
            ["pipeline", "step"],
        )

    def _steps(self, fields: dict[str, Any]) -> Iterator[Metric]:
        """Per {pipeline, step}: run outcomes, run time, queue wait, peak RSS, bytes read and
        written, and the figures steps report with ctx.metric (per name)."""
        labels = ["pipeline", "step"]
        yield from counter_families(
            fields,
            {
                f"step_runs{SEP}{outcome}": (
                    f"jobrunner_step_runs_{outcome}",
                    f"Step runs {outcome}",
                )
                for outcome in step_stats.OUTCOMES
            },
            labels,
        )
        yield from counter_families(
            fields,
            {
                f"step_{kind}_bytes": (f"jobrunner_step_{kind}_bytes", f"Bytes step runs {kind}")
                for kind in ("read", "written")
            },
            labels,
        )
        metrics = self.settings.metrics
        for head, name, bounds, meaning in (
            ("step_run", "step_run_seconds", metrics.run_buckets_s, "Seconds one step run took"),
            ("step_wait", "step_wait_seconds", metrics.wait_buckets_s, "Seconds queued per run"),
            ("step_rss", "step_peak_rss_bytes", step_stats.RSS_BUCKETS_BYTES, "Peak RSS per run"),
        ):
            family = HistogramMetricFamily(f"jobrunner_{name}", meaning, labels=labels)
            yield histogram_families(fields, head, bounds, family, len(labels))
        reported = GaugeMetricFamily(
            "jobrunner_step_metric",
            "The last value a step reported with ctx.metric",
            labels=[*labels, "name"],
        )
        for key, value in sorted(step_stats.latest_values(self.results).items()):
            reported.add_metric(list(key), value)
        yield reported

    def _workers(self, beats: list[dict[str, str]]) -> Iterator[Metric]:
        """Each live worker's heartbeat: concurrency, load, memory headroom, admission state."""
        specs = [  # metric, heartbeat field, scale, help
            ("processes", "processes", 1, "Pool processes now"),
            ("min_processes", "min_processes", 1, "Autoscaler's lower bound"),
            ("max_processes", "max_processes", 1, "Autoscaler's upper bound"),
            ("running_steps", "running", 1, "Steps running"),
            ("held_steps", "held", 1, "Steps held by admission control"),
            ("cpus", "cpus", 1, "CPUs of the worker's host"),
            ("load_per_cpu", "load_per_cpu", 1, "1-minute load average per CPU"),
            ("cpu_utilization_ratio", "cpu_percent", 0.01, "Host CPU utilization (0-1)"),
            ("memory_total_bytes", "memory_total_mb", MB, "Host memory"),
            ("memory_available_bytes", "memory_available_mb", MB, "Host memory available"),
            ("memory_reserve_bytes", "memory_reserve_mb", MB, "Memory never handed to steps"),
        ]
        labels = ["node", "pool"]
        families: dict[str, GaugeMetricFamily] = {}
        for metric, _, _, meaning in specs:
            families[metric] = GaugeMetricFamily(
                f"jobrunner_worker_{metric}", meaning, labels=labels
            )
        headroom = GaugeMetricFamily(
            "jobrunner_worker_memory_headroom_bytes",
            "Available memory above the reserve: what steps may still take",
            labels=labels,
        )
        admitting = GaugeMetricFamily(
            "jobrunner_worker_admitting", "1 if admitting work, 0 if paused", labels=labels
        )
        age = GaugeMetricFamily(
            "jobrunner_worker_heartbeat_age_seconds", "Since the last heartbeat", labels=labels
        )
        now = time.time()
        for beat in beats:
            key = [beat.get("node", ""), beat.get("pool", "")]
            for metric, source, scale, _ in specs:
                if beat.get(source):
                    families[metric].add_metric(key, float(beat[source]) * scale)
            available = int(beat.get("memory_available_mb") or 0)
            headroom.add_metric(key, (available - int(beat.get("memory_reserve_mb") or 0)) * MB)
            admitting.add_metric(key, 1.0 if beat.get("state") == "admitting" else 0.0)
            age.add_metric(key, max(0.0, now - float(beat.get("updated_at") or now)))
        yield from families.values()
        yield from (headroom, admitting, age)


def _handler(registry: CollectorRegistry, expected: bytes) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        """GET /metrics with the right basic-auth header; 401 otherwise, never an open port."""

        def do_GET(self) -> None:
            given = self.headers.get("Authorization", "").encode()
            if not hmac.compare_digest(given, expected):
                self._reply(401, b"authentication required\n", "text/plain; charset=utf-8")
                return
            if self.path.split("?", 1)[0] != "/metrics":
                self._reply(404, b"see /metrics\n", "text/plain; charset=utf-8")
                return
            try:
                body = generate_latest(registry)
            except redis.RedisError as error:
                self._reply(503, f"redis: {error}\n".encode(), "text/plain; charset=utf-8")
                return
            self._reply(200, body, CONTENT_TYPE_LATEST)

        def _reply(self, code: int, body: bytes, content_type: str) -> None:
            self.send_response(code)
            if code == 401:
                self.send_header("WWW-Authenticate", 'Basic realm="jobrunner metrics"')
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            log.debug(format, *args)

    return Handler


class Exporter:
    """The HTTP endpoint plus the alert loop; `run()` serves until `stop()` (or a signal)."""

    def __init__(self, settings: Settings, creds: Credentials) -> None:
        self.settings = connection.resolve(settings)
        broker_url = connection.require_url(self.settings)
        self.broker = connection.client(broker_url)
        self.results = connection.client(self.settings.effective_result_url)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(JobrunnerCollector(self.settings, self.broker, self.results))
        token = base64.b64encode(creds.basic_auth.encode()).decode()
        handler = _handler(self.registry, f"Basic {token}".encode())
        metrics = self.settings.metrics
        self.server = ThreadingHTTPServer((metrics.address, metrics.port), handler)
        self.server.daemon_threads = True
        self.evaluator = alerts.Evaluator(self.settings, self.broker, self.results)
        self.stopping = threading.Event()

    def run(self) -> None:
        serving = threading.Thread(target=self.server.serve_forever, name="metrics-http")
        serving.start()
        try:
            while not self.stopping.is_set():
                try:
                    self.evaluator.evaluate()
                except redis.RedisError as error:  # a broker hiccup: the next round retries
                    log.error("alert evaluation failed: %s", error)
                self.stopping.wait(self.settings.alerts.interval_s)
        finally:
            self.server.shutdown()
            serving.join()
            self.server.server_close()

    def stop(self) -> None:
        self.stopping.set()
