"""Cached steps, `@step(cache=True)`: a run whose code version, parameters and inputs match an
earlier successful run takes that run's result and output files instead of running again. The
step must be deterministic (same inputs, same bytes), which is what makes a reused output the
same bytes as a recomputed one.

**The key** of a run is the sha256 of
- the step's name and **code version**: the declared `version` (bump it for a change the source
  does not show: a library, a model file, code outside the step's folder) and a hash of the
  source of the step's whole module and of the modules it imports from its own folder or below,
  taken at import, so an edit to a helper beside the step is a new version too (`code_version`);
- its **parameters**: its payload, validated into its own model;
- its **inputs**: the upstream result. An upstream that a cached step returned earlier in this
  job stands for that step's key (the keys chain like a Merkle tree, so nothing is rehashed and
  lineage facts riding in results do not matter: steps replace files, never rewrite one they were
  handed, so a result names the same bytes all along); any other upstream counts by value, with each
  string naming a file in the job's work directory replaced by the file's sha256; and the
  content of files a step declares with `inputs=` (paths outside the work directory otherwise
  count by name only: pass a content hash along, as the feature pipeline's `ingest` does).

**Outputs** are the files in the job's work directory (`ctx.work_dir`) that the result names.
Saving a run hard-links each into <data_dir>/cache/files/ by content hash and records the entry
in Redis (the result, and which file is which); a hit links them back into this job's work
directory, with the result's paths rewritten to it. A file gone from the cache, or whose bytes
no longer match their hash, makes the hit a miss: the step runs. An entry lasts
`data.cache_ttl_s` from its last use; `jobrunner cache prune` removes what expired.

A job submitted with `cache=False` (`submit --no-cache`) runs every step and refreshes the
entries. A run that reused an entry is flagged `cached` in its job context, so the step tree
(`status JOB_ID`) and the step metrics mark it; the step's `reuse` hook may mark its result too
(the feature pipeline's lineage facts).

The entry store is named by the app (`CACHE_SETTING`, a dotted path, as the middleware is), so
tasks/ never imports the Redis layer that implements it (worker/store/step_cache.py).
"""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib.util
import inspect
import json
import marshal
import re
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from types import ModuleType
from typing import TYPE_CHECKING, Any, Protocol
from weakref import WeakKeyDictionary

from celery import Celery
from celery.utils.imports import symbol_by_name

from jobrunner.tasks.files import link_file, sha256_file

if TYPE_CHECKING:
    from jobrunner.tasks.step import StepContext

CACHE_SETTING = "jobrunner_step_cache"  # app setting: dotted path of the entry store's factory
CACHED = "cached"  # job-context flag of a run that reused an entry
USE_CACHE = "cache"  # job-context flag: False runs every cached step (`submit --no-cache`)
CODE_VERSION_CHARS = 16
SHA256 = re.compile(r"[0-9a-f]{64}")

# What the step hook receives back on a hit: (result, upstream, ctx) -> this run's result.
Reuse = Callable[[Any, Any, "StepContext"], Any]
# Files whose content a step reads besides its upstream: (payload, upstream) -> paths.
Inputs = Callable[[Any, Any], Iterable[str | Path]]


class CacheStore(Protocol):
    """Where entries are kept (Redis, in worker/store/step_cache.py)."""

    def get(self, key: str) -> dict[str, Any] | None:
        """The entry saved under `key` (its lifetime renewed), or None."""

    def put(self, key: str, entry: dict[str, Any]) -> None:
        """Save `entry` under `key`, replacing any."""

    def remember(self, job_id: str, results: dict[str, str]) -> None:
        """Note, for the job's later steps, which key produced each result (by digest)."""

    def recall(self, job_id: str, digests: list[str]) -> list[str | None]:
        """The keys that produced these results in this job, where known."""


@dataclass(frozen=True)
class CacheSpec:
    """How a step is cached: its code version and its optional hooks."""

    code_version: str
    inputs: Inputs | None = None
    reuse: Reuse | None = None


@functools.cache
def source_hash(module: str) -> str:
    """A hash of the code a module's steps run: its source and that of every module it imports
    from its own folder or below, transitively (the helpers beside a step), so an edit to any of
    them is a new code version. Modules elsewhere (the standard library, installed packages,
    jobrunner's framework) are not covered: bump a step's `version` for those. Take it at
    import, so it names the code this process runs even if a file is edited later; a module
    without a source file counts by its functions' bytecode."""
    root = sys.modules[module]
    folder = _folder(root)
    texts: dict[str, bytes] = {module: _module_text(root)}
    pending = [module]
    while pending:
        name = pending.pop()
        for imported in _imports(name, texts[name]) - texts.keys():
            path = _source_file(imported)
            if folder and path and path.suffix == ".py" and path.resolve().is_relative_to(folder):
                texts[imported] = path.read_bytes()
                pending.append(imported)
    hashed = hashlib.sha256()
    for name in sorted(texts):
        hashed.update(f"{name}\0{len(texts[name])}\0".encode() + texts[name])
    return hashed.hexdigest()[:CODE_VERSION_CHARS]


def _folder(module: ModuleType) -> Path | None:
    """The folder whose modules count as a module's own helpers."""
    file = getattr(module, "__file__", None)
    return Path(file).resolve().parent if file else None


def _module_text(module: ModuleType) -> bytes:
    """A module's source; its functions' bytecode if it has none (a frozen or generated one)."""
    file = getattr(module, "__file__", None)
    if file and file.endswith(".py") and Path(file).is_file():
        return Path(file).read_bytes()
    codes = sorted(
        (name, marshal.dumps(value.__code__))
        for name, value in vars(module).items()
        if inspect.isfunction(value)
    )
    return b"".join(name.encode() + code for name, code in codes)


@functools.cache  # the steps of a folder share most of their helpers: each is parsed once
def _imports(module: str, source: bytes) -> frozenset[str]:
    """The modules a module's source may import, anywhere in it (a name imported from a package
    may be a submodule: both are listed)."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):  # bytecode, not source
        return frozenset()
    package = module if _is_package(module) else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                try:
                    base = importlib.util.resolve_name("." * node.level + base, package)
                except ImportError:  # beyond the top-level package
                    continue
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return frozenset(found)


def _is_package(module: str) -> bool:
    return hasattr(sys.modules.get(module), "__path__")


def _source_file(module: str) -> Path | None:
    """Where a module's code lives, without importing anything: found in sys.modules, or by
    its spec when its package is imported (a helper imported lazily, inside a function)."""
    loaded = sys.modules.get(module)
    if loaded is not None:
        file = getattr(loaded, "__file__", None)
        return Path(file) if file else None
    parent = module.rpartition(".")[0]
    if parent and parent not in sys.modules:
        return None  # finding it would import its package
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    return Path(spec.origin) if spec is not None and spec.has_location and spec.origin else None


def code_version(fn: Callable[..., Any], version: str) -> str:
    """The declared version and the source of `fn`'s module and its helpers, in one hash."""
    return hashlib.sha256(f"{version}\0{source_hash(fn.__module__)}".encode()).hexdigest()[
        :CODE_VERSION_CHARS
    ]


def digest(value: Any) -> str:
    """A JSON value's sha256, independent of key order."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


_STORES: WeakKeyDictionary[Celery, CacheStore | None] = WeakKeyDictionary()


def store_of(app: Celery) -> CacheStore | None:
    """The entry store `app` names, opened once per app on first use (in the pool process,
    after the fork); None for an app naming none: steps then always run."""
    if app not in _STORES:
        name = app.conf.get(CACHE_SETTING)
        _STORES[app] = symbol_by_name(name)() if name else None
    return _STORES[app]


def _confined(name: str) -> bool:
    """No `..` in it: a name in the work directory cannot step out of it."""
    return bool(name) and ".." not in PurePosixPath(name).parts


def _work_files(value: Any, work: Path) -> Iterable[str]:
    """Every string in `value` naming a file in the work directory `work`."""
    if isinstance(value, str):
        if value.startswith(f"{work}/") and _confined(value) and Path(value).is_file():
            yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _work_files(item, work)
    elif isinstance(value, list):
        for item in value:
            yield from _work_files(item, work)


def work_files(value: Any, ctx: StepContext) -> list[Path]:
    """The files in the job's work directory that a result names, each once."""
    return [Path(name) for name in dict.fromkeys(_work_files(value, ctx.work_dir))]


def _replace(value: Any, swap: Callable[[str], Any]) -> Any:
    if isinstance(value, str):
        return swap(value)
    if isinstance(value, dict):
        return {name: _replace(item, swap) for name, item in value.items()}
    if isinstance(value, list):
        return [_replace(item, swap) for item in value]
    return value


@dataclass(frozen=True)
class CachedCall:
    """One run of a cached step, before it is known whether it runs."""

    step: str
    spec: CacheSpec
    ctx: StepContext
    params: dict[str, Any]  # the step's validated payload, as JSON
    payload: Any  # the same, as the step's model (for `inputs`)
    upstream: Any

    def key(self, store: CacheStore) -> str:
        declared = [] if self.spec.inputs is None else self.spec.inputs(self.payload, self.upstream)
        files = {str(path): sha256_file(Path(path)) for path in declared}
        inputs = self._upstream(store)
        return digest([self.step, self.spec.code_version, self.params, inputs, files])

    def _upstream(self, store: CacheStore) -> Any:
        """The upstream, as the key sees it: a result of an earlier cached step by its key, any
        other by value with its work files by content hash."""
        items = self.upstream if isinstance(self.upstream, list) else []
        values = [self.upstream, *items]
        keys = store.recall(self.ctx.job_id, [digest(value) for value in values])
        if keys[0] is not None:
            return {"step": keys[0]}
        by_value = [
            {"step": key} if key is not None else self._by_content(value)
            for value, key in zip(items, keys[1:], strict=True)
        ]
        return by_value if isinstance(self.upstream, list) else self._by_content(self.upstream)

    def _by_content(self, value: Any) -> Any:
        named = {str(path): path for path in work_files(value, self.ctx)}
        return _replace(value, lambda s: {"sha256": sha256_file(named[s])} if s in named else s)


def run_cached(
    store: CacheStore | None, call: CachedCall, use: bool, compute: Callable[[], Any]
) -> tuple[Any, bool]:
    """The step's result, and whether it came from the cache."""
    if store is None:
        return compute(), False
    key = call.key(store)
    entry = store.get(key) if use else None
    result = None if entry is None else _restore(entry, call.ctx)
    reused = result is not None
    if result is not None and call.spec.reuse is not None:
        result = call.spec.reuse(result, call.upstream, call.ctx)
    if result is None:
        result = compute()
        store.put(key, _save(call, result))
    store.remember(call.ctx.job_id, {digest(result): key})
    return result, reused


def files_dir(data_dir: Path) -> Path:
    """Where the cache keeps output files, by content hash."""
    return data_dir / "cache" / "files"


def cache_file(data_dir: Path, sha256: str) -> Path:
    return files_dir(data_dir) / sha256[:2] / sha256


def _save(call: CachedCall, result: Any) -> dict[str, Any]:
    """The entry of a run that just computed `result`: its output files linked into the cache."""
    ctx = call.ctx
    files = {}
    for path in work_files(result, ctx):
        sha256 = sha256_file(path)
        link_file(path, cache_file(ctx.data_dir, sha256))
        files[path.relative_to(ctx.work_dir).as_posix()] = sha256
    return {
        "step": call.step,
        "pipeline": ctx.pipeline,
        "job_id": ctx.job_id,
        "saved_at": time.time(),
        "code_version": call.spec.code_version,
        "work_dir": str(ctx.work_dir),
        "files": files,
        "result": result,
    }


def _restore(entry: dict[str, Any], ctx: StepContext) -> Any | None:
    """The entry's result for this job, its files linked into the job's work directory; None
    (a miss) if a file is gone or its bytes changed, or the entry is malformed."""
    files: dict[str, str] = entry.get("files") or {}
    if not all(
        _confined(name) and not name.startswith("/") and SHA256.fullmatch(sha)
        for name, sha in files.items()
    ):
        return None
    for sha256 in files.values():
        source = cache_file(ctx.data_dir, sha256)
        if not source.is_file():
            return None
        if sha256_file(source) != sha256:
            source.unlink(missing_ok=True)  # corrupt: never served again
            return None
    try:
        for name, sha256 in files.items():
            link_file(cache_file(ctx.data_dir, sha256), ctx.work_dir / name)
    except FileNotFoundError:  # pruned since it was checked
        return None
    moved = {f"{entry['work_dir']}/{name}": str(ctx.work_dir / name) for name in files}
    return _replace(entry["result"], lambda s: moved.get(s, s))
