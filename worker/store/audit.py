"""The audit trail: who did what, when, from where, and how it ended, in one Redis stream.

Every state-changing call (submit, cancel, pause, resume, retry, purge, token create/revoke,
deploy) and every refused call appends one entry; nothing edits or deletes entries but the
retention (XADD's MINID trim, so the stream never outgrows `security.audit_retention_days`). A
refused call also counts in the metrics hash, which the exporter serves as
`jobrunner_denied_calls_total`: a spike is a security signal.
"""

from __future__ import annotations

import getpass
import socket
import time
from typing import Any

import redis

from jobrunner.config import Settings
from jobrunner.worker.broker.keys import AUDIT, METRICS
from jobrunner.worker.store.jobs import SEP

OK, DENIED, FAILED = "ok", "denied", "failed"
# Metrics-hash field "denied|<action>": refused calls, served as jobrunner_denied_calls_total.


def local_caller() -> tuple[str, str]:
    """(who, where) for a command run on a host: the local user and the host name."""
    return f"local:{getpass.getuser()}", socket.gethostname()


class AuditLog:
    def __init__(self, client: redis.Redis, retention_s: float) -> None:
        self.redis = client
        self.retention_s = retention_s

    def record(
        self, who: str, action: str, target: str, outcome: str, where: str = "", detail: str = ""
    ) -> None:
        """Append one entry (and count a refusal), in one round trip."""
        now = time.time()
        entry = {
            "who": who,
            "action": action,
            "target": target,
            "outcome": outcome,
            "where": where,
            "detail": detail[:500],
            "time": repr(now),
        }
        oldest_ms = int((now - self.retention_s) * 1000)
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.xadd(AUDIT, entry, minid=oldest_ms, approximate=True)
            if outcome == DENIED:
                pipe.hincrby(METRICS, SEP.join((DENIED, action)), 1)
            pipe.execute()

    def read(self, since: float | None = None, count: int | None = None) -> list[dict[str, Any]]:
        """Entries from `since` (epoch seconds; default: all kept), oldest first."""
        start = f"{int(since * 1000)}-0" if since is not None else "-"
        rows = self.redis.xrange(AUDIT, min=start, count=count)
        entries = []
        for entry_id, fields in rows:
            entry: dict[str, Any] = {k.decode(): v.decode() for k, v in fields.items()}
            entry["id"] = entry_id.decode()
            entry["time"] = float(entry["time"])
            entries.append(entry)
        return entries


def audit_log(client: redis.Redis, settings: Settings) -> AuditLog:
    """The audit log on `client` (the result Redis), with the configured retention."""
    return AuditLog(client, settings.security.audit_retention_days * 86400)
