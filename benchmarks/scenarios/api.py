"""The HTTP API against the Python client, in the same run on the same worker: the latency of a
submission (POST /jobs vs `Client.submit`) and of submit-then-wait for a no-op job's result
(POST + GET ?wait= vs `submit` + `Job.wait`). The API is `jobrunner api` (uvicorn), called over
one keep-alive connection, as a service would."""

from __future__ import annotations

import http.client
import json
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

from jobrunner.benchmarks.harness import Launch, fleet, progress
from jobrunner.benchmarks.report import Row, row
from jobrunner.benchmarks.scenarios import Bench
from jobrunner.worker.broker.embedded import free_port
from jobrunner.worker.store.tokens import TokenStore

NAME = "api"
WAIT_S = 30


class _Http:
    """JSON over one keep-alive connection, with a bearer token."""

    def __init__(self, port: int, token: str) -> None:
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        self.headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body)
        self.connection.request(method, path, data, self.headers)
        answer = self.connection.getresponse()
        return answer.status, json.loads(answer.read())

    def ready(self) -> bool:
        try:
            return self.call("GET", "/pipelines")[0] == 200
        except OSError:
            self.connection.close()
            return False


def _median_ms(work: Callable[[], object], count: int) -> float:
    took = []
    for _ in range(count):
        began = time.perf_counter()
        work()
        took.append((time.perf_counter() - began) * 1000)
    return statistics.median(took)


def run(bench: Bench) -> list[Row]:
    client = bench.jobrunner.client
    token = TokenStore(client.store.redis).create("submitter", created_by="bench")[1]
    port = free_port()
    api = _Http(port, token)
    server = Launch(
        "api",
        [sys.executable, "-m", "jobrunner", "api"],
        {"JOBRUNNER_API__PORT": str(port)},
        api.ready,
    )
    count = bench.plan.probes * 2
    job = {"pipeline": "bench_echo", "tier": "high"}

    def api_submit() -> str:
        status, body = api.call("POST", "/jobs", job)
        assert status == 202, body
        return str(body["job_id"])

    def api_result() -> None:
        status, body = api.call("GET", f"/jobs/{api_submit()}?wait={WAIT_S}")
        assert status == 200 and body["state"] == "SUCCESS", body

    def client_submit() -> None:
        client.submit("bench_echo", tier="high")

    def client_result() -> None:
        client.submit("bench_echo", tier="high").wait(WAIT_S)

    launches = [*bench.jobrunner.launches("general", "api"), server]
    with fleet(bench.log_dir, launches):
        for warm in (api_result, client_result):
            _median_ms(warm, 3)
        submit = _median_ms(api_submit, count), _median_ms(client_submit, count)
        result = _median_ms(api_result, count), _median_ms(client_result, count)
    progress(f"api: submit {submit[0]:.2f} ms (client {submit[1]:.2f} ms)")
    progress(f"api: submit+wait {result[0]:.2f} ms (client {result[1]:.2f} ms)")
    baseline = "Python client"
    return [
        row(NAME, "submit latency, median (ms)", baseline, *submit, "lower"),
        row(NAME, "submit + long-poll to result, median (ms)", baseline, *result, "lower"),
    ]
