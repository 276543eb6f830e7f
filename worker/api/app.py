"""The HTTP API: FastAPI routes over the same Client, job store and dead-letter store the CLI
uses, so validation and errors are the CLI's (as problem+json, worker/api/problems.py).

Every route needs a bearer token (worker/store/tokens.py): none or a bad one is 401, one whose
role or scope does not cover the call is 403; each refusal and each state-changing call is
audited (worker/store/audit.py). Blocking work (Redis, Celery's send, argon2) runs in the
threadpool; waiting does not hold a thread: a long-poll or an event stream awaits BLMOVE on the
job's done list (the list `Job.wait` blocks on) with an asyncio Redis client.
"""

import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any, Literal, TypeVar

import redis.asyncio as aioredis
from fastapi import Depends, FastAPI, Header, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field

from jobrunner.config import JobrunnerError, Settings
from jobrunner.tasks.pipeline import Pipeline
from jobrunner.worker.api import problems
from jobrunner.worker.api.problems import Problem
from jobrunner.worker.broker.keys import IDEMPOTENCY, job_keys
from jobrunner.worker.client import Client, JobError, validate_payload
from jobrunner.worker.monitoring.status import step_tree
from jobrunner.worker.store.audit import DENIED, FAILED, OK, audit_log
from jobrunner.worker.store.dead_letters import DeadLetterStore
from jobrunner.worker.store.jobs import JobRecord
from jobrunner.worker.store.tokens import (
    OPERATE,
    READ,
    SUBMIT,
    AuthError,
    Denied,
    Token,
    TokenStore,
)

T = TypeVar("T")
EVENT_BLOCK_S = 1.0  # an event stream re-reads the step list at least this often
KEEPALIVE_S = 15.0  # an idle event stream sends a comment this often (proxies close silent ones)
# Declares the scheme in the OpenAPI document; missing or malformed headers come through as None.
BEARER = HTTPBearer(
    auto_error=False, bearerFormat="jr_<id>.<secret>", description="`jobrunner tokens create`"
)


class JobRequest(BaseModel):
    """POST /jobs: the fields of `jobrunner submit`."""

    model_config = ConfigDict(extra="forbid")
    pipeline: str
    tier: str | None = Field(default=None, description="high, medium or low (default: config)")
    payload: Any = Field(default=None, description="a JSON object, checked by the pipeline")
    idempotency_key: str | None = Field(default=None, description="same key, same job")
    deadline_s: float | None = Field(default=None, description="fail it if unfinished by then")
    cache: bool = Field(default=True, description="false: run every cached step again")


class BatchRequest(BaseModel):
    """POST /jobs:batch: one job per payload, all of one pipeline and tier."""

    model_config = ConfigDict(extra="forbid")
    pipeline: str
    tier: str | None = None
    payloads: list[Any] = Field(min_length=1)
    deadline_s: float | None = None
    cache: bool = True  # false: run every cached step again


class Api:
    """What the routes share: one client, token store, audit log and asyncio Redis client."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.client = Client(settings)
        store = self.client.store
        self.tokens = TokenStore(store.redis)
        self.audit = audit_log(store.redis, settings)
        self.letters = DeadLetterStore(store.redis, store.cipher)
        self.waiting = aioredis.Redis.from_url(
            settings.effective_result_url, socket_timeout=None, socket_connect_timeout=5
        )

    def caller(
        self,
        request: Request,
        bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)],
    ) -> Token:
        """The request's live token, or 401 (audited and counted as denied)."""
        try:
            if bearer is None:
                raise AuthError("no bearer token (Authorization: Bearer jr_<id>.<secret>)")
            return self.tokens.authenticate(bearer.credentials)
        except AuthError as error:
            self.audit.record(
                "anonymous", "authenticate", request.url.path, DENIED, where(request), str(error)
            )
            raise Problem(401, str(error), {"WWW-Authenticate": "Bearer"}) from None

    def allow(
        self,
        token: Token,
        request: Request,
        action: str,
        target: str,
        *,
        pipeline: str | None = None,
        tier: str | None = None,
    ) -> None:
        """403 (audited and counted) unless the token's role and scope cover the call."""
        try:
            token.check(action, pipeline, tier)
        except Denied as error:
            self.audit.record(token.who, action, target, DENIED, where(request), str(error))
            raise Problem(403, str(error)) from None

    def record(self, token: Token, request: Request, what: str, target: str, detail: str) -> None:
        self.audit.record(token.who, what, target, OK, where(request), detail)

    def act(
        self, token: Token, request: Request, what: str, target: str, call: Callable[[], T]
    ) -> T:
        """A control call (cancel, pause, resume), its failure audited. A JobError is the
        target's state refusing it (a job already finished, a tier not paused): 409."""
        try:
            return call()
        except JobrunnerError as error:
            self.audit.record(token.who, what, target, FAILED, where(request), str(error))
            if isinstance(error, JobError):
                raise Problem(409, str(error)) from None
            raise

    def switch_tier(
        self, token: Token, request: Request, what: Literal["pause", "resume"], tier: str
    ) -> dict[str, dict[str, Any]]:
        """Pause or resume a tier fleet-wide, allowed and audited; every pause then in force."""
        self.allow(token, request, OPERATE, tier, tier=tier)
        switch = self.client.pause if what == "pause" else self.client.resume
        pauses = self.act(token, request, what, tier, lambda: switch(tier, by=token.who))
        self.record(token, request, what, tier, f"tier {tier}")
        return pauses

    def job(self, token: Token, request: Request, job_id: str) -> JobRecord:
        """The job's record, if the token may read its pipeline; else 404 or 403."""
        record = self.client.store.get(job_id)
        if record is None:
            raise Problem(404, f"unknown job {job_id} (never submitted, or expired)")
        self.allow(token, request, READ, job_id, pipeline=record.pipeline)
        return record

    def view(self, record: JobRecord) -> dict[str, Any]:
        """A job as GET /jobs/{id} shows it: the record, its timings and its step tree."""
        data = record.as_dict()
        data.update(wait_s=record.wait_s, run_s=record.run_s, total_s=record.total_s)
        data["steps"] = step_tree(self.client, record.id, record.pipeline)
        return data

    async def wait(self, job_id: str, timeout_s: float) -> JobRecord | None:
        """`JobStore.wait` without holding a thread: block on the done list, asynchronously."""
        done = job_keys(job_id).done
        deadline = time.monotonic() + timeout_s
        while True:
            record = await run_in_threadpool(self.client.store.get, job_id)
            left = deadline - time.monotonic()
            if record is None or record.finished or left <= 0:
                return record
            # As JobStore.wait: pop and push back wakes every waiter and consumes nothing.
            await self.waiting.blmove(done, done, min(left, 5.0), "LEFT", "RIGHT")

    async def events(self, job_id: str, after: int) -> AsyncIterator[str]:
        """The job's events as SSE: `started`, one `step` per task run as it ends (its id the
        run's index, so a reconnect with Last-Event-ID resumes), then `finished`."""
        keys = job_keys(job_id)
        cursor, started, idle = after + 1, False, 0.0
        while True:
            record = await run_in_threadpool(self.client.store.get, job_id)
            if record is None:
                yield sse("gone", {"id": job_id, "detail": "the job's record expired"})
                return
            if record.started_at is not None and not started:
                started = True
                yield sse("started", {"id": job_id, "started_at": record.started_at})
            runs = await self.waiting.lrange(keys.steps, cursor, -1)
            for raw in runs:
                yield sse("step", json.loads(raw), event_id=cursor)
                cursor += 1
            if record.finished:  # finishing writes the final run and the state at once
                yield sse("finished", summary(record))
                return
            if not runs and idle >= KEEPALIVE_S:
                idle = 0.0
                yield ": keepalive\n\n"
            began = time.monotonic()
            await self.waiting.blmove(keys.done, keys.done, EVENT_BLOCK_S, "LEFT", "RIGHT")
            idle += time.monotonic() - began


def where(request: Request) -> str:
    return request.client.host if request.client else ""


def sse(event: str, data: Any, *, event_id: int | None = None) -> str:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, default=str)}\n\n"


def summary(record: JobRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "state": record.state,
        "result": record.result,
        "error": record.error,
        "total_s": record.total_s,
    }


def describe(pipeline: Pipeline) -> dict[str, Any]:
    return {
        "name": pipeline.name,
        "description": pipeline.description,
        "version": pipeline.version,
        "steps": pipeline.steps(),
        "flow": pipeline.flow.model_dump(mode="json"),
        "payload_schema": pipeline.payload_model().model_json_schema(),
    }


def create_api(settings: Settings) -> FastAPI:
    """The FastAPI app on `settings` (serve it with worker/api/serve.py)."""
    api = Api(settings)
    app = FastAPI(
        title="jobrunner",
        description="Submit, wait for and follow jobs; every route needs a bearer token.",
        version="1",
        openapi_url=None,  # served below, behind a token like every other route
        docs_url=None,
        redoc_url=None,
        exception_handlers=problems.HANDLERS,
    )
    Caller = Annotated[Token, Depends(api.caller)]
    slack = 16384  # the envelope around the payloads
    body_caps = {
        "/jobs": settings.limits.payload_max_bytes + slack,
        "/jobs:batch": settings.limits.payload_max_bytes * settings.api.max_batch + slack,
    }

    @app.middleware("http")
    async def refuse_large_bodies(request: Request, call_next: Any) -> Any:
        """413 before reading a body that cannot hold valid payloads (by its Content-Length)."""
        cap = body_caps.get(request.url.path)
        length = request.headers.get("content-length", "")
        if cap is not None and length.isdigit() and int(length) > cap:
            detail = f"request body is {length} bytes, over the {cap} limit of {request.url.path}"
            return problems.response(413, detail)
        return await call_next(request)

    @app.get("/openapi.json", include_in_schema=False)
    def openapi(token: Caller, request: Request) -> dict[str, Any]:
        api.allow(token, request, READ, "openapi")
        return app.openapi()

    @app.get("/pipelines", summary="The pipelines, their steps and payload schemas")
    def pipelines(token: Caller) -> list[dict[str, Any]]:
        found = api.client.pipelines.values()
        return [describe(p) for p in found if not token.pipelines or p.name in token.pipelines]

    @app.get("/pipelines/{name}", summary="One pipeline: steps, flow, payload JSON Schema")
    def pipeline(name: str, token: Caller, request: Request) -> dict[str, Any]:
        declared = api.client.pipeline(name)
        api.allow(token, request, READ, name, pipeline=name)
        return describe(declared)

    @app.post("/jobs", status_code=202, summary="Submit a job; 202 and its Location")
    def submit(body: JobRequest, token: Caller, request: Request, response: Response) -> Any:
        tier = body.tier or settings.default_tier
        api.allow(token, request, SUBMIT, body.pipeline, pipeline=body.pipeline, tier=tier)
        existing = _bound_job(api, body.idempotency_key)
        if existing is not None:  # the key was used: that job, if it is the same submission
            same = (existing.pipeline, existing.tier, existing.payload)
            declared = api.client.pipeline(body.pipeline)
            limit = settings.limits.payload_max_bytes
            asked = (body.pipeline, tier, validate_payload(declared, body.payload or {}, limit))
            if same != asked:
                raise Problem(
                    409,
                    f"idempotency key {body.idempotency_key!r} was used for job {existing.id} "
                    "with a different pipeline, tier or payload",
                )
            response.status_code = 200
        try:
            job = api.client.submit(
                body.pipeline,
                body.payload,
                tier=tier,
                idempotency_key=body.idempotency_key,
                deadline_s=body.deadline_s,
                cache=body.cache,
            )
        except Exception as error:
            api.audit.record(token.who, SUBMIT, body.pipeline, FAILED, where(request), str(error))
            raise
        api.record(token, request, SUBMIT, job.id, f"{body.pipeline} at {tier}")
        response.headers["Location"] = f"/jobs/{job.id}"
        return {"job_id": job.id, "pipeline": body.pipeline, "tier": tier}

    @app.post("/jobs:batch", status_code=202, summary="Submit many jobs of one pipeline")
    def submit_batch(body: BatchRequest, token: Caller, request: Request) -> Any:
        tier = body.tier or settings.default_tier
        api.allow(token, request, SUBMIT, body.pipeline, pipeline=body.pipeline, tier=tier)
        if len(body.payloads) > settings.api.max_batch:
            raise Problem(
                413, f"{len(body.payloads)} payloads, over api.max_batch {settings.api.max_batch}"
            )
        try:
            jobs = api.client.submit_many(
                body.pipeline,
                body.payloads,
                tier=tier,
                deadline_s=body.deadline_s,
                cache=body.cache,
            )
        except Exception as error:
            api.audit.record(token.who, SUBMIT, body.pipeline, FAILED, where(request), str(error))
            raise
        api.record(token, request, SUBMIT, body.pipeline, f"{len(jobs)} jobs at {tier}")
        return {"job_ids": [job.id for job in jobs], "pipeline": body.pipeline, "tier": tier}

    @app.get("/jobs/{job_id}", summary="A job: state, timings, result or failure, step tree")
    async def get_job(
        job_id: str,
        token: Caller,
        request: Request,
        wait: Annotated[float, Query(ge=0, description="long-poll up to this many seconds")] = 0,
    ) -> dict[str, Any]:
        record = await run_in_threadpool(api.job, token, request, job_id)
        if wait > 0 and not record.finished:
            record = await api.wait(job_id, min(wait, settings.api.max_wait_s)) or record
        return await run_in_threadpool(api.view, record)

    @app.get(
        "/jobs/{job_id}/events",
        summary="Server-sent events: started, each step run, finished",
        response_class=StreamingResponse,
    )
    async def job_events(
        job_id: str,
        token: Caller,
        request: Request,
        last_event_id: Annotated[int, Header(description="resume after this step event")] = -1,
    ) -> StreamingResponse:
        await run_in_threadpool(api.job, token, request, job_id)
        return StreamingResponse(
            api.events(job_id, last_event_id),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    @app.delete("/jobs/{job_id}", summary="Cancel a job: it ends CANCELLED (409 if it had ended)")
    def cancel(
        job_id: str,
        token: Caller,
        request: Request,
        terminate: Annotated[bool, Query(description="also terminate its running steps")] = False,
    ) -> dict[str, Any]:
        record = api.job(token, request, job_id)
        api.allow(token, request, OPERATE, job_id, pipeline=record.pipeline)
        cancelled = api.act(
            token,
            request,
            "cancel",
            job_id,
            lambda: api.client.cancel(job_id, terminate=terminate, by=token.who),
        )
        detail = f"{cancelled.error}{', terminating its running steps' if terminate else ''}"
        api.record(token, request, "cancel", job_id, detail)
        return summary(cancelled)

    @app.post("/tiers/{tier}:pause", summary="Pause a tier fleet-wide; every pause in force")
    def pause(tier: str, token: Caller, request: Request) -> dict[str, dict[str, Any]]:
        return api.switch_tier(token, request, "pause", tier)

    @app.post("/tiers/{tier}:resume", summary="Resume a paused tier (409 if it was not paused)")
    def resume(tier: str, token: Caller, request: Request) -> dict[str, dict[str, Any]]:
        return api.switch_tier(token, request, "resume", tier)

    @app.get("/dlq", summary="Dead letters: failed jobs with why, where and their payload")
    def dead_letters(token: Caller) -> list[dict[str, Any]]:
        entries = api.letters.entries()
        return [e for e in entries if not token.pipelines or e["pipeline"] in token.pipelines]

    @app.post("/dlq/{job_id}:retry", status_code=202, summary="Submit a dead letter again")
    def retry(job_id: str, token: Caller, request: Request, response: Response) -> Any:
        entry = api.letters.get(job_id)
        if entry is None:
            raise Problem(404, f"no dead letter for job {job_id}")
        api.allow(token, request, OPERATE, job_id, pipeline=entry["pipeline"])
        job = api.client.submit(entry["pipeline"], entry["payload"], tier=entry["tier"])
        api.letters.remove(job_id)
        api.record(token, request, "retry", job_id, f"resubmitted as {job.id}")
        response.headers["Location"] = f"/jobs/{job.id}"
        return {"job_id": job.id, "retried": job_id}

    return app


def _bound_job(api: Api, key: str | None) -> JobRecord | None:
    """The job an idempotency key is bound to, if any."""
    if key is None:
        return None
    bound = api.client.store.redis.get(IDEMPOTENCY + key)
    return api.client.store.get(bound.decode()) if bound else None
