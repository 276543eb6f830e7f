"""Alerts: the rules of `[alerts]` evaluated in one place, the exporter's loop (metrics.py).

Besides the configured rules, anomaly alerts (`[alerts.anomaly]`) judge the latest run of every
step against the same step's own recent runs, per measure (worker/store/step_stats.py): no
threshold to set, the step's history is the baseline.

A rule that starts firing is logged, stored in Redis (where `jobrunner status` and the exporter's
`jobrunner_alert_firing` read it) and, with `alerts.webhook_url` set, POSTed as JSON; when its
condition ends it is cleared the same way. The store expires unless refreshed, so alerts of an
exporter that stopped do not linger.
"""

from __future__ import annotations

import json
import logging
import statistics
import time
import urllib.error
import urllib.request
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Any

import redis

from jobrunner.config import Settings
from jobrunner.config.settings import AlertRule, AnomalySettings
from jobrunner.worker.broker.keys import ALERTS, METRICS
from jobrunner.worker.broker.queues import queue_stats
from jobrunner.worker.store import heartbeat, step_stats
from jobrunner.worker.store.control import PauseStore
from jobrunner.worker.store.jobs import SEP

KEEP_INTERVALS = 4  # the store outlives this many missed evaluations
ANOMALY = "anomaly"  # the kind of anomaly alerts; their rule names start with it
MAD_SCALE = 1.4826  # MAD x this estimates the standard deviation of normally spread values

log = logging.getLogger("jobrunner.alerts")


@dataclass(frozen=True)
class Alert:
    rule: str
    kind: str
    value: float
    threshold: float
    message: str
    since: float
    labels: dict[str, str] = field(default_factory=dict)  # anomaly: pipeline, step, measure
    expected: list[float] | None = None  # anomaly: the range the step's history expects


def expected_range(history: list[float], config: AnomalySettings) -> tuple[float, float] | None:
    """(low, high) a new value of a measure is expected in, from the values before it: median
    +/- tolerance x the scaled MAD (never narrower than min_spread x the median); None while
    there are fewer than min_runs values. Robust: one odd run in the history barely moves it."""
    if len(history) < config.min_runs:
        return None
    median = statistics.median(history)
    mad = statistics.median(abs(value - median) for value in history)
    spread = max(MAD_SCALE * mad, config.min_spread * abs(median), 1e-9)
    return median - config.tolerance * spread, median + config.tolerance * spread


def anomalies(
    series: dict[tuple[str, str, str], list[float]], config: AnomalySettings
) -> dict[str, tuple[dict[str, str], float, tuple[float, float]]]:
    """Rule name -> (labels, latest value, expected range) of every measure whose latest run
    (the first value; the rest are the runs before it) lies outside its expected range."""
    found = {}
    for (pipeline, step, measure), values in series.items():
        window = expected_range(values[1 : config.history], config)
        if window is not None and not window[0] <= values[0] <= window[1]:
            labels = {"pipeline": pipeline, "step": step, "measure": measure}
            found[f"{ANOMALY}:{pipeline}:{step}:{measure}"] = (labels, values[0], window)
    return found


def firing(client: redis.Redis) -> list[dict[str, Any]]:
    """The alerts firing now, by rule name."""
    return [json.loads(raw) for _, raw in sorted(client.hgetall(ALERTS).items())]


def _outcomes(fields: dict[bytes, bytes], rule: AlertRule) -> tuple[int, int]:
    """(succeeded, failed) job totals matching the rule's tier and pipeline filters."""
    totals = {"succeeded": 0, "failed": 0}
    for raw, count in fields.items():
        parts = raw.decode().split(SEP)
        if len(parts) != 4 or parts[0] != "jobs" or parts[1] not in totals:
            continue
        _, outcome, pipeline, tier = parts
        if rule.tier not in (None, tier) or rule.pipeline not in (None, pipeline):
            continue
        totals[outcome] += int(count)
    return totals["succeeded"], totals["failed"]


class Evaluator:
    """Evaluates every rule against Redis; keeps the counter history failure rates need."""

    def __init__(self, settings: Settings, broker: redis.Redis, results: redis.Redis) -> None:
        self.settings = settings
        self.config = settings.alerts
        self.broker = broker
        self.results = results
        self.samples: dict[str, deque[tuple[float, int, int]]] = {
            rule.name: deque() for rule in self.config.rules
        }
        self.active: dict[str, Alert] = {alert["rule"]: Alert(**alert) for alert in firing(results)}

    def _failure_rate(
        self, rule: AlertRule, now: float, counters: dict[bytes, bytes]
    ) -> float | None:
        """Failed / finished over the window, once min_jobs finished in it; None before."""
        succeeded, failed = _outcomes(counters, rule)
        samples = self.samples[rule.name]
        samples.append((now, succeeded, failed))
        while len(samples) > 1 and samples[1][0] <= now - rule.window_s:
            samples.popleft()  # the newest sample at least a window old is the baseline
        _, base_ok, base_failed = samples[0]
        done_ok, done_failed = succeeded - base_ok, failed - base_failed
        if done_ok < 0 or done_failed < 0:  # the counters were reset: start again
            samples.clear()
            samples.append((now, succeeded, failed))
            return None
        finished = done_ok + done_failed
        return done_failed / finished if finished >= rule.min_jobs else None

    def check(self, now: float | None = None) -> dict[str, Alert]:
        """The alerts whose condition holds now, by rule name."""
        now = time.time() if now is None else now
        counters = self.results.hgetall(METRICS)
        stats = queue_stats(self.broker, self.settings, now)
        beats = heartbeat.read_all(self.results)
        paused = PauseStore(self.broker).paused()
        holding: dict[str, Alert] = {}
        for rule in self.config.rules:
            value: float | None = None
            message = ""
            if rule.kind == "failure_rate":
                value = self._failure_rate(rule, now, counters)
                if value is not None and value > rule.threshold:
                    scope = "".join(
                        f" {k} {v}"
                        for k, v in (("tier", rule.tier), ("pipeline", rule.pipeline))
                        if v
                    )
                    message = f"{value:.0%} of jobs{scope} failed in the last {rule.window_s:g} s"
            elif rule.kind == "oldest_wait" and rule.tier not in paused:  # paused, not stuck
                ages = [s.oldest_age_s for s in stats if s.tier == rule.tier]
                value = max(ages, default=0.0)
                if value > rule.threshold:
                    message = f"the oldest {rule.tier} job has waited {value:.0f} s"
            elif rule.kind == "memory_headroom":
                short = {
                    beat["node"]: int(beat.get("memory_available_mb") or 0)
                    - int(beat.get("memory_reserve_mb") or 0)
                    for beat in beats
                }
                low = {node: mb for node, mb in short.items() if mb < rule.threshold}
                value = min(low.values(), default=None)
                if low:
                    listed = ", ".join(f"{node} {mb} MB" for node, mb in sorted(low.items()))
                    message = f"memory headroom below {rule.threshold:g} MB: {listed}"
            if message and value is not None:
                since = self.active[rule.name].since if rule.name in self.active else now
                holding[rule.name] = Alert(
                    rule.name, rule.kind, round(value, 3), rule.threshold, message, since
                )
        if self.config.anomaly.enabled:
            holding.update(self._anomalies(now))
        return holding

    def _anomalies(self, now: float) -> dict[str, Alert]:
        series = step_stats.histories(self.results)
        holding = {}
        for name, (labels, value, (low, high)) in anomalies(series, self.config.anomaly).items():
            message = (
                f"step {labels['step']} of {labels['pipeline']}: {labels['measure']} {value:.4g}, "
                f"outside its recent range {max(low, 0.0):.4g}..{high:.4g}"
            )
            since = self.active[name].since if name in self.active else now
            bound = high if value > high else low
            holding[name] = Alert(
                name,
                ANOMALY,
                round(value, 6),
                round(bound, 6),
                message,
                since,
                labels,
                [round(low, 6), round(high, 6)],
            )
        return holding

    def evaluate(self, now: float | None = None) -> list[tuple[str, Alert]]:
        """Check every rule and publish the changes: [("firing" | "resolved", alert)]."""
        holding = self.check(now)
        changes = [("firing", a) for name, a in holding.items() if name not in self.active]
        changes += [("resolved", a) for name, a in self.active.items() if name not in holding]
        keep_s = max(60, int(KEEP_INTERVALS * self.config.interval_s))
        with self.results.pipeline() as pipe:
            pipe.delete(ALERTS)
            if holding:
                pipe.hset(ALERTS, mapping={n: json.dumps(asdict(a)) for n, a in holding.items()})
                pipe.expire(ALERTS, keep_s)
            pipe.execute()
        self.active = holding
        for status, alert in changes:
            if status == "firing":
                log.warning("alert %s firing: %s", alert.rule, alert.message)
            else:
                log.warning("alert %s resolved", alert.rule)
            self._notify(status, alert)
        return changes

    def _notify(self, status: str, alert: Alert) -> None:
        """POST the change to the webhook; a failing webhook is logged, never fatal."""
        url = self.config.webhook_url
        if not url:
            return
        body = json.dumps({"status": status, **asdict(alert), "at": time.time()}).encode()
        request = urllib.request.Request(
            url, data=body, method="POST", headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=self.config.webhook_timeout_s) as reply:
                reply.read()
        except (urllib.error.URLError, OSError, ValueError) as error:
            log.error("alert webhook %s failed: %s", url, error)
