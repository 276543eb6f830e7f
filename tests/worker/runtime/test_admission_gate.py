"""The admission gate's decisions, as pure logic: a headroom snapshot and Celery's set of reserved
requests in, start / hold / reject out. Celery reserves a request *before* handing it to the
gate, and these tests do the same."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from celery.worker import state

from jobrunner.config.settings import AdmissionSettings
from jobrunner.tasks.step import Resources
from jobrunner.worker.runtime.admission import AdmissionGate
from jobrunner.worker.runtime.headroom import Headroom

SETTINGS = AdmissionSettings(
    enabled=True,
    memory_reserve_mb=500,
    max_load_per_cpu=4.0,
    process_memory_mb=256,
    check_interval_s=0.5,
)
NEEDS = {"one_cpu": Resources(cpu=1.0), "big": Resources(cpu=0.5, memory_mb=3000)}


@dataclass(eq=False)
class FakeRequest:
    """What the gate reads of a Celery request."""

    name: str
    id: str = "task"
    kwargs: dict = field(default_factory=dict)


@dataclass
class Outcome:
    started: list[FakeRequest] = field(default_factory=list)
    rejected: list[tuple[FakeRequest, str]] = field(default_factory=list)


@pytest.fixture
def reserved() -> Iterator[set]:
    state.reserved_requests.clear()
    yield state.reserved_requests
    state.reserved_requests.clear()


def _gate(outcome: Outcome, *, available_mb: int = 8000, load: float = 0.1) -> AdmissionGate:
    gate = AdmissionGate(
        SETTINGS,
        NEEDS,
        outcome.started.append,
        lambda request, reason: outcome.rejected.append((request, reason)),
    )
    gate.headroom = Headroom(
        cpus=2,
        memory_total_mb=16000,
        memory_available_mb=available_mb,
        load_per_cpu=load,
        taken_at=0.0,
    )
    return gate


def _receive(gate: AdmissionGate, reserved: set, request: FakeRequest) -> None:
    reserved.add(request)  # as Celery's strategy does before calling the handler
    gate.submit(request)


def test_fills_every_cpu_then_holds_and_pauses(reserved: set) -> None:
    outcome = Outcome()
    gate = _gate(outcome)
    first, second, third = (FakeRequest("one_cpu", id=str(i)) for i in range(3))
    _receive(gate, reserved, first)
    _receive(gate, reserved, second)  # the second CPU: a request does not count against itself
    assert outcome.started == [first, second] and not gate.paused
    _receive(gate, reserved, third)
    assert outcome.started == [first, second] and list(gate.held) == [third]
    assert gate.paused and gate.reason == "cpu: 2 of 2 CPUs taken, needs 1"

    reserved.discard(first)  # a step ended
    gate.retry_held()
    assert outcome.started == [first, second, third] and not gate.paused


def test_memory_short_holds_until_the_host_has_room(reserved: set) -> None:
    outcome = Outcome()
    gate = _gate(outcome, available_mb=3000)  # 2500 MB above the reserve: not enough
    big = FakeRequest("big")
    _receive(gate, reserved, big)
    assert outcome.started == [] and gate.reason is not None
    assert gate.reason.startswith("memory: needs 3000 MB, 2500 MB free")
    small = FakeRequest("one_cpu")
    _receive(gate, reserved, small)  # held behind the big one: first come, first served
    assert list(gate.held) == [big, small]

    gate.headroom = _gate(Outcome(), available_mb=9000).headroom
    gate.retry_held()
    assert outcome.started == [big, small] and not gate.paused


def test_admitted_memory_counts_until_the_next_measurement(reserved: set) -> None:
    outcome = Outcome()
    gate = _gate(outcome, available_mb=7000)  # 6500 MB free: one 3000 MB step twice, not thrice
    bigs = [FakeRequest("big", id=str(i)) for i in range(3)]
    for request in bigs:
        _receive(gate, reserved, request)
    assert outcome.started == bigs[:2] and list(gate.held) == bigs[2:]


def test_step_needing_more_than_the_host_is_rejected(reserved: set) -> None:
    outcome = Outcome()
    gate = _gate(outcome)
    gate.needs = {**NEEDS, "huge": Resources(memory_mb=20000)}
    huge = FakeRequest("huge")
    _receive(gate, reserved, huge)
    assert outcome.started == [] and not gate.held
    assert outcome.rejected == [
        (huge, "needs 20000 MB of memory; this host has 15500 MB above its reserve")
    ]


def test_host_pressure_pauses_without_any_held_step(reserved: set) -> None:
    gate = _gate(Outcome(), load=5.0)
    gate.retry_held()
    assert gate.paused and gate.reason == "cpu: load 5.0 per CPU is above 4"


def test_plumbing_and_a_disabled_gate_always_start(reserved: set) -> None:
    outcome = Outcome()
    gate = _gate(outcome, available_mb=100)  # the host is below its reserve
    collect = FakeRequest("jobrunner.collect")
    _receive(gate, reserved, collect)
    assert outcome.started == [collect]
    gate.settings = SETTINGS.model_copy(update={"enabled": False})
    step = FakeRequest("big")
    _receive(gate, reserved, step)
    assert outcome.started == [collect, step]
