"""Reliable fetch for kombu's Redis transport: a message is never only in a worker's memory.

kombu takes a message with BRPOP and only then records it as unacknowledged (HSET + ZADD). A
worker killed between the two, or a connection dropped after Redis popped but before the reply
arrived (a broker restart), loses the message for good (celery/kombu#1733, #305).

Here a message leaves its queue only inside one Lua script (lua/fetch.lua) that also records it
unacked, so it is always in exactly one of the two places; from the unacked index, a lapsed lease
brings it back (worker/broker/leases.py). BRPOP cannot take that role, since a blocking pop is
destructive and a script cannot block. So publishers push a wake token per message on a list
beside the queue; an idle worker blocks on the wake lists of its queues (losing a token loses
nothing), then runs the script, which takes the highest-priority message among all its queues. A
message pushed without a token (by hand, by another client) is found by the same script when the
BRPOP times out (the transport's `brpop_timeout`, 1 s), so it is late at worst, never stranded.

Nothing in a queue may stop a worker: Celery treats an exception raised while it takes a message
in (a body it cannot decode, say) as unrecoverable. So each fetched message is screened before
Celery sees it (`_screen`, `task_refusal`), whatever the consumer still raises on is caught
(`_hand_over`), and either way the message is set aside with its reason
(worker/broker/set_aside.py), out of its queue and its lease in one step. Nor may a queue or wake
key of another type than list (`SET` on its name by any client holding the password): the fetch
script and, when the BRPOP fails with WRONGTYPE, `_move_aside_wake_keys` rename such a key under
`SET_ASIDE_KEY`, log it, and the worker goes on with its other queues (and with that one as soon
as it is a list again). The fetch script does the same, before it takes anything, for kombu's
unacked hash and index and the paused set, and for a job record that is not a hash.

This is the one module that uses kombu's private names; read from kombu 5.7.0
(`KOMBU_READ_FROM`). pyproject.toml pins kombu to that minor version, and
tests/worker/broker/test_kombu_contract.py checks each name below against the installed kombu.
Before moving the pin, re-read kombu/transport/redis.py and kombu/transport/virtual/base.py for
each:
- `QoS`: overrides `_remove_from_indices(delivery_tag, pipe)`; reads `_delivered` (held
  messages by tag) and `_dirty` (acked, not yet flushed from `_delivered`), and clears
  `_delivered` (and pops fenced tags from it); `append` skips kombu's Redis `QoS.append` (its
  HSET + ZADD) for the virtual `QoS.append`, its only base, and so does `ack` of a fenced
  message for the virtual `QoS.ack` (local bookkeeping, nothing sent to Redis).
- `Channel`: overrides `_get_pool(asynchronous)`, `_brpop_start(timeout)`, `_brpop_read(**options)`,
  `_get(queue)`, `_put(queue, message, **kwargs)` (and reads its `_publish_batch` keyword),
  `_do_restore_message(payload, exchange, routing_key, pipe, leftmost)` and `_purge(queue)`;
  calls `_connparams()`, `_q_for_pri(queue, pri)`, `_get_message_priority(message, reverse)`,
  `_lookup(exchange, routing_key)` and `_flush_brpop_reauth()`; uses `_queue_cycle` (`consume`,
  `rotate`), `_in_poll`, `_brpop_sent_at`, `_closing` and `_expires` as kombu's own methods do.
- `Transport`: calls `_deliver(message, queue)`.
- `Message` (the virtual transport's): sets `_decoded_cache`, where `decode()` and `payload` keep
  the decoded body, on the message the consumer receives, from the screen's decode
  (`screened`): Celery's consumer reads `payload` (celery/worker/strategy.py, and `Request`), so
  a body is decoded once in the consumer process, not twice.
- `kombu.transport.TRANSPORT_ALIASES`, a public dict, is written by `serve_redis_schemes`.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from functools import cached_property
from typing import Any

import redis
from kombu.transport import TRANSPORT_ALIASES, virtual
from kombu.transport import redis as kombu_redis
from kombu.transport.virtual import Empty
from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import dumps, loads
from redis.exceptions import NoScriptError

from jobrunner.worker.broker import scripts
from jobrunner.worker.broker import set_aside as aside
from jobrunner.worker.broker.keys import (
    PAUSED,
    PAUSED_IDLE,
    SET_ASIDE_KEY,
    SET_ASIDE_SEQ,
    WAKE_TTL_MS,
    wake_key,
)
from jobrunner.worker.broker.queues import JOB_HEADER

KOMBU_READ_FROM = "5.7.0"  # the kombu release whose source the private names were read from

TOKEN = "1"
FETCHED_JOBS_KEPT = 1024  # job look-ups kept for the consumer: far more than a worker holds
JSON = "application/json"  # the one content type a task message may have: pickle is never read

log = logging.getLogger("jobrunner.transport")


def gate_fetching(channel: Any, admitting: Callable[[], bool]) -> None:
    """Fetch for `channel` only while `admitting()` says so (a worker's admission gate)."""
    channel.qos.admitting = admitting


def park(channel: Any, delivery_tag: str, parked_key: str) -> bool:
    """Move a fetched, unacknowledged message to `parked_key` (a paused pipeline's list) in one
    step (lua/park.lua); the caller then rejects it, which finds nothing left to remove."""
    with channel.conn_or_acquire() as client:
        keys = [channel.unacked_key, channel.unacked_index_key, parked_key]
        return bool(client.eval(scripts.load("park"), len(keys), *keys, delivery_tag))


def look_up_jobs(channel: Any, record_prefix: str) -> None:
    """Have `channel`'s fetch script look up the job of each step message it takes (records
    under `record_prefix`, on the broker's own Redis), for `fetched_job`."""
    channel.job_record_prefix = record_prefix


def fetched_job(channel: Any, delivery_tag: str) -> tuple[str, str, str] | None:
    """(job id, pipeline, final state) of the job the fetch script looked up for the message
    `delivery_tag` ('' for a field the record lacks: no record, or not finished), once; None if
    it looked none up."""
    return channel.fetched_jobs.pop(delivery_tag, None)


def screen_tasks(channel: Any, allowed: Callable[[str], bool]) -> None:
    """Deliver on `channel` only Celery task messages (JSON, protocol 2) naming a task that
    `allowed` accepts (a worker's task consumer); set every other message aside."""
    channel.task_allowed = allowed


def message_text(message: Any) -> str:
    """A delivered message as it was queued (for setting it aside after delivery)."""
    return str(dumps(message.serializable()))


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


def task_refusal(message: Any, allowed: Callable[[str], bool]) -> str | None:
    """Why a kombu message is no task message a worker may run, or None. Decodes its body
    (JSON only), which `message.payload` keeps."""
    if message.content_type != JSON:
        return f"content type {message.content_type!r} is not accepted (JSON only)"
    message.accept = [JSON]
    try:
        body = message.decode()
    except Exception as error:  # any failure to decode is the message's, not the worker's
        return f"undecodable body: {_describe(error)}"
    headers = message.headers
    if not (
        isinstance(headers, dict)
        and isinstance(headers.get("task"), str)
        and isinstance(headers.get("id"), str)
    ):
        return "not a task message: its headers name no task and id"
    if not (
        isinstance(body, list)
        and len(body) == 3
        and isinstance(body[0], list)
        and all(isinstance(part, dict) for part in body[1:])
    ):
        return "not a task message: its body is not [args, kwargs, options]"
    if not allowed(headers["task"]):
        return f"task {headers['task'][:200]!r} is not one of jobrunner's"
    return None


def serve_redis_schemes(transport: str) -> None:
    """Resolve `redis://` and `rediss://` broker URIs to `transport` in this process. For Flower,
    whose Broker tab knows only those schemes (worker/monitoring/flower_app.py)."""
    TRANSPORT_ALIASES["redis"] = TRANSPORT_ALIASES["rediss"] = transport


class QoS(kombu_redis.QoS):
    admitting: Callable[[], bool] | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Messages whose lease this worker may have lost (it could not renew it for most of a
        # lease: a partition). Another worker may hold them now under the same delivery tag, so
        # an ack, reject or restore from here would act on its delivery: forget them locally.
        self.fenced: set[str] = set()

    def fence(self, delivery_tag: str) -> None:
        self.fenced.add(delivery_tag)

    def _forget(self, delivery_tag: str) -> None:
        """Drop a fenced message from this channel's own books only (nothing sent to Redis)."""
        self.fenced.discard(delivery_tag)
        super(kombu_redis.QoS, self).ack(delivery_tag)

    def ack(self, delivery_tag: str) -> None:
        if delivery_tag in self.fenced:
            return self._forget(delivery_tag)
        return super().ack(delivery_tag)

    def reject(self, delivery_tag: str, requeue: bool = False) -> None:
        if delivery_tag in self.fenced:
            return self._forget(delivery_tag)
        return super().reject(delivery_tag, requeue)

    def can_consume(self) -> bool:
        """kombu asks before each fetch; a worker's admission gate may say no first."""
        return (self.admitting is None or self.admitting()) and super().can_consume()

    def held(self) -> list[str]:
        """The delivery tags of the messages this channel holds unacknowledged, less those acked
        or rejected but not yet flushed from kombu's map (a lease renewed for one of those would
        hold its message back forever)."""
        skip = self._dirty | self.fenced
        return [tag for tag in tuple(self._delivered) if tag not in skip]

    def append(self, message: Any, delivery_tag: str) -> None:
        """Skip kombu's HSET + ZADD for a message the fetch script already recorded."""
        if delivery_tag in self.channel.recorded:
            self.channel.recorded.discard(delivery_tag)
            super(kombu_redis.QoS, self).append(message, delivery_tag)
        else:
            super().append(message, delivery_tag)

    def _remove_from_indices(self, delivery_tag: str, pipe: Any = None) -> Any:
        """For an ack or a drop, kombu removes a message from the unacked hash and index in a
        MULTI of its own; a plain pipeline does it in one round trip with half the replies (a
        quarter of a worker's main-process time went to acks). The hash entry goes first: were
        the index entry left alone, restoring it finds nothing and only drops it. Inside a
        restore, the caller's transaction is used as before."""
        if pipe is None:
            with self.channel.conn_or_acquire() as client:
                pipe = client.pipeline(transaction=False)
        return pipe.hdel(self.unacked_key, delivery_tag).zrem(self.unacked_index_key, delivery_tag)

    def restore_unacked(self, client: Any = None) -> Any:
        """On close, kombu returns what the worker holds to its queues; with the broker down
        that fails, and the error would cut the channel's close short. The messages are still
        leased in Redis and come back when their leases lapse, so say so and go on."""
        for tag in self.fenced & set(self._delivered):
            self._delivered.pop(tag, None)  # its lease lapsed: it is back or elsewhere already
        try:
            return super().restore_unacked(client)
        except kombu_redis.get_redis_error_classes()[0] as exc:
            log.warning(
                "could not return %d held message(s) to their queues now (%r); they come back "
                "when their leases lapse",
                len(self._delivered),
                exc,
            )
            self._delivered.clear()
            return None


class Message(virtual.Message):
    def __init__(self, payload: dict[str, Any], channel: Any = None, **kwargs: Any) -> None:
        """The message the consumer receives of one the screen decoded (the same envelope,
        `Channel.screened`) takes its decoded body along: a chain link embeds every later link,
        so each decode of its body costs in proportion to the chain's length."""
        super().__init__(payload, channel=channel, **kwargs)
        screened = getattr(channel, "screened", None)
        if screened is not None and screened[0] is payload:
            channel.screened = None
            self._decoded_cache = screened[1]


class Channel(kombu_redis.Channel):
    QoS = QoS
    Message = Message

    @cached_property
    def atomic_client(self) -> redis.Redis:
        """A client on the channel's (synchronous) pool, kept for `run_atomically`: kombu's
        `conn_or_acquire` builds a new client object per call, ~150 us of every submit. A
        redis-py client is safe to share between threads; each call takes its own pipeline."""
        client: redis.Redis = self.Client(connection_pool=self.pool)
        return client

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.global_keyprefix:
            raise ValueError("jobrunner's Redis transport does not support global_keyprefix")
        self.recorded: set[str] = set()  # delivery tags the fetch script recorded unacked
        # Kept for `_get_pool` once kombu has detached this channel from its transport.
        self._detached_params = self._connparams()
        self._fetch_keys: list[tuple[str, str]] = []  # (queue name, Redis key), by priority
        self._backlog = False  # the last fetch left a message queued: fetch again at once
        self._left = False  # the last fetch that found a message left another one queued
        self._paused: set[str] = set()  # queue keys the last fetch found paused: not waited on
        self._fetch = self.client.register_script(
            scripts.load("set_aside_fn") + scripts.load("move_aside_fn") + scripts.load("fetch")
        )
        self._move_aside = self.client.register_script(
            scripts.load("move_aside_fn") + scripts.load("move_aside")
        )
        self._waited_on: list[str] = []  # the keys the last BRPOP blocked on
        self.task_allowed: Callable[[str], bool] | None = None  # see screen_tasks
        self.job_record_prefix = ""  # see look_up_jobs
        # delivery tag -> (job id, pipeline, state) looked up by the fetch, until the consumer
        # reads it; bounded, since a message the consumer never checks (a remote submission)
        # leaves its entry behind.
        self.fetched_jobs: OrderedDict[str, tuple[str, str, str]] = OrderedDict()
        # The envelope the screen last passed and its decoded body, until the consumer's
        # message takes the body over (see Message).
        self.screened: tuple[dict[str, Any], Any] | None = None

    def _get_pool(self, asynchronous: bool = False) -> Any:
        """A channel closed on a lost connection is detached from its transport, yet a step that
        was running goes on and acks through it once it ends (and kombu returns held messages
        through it on close). Without a pool those raise AttributeError, which Celery treats as
        unrecoverable and the worker exits; with this one the ack reaches Redis, so the step is
        not run twice."""
        transport = self.connection
        if transport is None or transport.client is None:
            return redis.ConnectionPool(**self._detached_params)
        return super()._get_pool(asynchronous)

    def _brpop_start(self, timeout: float | None = None) -> None:
        """After a fetch that found a message and left another queued (or set one aside), fetch
        straight away (a backlog: the wake token would only cost a round trip); otherwise block
        on the wake lists of the worker's queues (where kombu blocks on the queues themselves).
        A fetch that took the last message is not followed by one sure to find nothing (each
        step of a chain would pay that round trip)."""
        queues = self._queue_cycle.consume(len(self.active_queues))
        if not queues:
            return
        self._fetch_keys = [
            (queue, self._q_for_pri(queue, pri)) for pri in self.priority_steps for queue in queues
        ]
        self._in_poll = self.client.connection
        self._brpop_sent_at = time.monotonic()
        if self._backlog:
            keys, args = self._fetch_call(self._fetch_keys, None)
            self.client.connection.send_command("EVALSHA", self._fetch.sha, len(keys), *keys, *args)
            return
        wait_s = self.brpop_timeout if timeout is None else timeout
        # A paused queue's tokens would wake us for nothing; the timed-out fetch sees a resume.
        wake_keys = [wake_key(k) for _, k in self._fetch_keys if k not in self._paused]
        self._waited_on = wake_keys or [PAUSED_IDLE]
        self.client.connection.send_command("BRPOP", *self._waited_on, wait_s or 0)

    def _brpop_read(self, **options: Any) -> bool:
        fetched, self._backlog = self._backlog, False
        try:
            try:
                reply = self.client.parse_response(
                    self.client.connection, "EVALSHA" if fetched else "BRPOP", **options
                )
            except NoScriptError:  # Redis restarted meanwhile: the next fetch loads it again
                raise Empty() from None
            except self.connection_errors:
                self.client.connection.disconnect()
                raise
            except redis.ResponseError as error:
                if fetched or not str(error).startswith("WRONGTYPE"):
                    raise
                self._move_aside_wake_keys()
                raise Empty() from None
            if fetched:
                found = self._found(self._fetch_keys, reply)
            elif self._closing:  # the token is spent, but a message taken now has no consumer
                found = None
            else:
                found = self._take(self._fetch_keys, bytes_to_str(reply[0]) if reply else None)
        finally:
            self._in_poll = None
            self._flush_brpop_reauth()
        if found is None:
            raise Empty()
        queue, payload = found
        if self._closing:  # taken as the channel closes: straight back to its queue
            self.screened = None
            self.qos.restore_by_tag(payload["properties"]["delivery_tag"], leftmost=True)
            raise Empty()
        self._backlog = self._left
        self._queue_cycle.rotate(queue)
        self._hand_over(payload, queue)
        return True

    def _hand_over(self, payload: dict[str, Any], queue: str) -> None:
        """Hand the message to its consumer (Celery). Whatever a message makes the consumer
        raise, short of a lost connection, is the message's fault: it is set aside and the
        worker goes on (Celery would stop the worker as an "unrecoverable error")."""
        try:
            self.connection._deliver(payload, queue)
        except self.connection_errors:
            raise
        except Exception as error:
            self._set_aside(dumps(payload), f"refused by the worker: {_describe(error)}", queue)
            tag = payload["properties"]["delivery_tag"]
            if tag in self.qos._delivered:  # held by kombu: let go, or it counts as running
                self.qos.ack(tag)
        finally:
            self.screened = None  # taken over by the message, or never to be

    def _move_aside_wake_keys(self) -> None:
        """The BRPOP met a key that is no list: rename whichever it was aside (lua/move_aside.lua),
        so the next wait works."""
        keys = [SET_ASIDE_SEQ, *self._waited_on]
        self._log_moved(self._move_aside(keys=keys, args=[SET_ASIDE_KEY]))

    def _log_moved(self, moved: list[Any]) -> None:
        """One line per key the fetch or `_move_aside_wake_keys` renamed aside."""
        for key, renamed in zip(moved[::2], moved[1::2], strict=True):
            log.error(
                "%s has the wrong type (another client wrote it): renamed to %s to keep it; "
                "this worker goes on",
                bytes_to_str(key),
                bytes_to_str(renamed),
            )

    def _set_aside(self, text: str, reason: str, queue: str) -> None:
        """Keep the message for a person, out of its queue and its lease, and log one line."""
        with self.conn_or_acquire() as client:
            entry = aside.set_aside(
                client, text, reason, queue, (self.unacked_key, self.unacked_index_key)
            )
        log.error("message from %s set aside as entry %s: %s", queue, entry, reason)

    def _screen(self, text: str) -> tuple[dict[str, Any] | None, str | None]:
        """The message, and why it must not be delivered (None: it may). A task message's
        decoded body is kept for the consumer (`screened`)."""
        try:
            payload = loads(text)
            message = self.Message(payload, channel=self)
        except Exception as error:  # cjson took it; Python or kombu cannot
            return None, f"undecodable message: {_describe(error)}"
        if self.task_allowed is None:  # not a worker's task consumer (a reply queue, a test)
            return payload, None
        reason = task_refusal(message, self.task_allowed)
        self.screened = (payload, message.payload) if reason is None else None
        return payload, reason

    def _fetch_call(
        self, fetch_keys: list[tuple[str, str]], woke_key: str | None
    ) -> tuple[list[str], list[Any]]:
        """The fetch script's keys and arguments for `fetch_keys` ((queue, Redis key) by
        priority), after a wake token from `woke_key` (or none)."""
        keys = [key for _, key in fetch_keys]
        woke = next((i for i, key in enumerate(keys, 1) if wake_key(key) == woke_key), 0)
        return (
            [
                self.unacked_key,
                self.unacked_index_key,
                *aside.KEYS,
                *keys,
                *map(wake_key, keys),
                PAUSED,
            ],
            [
                time.time(),
                woke,
                TOKEN,
                aside.PREFIX,
                SET_ASIDE_KEY,
                self.job_record_prefix,
                JOB_HEADER,
            ],
        )

    def _take(
        self, fetch_keys: list[tuple[str, str]], woke_key: str | None, client: Any = None
    ) -> tuple[str, dict[str, Any]] | None:
        """Run the fetch script, on the BRPOP's own connection (idle once its reply is read)
        unless given another `client`."""
        keys, args = self._fetch_call(fetch_keys, woke_key)
        return self._found(fetch_keys, self._fetch(keys=keys, args=args, client=client))

    def _found(
        self, fetch_keys: list[tuple[str, str]], reply: list[Any]
    ) -> tuple[str, dict[str, Any]] | None:
        """The (queue, message) a fetch took, if any. A message that must not be delivered is
        set aside instead (and the next fetch goes straight on)."""
        index, raw, unreadable, paused, moved, job, left = reply
        self._paused = {fetch_keys[int(i) - 1][1] for i in paused}
        self._log_moved(moved)
        if unreadable:
            log.error("%d queue entries that were no message set aside", unreadable)
        if not index:
            return None
        queue = fetch_keys[int(index) - 1][0]
        text = bytes_to_str(raw)
        payload, reason = self._screen(text)
        if payload is None or reason is not None:
            self._set_aside(text, reason or "undecodable message", queue)
            self._backlog = True
            return None
        tag = payload["properties"]["delivery_tag"]
        self.recorded.add(tag)
        self._left = bool(left)
        if job:
            self.fetched_jobs[tag] = tuple(bytes_to_str(field) for field in job)
            while len(self.fetched_jobs) > FETCHED_JOBS_KEPT:
                self.fetched_jobs.popitem(last=False)
        return queue, payload

    def _get(self, queue: str) -> dict[str, Any]:
        """A synchronous get (basic_get) takes through the same script."""
        fetch_keys = [(queue, self._q_for_pri(queue, pri)) for pri in self.priority_steps]
        with self.conn_or_acquire() as client:  # not the BRPOP's connection: it may be waiting
            found = self._take(fetch_keys, None, client)
        if found is None:
            raise Empty()
        return found[1]

    def _put(self, queue: str, message: dict[str, Any], **kwargs: Any) -> None:
        """Publish with a wake token beside it, in the same round trip."""
        key = self._q_for_pri(queue, self._get_message_priority(message, reverse=False))
        batch = kwargs.get("_publish_batch")
        if batch is not None:  # kombu's batched publish: both pushes join the batch
            super()._put(queue, message, **kwargs)
            for name, args in self._wake(queue, key):
                batch.add(name, *args)
            return
        with self.conn_or_acquire() as client, client.pipeline() as pipe:
            pipe.lpush(key, dumps(message))
            for name, args in self._wake(queue, key):
                getattr(pipe, name)(*args)
            for pri in self.priority_steps if queue in (self._expires or {}) else ():
                pipe.pexpire(self._q_for_pri(queue, pri), self._expires[queue])
            pipe.execute()

    def _wake(self, queue: str, key: str) -> list[tuple[str, tuple[Any, ...]]]:
        """The commands that push a wake token for `key` (a Redis key of `queue`) and renew its
        wake list's expiry (`WAKE_TTL_MS`, or the queue's own where it expires sooner)."""
        ttl = min(WAKE_TTL_MS, (self._expires or {}).get(queue) or WAKE_TTL_MS)
        return [("lpush", (wake_key(key), TOKEN)), ("pexpire", (wake_key(key), ttl))]

    def _do_restore_message(
        self, payload: dict[str, Any], exchange: str, routing_key: str, pipe: Any, leftmost=False
    ) -> None:
        """A message returned to its queue (lapsed lease, requeue) wakes a worker too."""
        super()._do_restore_message(payload, exchange, routing_key, pipe, leftmost)
        for queue in self._lookup(exchange, routing_key):
            pri = self._get_message_priority(payload, reverse=False)
            for name, args in self._wake(queue, self._q_for_pri(queue, pri)):
                getattr(pipe, name)(*args)

    def _purge(self, queue: str) -> int:
        with self.conn_or_acquire() as client:
            client.delete(*(wake_key(self._q_for_pri(queue, pri)) for pri in self.priority_steps))
        return super()._purge(queue)


class _CommandRecorder:
    """Takes the place of kombu's publish batch (`_publish_batch`): keeps the Redis commands a
    publish would run instead of running them."""

    def __init__(self) -> None:
        self.commands: list[tuple[str, tuple[Any, ...]]] = []

    def add(self, name: str, *args: Any) -> None:
        self.commands.append((name, args))


def publish_commands(
    channel: Any, message: dict[str, Any], exchange: str, routing_key: str
) -> list[tuple[str, tuple[Any, ...]]]:
    """The Redis commands `channel` would run to publish a prepared `message` (routed, given a
    delivery tag, encoded and serialized by kombu as for a real send, wake token included),
    none run: for a bulk sender that runs many jobs' commands in one transaction."""
    recorder = _CommandRecorder()
    channel.basic_publish(message, exchange, routing_key, _publish_batch=recorder)
    return recorder.commands


def run_atomically(channel: Any, commands: list[tuple[str, tuple[Any, ...]]]) -> None:
    """Run `commands` on the channel's Redis in one MULTI/EXEC: all of them or none."""
    client = channel.atomic_client if isinstance(channel, Channel) else None
    with channel.conn_or_acquire(client) as client, client.pipeline(transaction=True) as pipe:
        for name, args in commands:
            getattr(pipe, name)(*args)
        pipe.execute()


class Transport(kombu_redis.Transport):
    Channel = Channel
