"""`jobrunner keys rotate`: re-seal every stored payload and result under the newest key.

Runs beside live workers: each value is replaced only if it still holds what was read (one Lua
call per value), and every process reads old and new keys alike meanwhile (MultiFernet), so
nothing stops. A value stored in clear (written before a key was set) is sealed too.
"""

from __future__ import annotations

from collections.abc import Iterator

from jobrunner.worker.broker import scripts
from jobrunner.worker.broker.keys import DEAD_LETTER, DEAD_LETTERS, JOBS, job_keys
from jobrunner.worker.store.jobs import JobStore

BATCH = 500  # hashes read per round trip


def _fields(store: JobStore) -> Iterator[tuple[str, tuple[str, ...]]]:
    """(hash key, its sealed fields) of every job record and dead letter."""
    for index, fields in ((JOBS, ("payload", "result")), (DEAD_LETTERS, ("payload",))):
        prefix = None if index == JOBS else DEAD_LETTER
        for raw in store.redis.zscan_iter(index, count=BATCH):
            job_id = raw[0].decode()
            yield (job_keys(job_id).record if prefix is None else prefix + job_id), fields


def reseal_all(store: JobStore) -> int:
    """Re-seal every payload and result under the store's newest key; how many changed."""
    reseal = store.redis.register_script(scripts.load("reseal"))
    changed = 0
    for key, fields in _fields(store):
        for field, value in zip(fields, store.redis.hmget(key, fields), strict=True):
            if value is None:
                continue
            old = value.decode()
            new = store.cipher.reseal(old)
            if new != old:
                changed += int(reseal(keys=[key], args=[field, old, new]))
    return changed
