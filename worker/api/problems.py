"""Errors as RFC 9457 problem details (`application/problem+json`): the CLI's one line is the
`detail`, the status says what kind of error it was."""

from __future__ import annotations

from http import HTTPStatus

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from jobrunner.config import ConfigError, JobrunnerError
from jobrunner.tasks.errors import PayloadError, PayloadTooLarge, PipelineError
from jobrunner.worker.broker.connection import BrokerError

MEDIA_TYPE = "application/problem+json"


class Problem(Exception):
    """Raised by a route: answered as problem+json with `status` and the one-line `detail`."""

    def __init__(self, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.headers = headers


def response(status: int, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    body = {
        "type": "about:blank",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
    }
    return JSONResponse(body, status_code=status, media_type=MEDIA_TYPE, headers=headers)


def status_of(error: JobrunnerError) -> int:
    """The HTTP status of a jobrunner error: what the client sent, or what is unavailable."""
    match error:
        case PayloadTooLarge():
            return 413
        case PipelineError():
            return 404
        case PayloadError() | ConfigError():  # a payload, deadline, key or tier that is wrong
            return 422
        case BrokerError():
            return 503
    return 500


async def on_problem(_: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, Problem)
    return response(error.status, error.detail, error.headers)


async def on_jobrunner_error(_: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, JobrunnerError)
    return response(status_of(error), str(error))


async def on_invalid_request(_: Request, error: Exception) -> JSONResponse:
    """FastAPI's own request checks, as one line: 400 for a body that is not JSON, else 422
    naming the first field that is wrong."""
    assert isinstance(error, RequestValidationError)
    first = error.errors()[0]
    where = ".".join(str(part) for part in first.get("loc", ()) if part != "body") or "body"
    if first.get("type") == "json_invalid":
        return response(400, f"request body is not valid JSON: {first.get('msg')}")
    return response(422, f"{where}: {first.get('msg')}")


HANDLERS = {
    Problem: on_problem,
    JobrunnerError: on_jobrunner_error,
    RequestValidationError: on_invalid_request,
}
