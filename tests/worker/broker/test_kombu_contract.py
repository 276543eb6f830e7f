"""The contract with kombu's internals: every private kombu name that worker/broker/transport.py
(the one module that uses them) relies on, checked against the installed kombu. An upgrade that
removes one or changes its parameters fails here, by name, instead of in a running worker."""

from __future__ import annotations

import ast
import base64
import inspect
import uuid
from typing import Any

import kombu
import pytest
import redis
from kombu import Connection, Producer, Queue
from kombu.transport import TRANSPORT_ALIASES, resolve_transport, virtual
from kombu.transport import redis as kombu_redis

from jobrunner.worker.app import TRANSPORT
from jobrunner.worker.broker import transport
from jobrunner.worker.broker.keys import wake_key

# (kombu class, private method, the parameter names our override or call expects)
METHODS: list[tuple[type, str, tuple[str, ...]]] = [
    (kombu_redis.QoS, "_remove_from_indices", ("self", "delivery_tag", "pipe")),
    (kombu_redis.Channel, "_get_pool", ("self", "asynchronous")),
    (kombu_redis.Channel, "_brpop_start", ("self", "timeout")),
    (kombu_redis.Channel, "_brpop_read", ("self", "options")),
    (kombu_redis.Channel, "_get", ("self", "queue")),
    (kombu_redis.Channel, "_put", ("self", "queue", "message", "kwargs")),
    (
        kombu_redis.Channel,
        "_do_restore_message",
        ("self", "payload", "exchange", "routing_key", "pipe", "leftmost"),
    ),
    (kombu_redis.Channel, "_purge", ("self", "queue")),
    (kombu_redis.Channel, "_connparams", ("self", "asynchronous")),
    (kombu_redis.Channel, "_q_for_pri", ("self", "queue", "pri")),
    (kombu_redis.Channel, "_get_message_priority", ("self", "message", "reverse")),
    (kombu_redis.Channel, "_lookup", ("self", "exchange", "routing_key", "default")),
    (kombu_redis.Channel, "_flush_brpop_reauth", ("self",)),
    (kombu_redis.Transport, "_deliver", ("self", "message", "queue")),
]
# Private attributes of a kombu Redis channel and of its QoS, as kombu sets them up.
CHANNEL_ATTRIBUTES = ("_queue_cycle", "_in_poll", "_brpop_sent_at", "_closing", "_expires")
QOS_ATTRIBUTES = ("_delivered", "_dirty")
# Where a kombu message keeps its decoded body; `decode()` and `payload` read it once set.
MESSAGE_CACHE = "_decoded_cache"
# The keyword with which kombu's publish batch hands itself to `Channel._put`.
PUBLISH_BATCH = "_publish_batch"
KOMBU_NAMES = {
    *(name for _, name, _ in METHODS),
    *CHANNEL_ATTRIBUTES,
    *QOS_ATTRIBUTES,
    MESSAGE_CACHE,
    PUBLISH_BATCH,
}


def reread(problem: str) -> str:
    """The failure message: what changed, and what to do about it."""
    return (
        f"kombu {kombu.__version__}: {problem}. worker/broker/transport.py relies on kombu's "
        "internals: re-read kombu's source (kombu/transport/redis.py, "
        "kombu/transport/virtual/base.py) and adapt the transport, its header and this test."
    )


def test_installed_kombu_is_the_minor_version_the_adapter_was_read_from() -> None:
    read_from = tuple(int(part) for part in transport.KOMBU_READ_FROM.split(".")[:2])
    installed = (kombu.VERSION.major, kombu.VERSION.minor)
    assert installed == read_from, reread(
        f"the transport was read from kombu {transport.KOMBU_READ_FROM} "
        "(KOMBU_READ_FROM; pinned in pyproject.toml)"
    )


@pytest.mark.parametrize(
    ("owner", "name", "expected"),
    METHODS,
    ids=[f"{owner.__name__}.{name}" for owner, name, _ in METHODS],
)
def test_private_method_takes_the_parameters_we_expect(
    owner: type, name: str, expected: tuple[str, ...]
) -> None:
    method = getattr(owner, name, None)
    assert callable(method), reread(f"{owner.__name__}.{name} is gone")
    found = tuple(inspect.signature(method).parameters)
    assert found == expected, reread(
        f"{owner.__name__}.{name} takes {found}, the transport expects {expected}"
    )
    ours = getattr(transport, owner.__name__)  # our subclass of the same name
    if name in vars(ours):  # an override must keep kombu's parameters, as callers pass them
        assert tuple(inspect.signature(getattr(ours, name)).parameters) == expected


def test_our_qos_append_can_skip_kombus_redis_append() -> None:
    """`QoS.append` calls the virtual QoS's append past kombu's Redis one."""
    assert kombu_redis.QoS.__bases__ == (virtual.QoS,), reread(
        f"kombu's Redis QoS derives from {kombu_redis.QoS.__bases__}, not the virtual QoS alone"
    )


def test_serve_redis_schemes_makes_redis_uris_use_our_transport(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for scheme in ("redis", "rediss"):
        monkeypatch.setitem(TRANSPORT_ALIASES, scheme, TRANSPORT_ALIASES[scheme])  # restored
    transport.serve_redis_schemes(TRANSPORT)
    for scheme in ("redis", "rediss"):
        assert resolve_transport(scheme) is transport.Transport, reread(
            f"TRANSPORT_ALIASES[{scheme!r}] no longer picks the transport of a {scheme}:// URI"
        )


def _underscore_names(tree: ast.AST) -> set[str]:
    """Every private (single underscore) attribute, method or keyword string in `tree`."""
    names: set[str] = set()
    for node in ast.walk(tree):
        match node:
            case ast.Attribute(attr=name) | ast.FunctionDef(name=name) | ast.Constant(value=name):
                if isinstance(name, str) and name.isidentifier() and name.startswith("_"):
                    names.add(name)
    return {name for name in names if not name.startswith("__")}


def _envelope(body: bytes) -> dict[str, Any]:
    """A Redis transport envelope as kombu queues it (base64 body, JSON content)."""
    return {
        "body": base64.b64encode(body).decode(),
        "content-type": "application/json",
        "content-encoding": "utf-8",
        "headers": {},
        "properties": {"body_encoding": "base64", "delivery_tag": "tag", "delivery_info": {}},
    }


@pytest.mark.integration
def test_a_message_reads_its_decoded_body_from_the_cache_the_transport_fills(
    redis_url: str,
) -> None:
    """The transport hands the screen's decode to the consumer's message through
    `_decoded_cache`: kombu must still keep the decode there, and read it back from there."""
    with Connection(redis_url, transport=kombu_redis.Transport) as connection:
        channel = connection.channel()
        message = channel.Message(_envelope(b'{"n": 1}'), channel=channel)
        assert hasattr(message, MESSAGE_CACHE), reread(f"a kombu Message has no {MESSAGE_CACHE}")
        assert message.decode() == {"n": 1}
        assert getattr(message, MESSAGE_CACHE) == {"n": 1}, reread(
            f"Message.decode() no longer keeps its result in {MESSAGE_CACHE}"
        )
        other = channel.Message(_envelope(b"not JSON"), channel=channel)
        setattr(other, MESSAGE_CACHE, ["decoded", "before"])
        assert other.payload == other.decode() == ["decoded", "before"], reread(
            f"Message.payload or decode() no longer reads {MESSAGE_CACHE} once it is set"
        )
        channel.close()


@pytest.mark.integration
def test_every_private_name_is_kombus_and_listed_or_ours_alone(redis_url: str) -> None:
    """On a plain kombu channel: each kombu attribute listed here exists, each private name the
    transport uses is either listed here (and in its header) or absent from kombu (ours; a kombu
    name we did not know we override would be a silent change of behaviour)."""
    used = _underscore_names(ast.parse(inspect.getsource(transport)))
    with Connection(redis_url, transport=kombu_redis.Transport) as connection:
        channel = connection.channel()
        message = channel.Message(_envelope(b"{}"), channel=channel)
        kombu_objects: list[Any] = [channel, channel.qos, connection.transport, message]
        for name in CHANNEL_ATTRIBUTES:
            assert hasattr(channel, name), reread(f"the Redis channel has no {name}")
        for name in QOS_ATTRIBUTES:
            assert hasattr(channel.qos, name), reread(f"the Redis QoS has no {name}")
        for method in ("consume", "rotate"):
            assert callable(getattr(channel._queue_cycle, method, None)), reread(
                f"the channel's _queue_cycle has no {method}"
            )
        for name in used - KOMBU_NAMES:
            owners = [type(obj).__name__ for obj in kombu_objects if hasattr(obj, name)]
            assert not owners, reread(
                f"{name} is kombu's ({', '.join(owners)}): list it here and in the transport's "
                "header, or rename the transport's own"
            )
        channel.close()
    assert used >= KOMBU_NAMES, f"no longer used, drop from this test: {KOMBU_NAMES - used}"
    unlisted = {name for name in KOMBU_NAMES if name not in (transport.__doc__ or "")}
    assert not unlisted, f"worker/broker/transport.py's header does not list {unlisted}"


@pytest.mark.integration
def test_a_batched_publish_reaches_our_put_through_its_keyword(
    redis_url: str, redis_client: redis.Redis
) -> None:
    """kombu's publish batch passes itself to `Channel._put` as `_publish_batch`, so the message
    and its wake token join the batch: neither reaches Redis before the batch is flushed."""
    name = f"test-contract-{uuid.uuid4().hex[:8]}"
    queue = Queue(name, routing_key=name)
    try:
        with Connection(redis_url, transport=TRANSPORT) as connection:
            with Producer(connection) as producer, producer.batch(max_size=100):
                producer.publish("x", routing_key=name, declare=[queue], serializer="json")
                pending = redis_client.llen(name), redis_client.llen(wake_key(name))
                assert pending == (0, 0), reread(
                    f"a batched publish went out at once: {PUBLISH_BATCH} did not reach _put"
                )
            assert (redis_client.llen(name), redis_client.llen(wake_key(name))) == (1, 1)
    finally:
        redis_client.delete(name, wake_key(name))
