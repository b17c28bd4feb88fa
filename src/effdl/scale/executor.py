"""Run independent units of work (grid points, trained architectures, sensitivity evaluations) in this process, in
a local process pool, or as Ray tasks, with the same results for the same seeds.

A unit is ``fn(shared, unit)``: ``fn`` a module-level function (pickled by reference, so workers import it),
``shared`` one object every unit reads (a model and its data; sent to each worker once), ``unit`` the unit's own
small payload. A unit that raises is reported with its error and the others finish; a unit whose worker dies
(killed, out of memory) is run again up to ``retries`` times.
"""

from __future__ import annotations

import concurrent.futures as futures
import dataclasses
import hashlib
import logging
import multiprocessing
import os
import pickle
import re
import tempfile
import traceback
from collections.abc import Callable, Mapping
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

import torch

from effdl.core.config import Config, check_choice, check_range
from effdl.core.errors import ConfigError, EffdlError
from effdl.core.process import die_with_parent

__all__ = [
    "BACKENDS",
    "ExecutorConfig",
    "UnitFailure",
    "UnitResults",
    "UnitsFailedError",
    "ray_error",
    "ray_session",
    "run_units",
]

log = logging.getLogger(__name__)

BACKENDS = ("local", "ray")


@dataclasses.dataclass(frozen=True, kw_only=True)
class ExecutorConfig(Config):
    """Where units of work run.

    Attributes:
        backend: ``local`` (this process, or a pool of ``workers`` processes on this machine; no extra
            dependency) or ``ray`` (Ray tasks and Ray Tune trials; install ``effdl[ray]``).
        workers: local: processes (1: in this process); ray: CPUs of the Ray instance started on this machine
            when no cluster is joined (a joined cluster brings its own).
        address: Ray cluster to join, e.g. ``ray://head:10001`` or ``127.0.0.1:6379`` (None: ``$RAY_ADDRESS``,
            else start Ray on this machine).
        cpus_per_unit: CPUs Ray reserves for each unit or trial (it runs as many at once as the cluster holds).
        threads: torch threads inside each unit (None: ``cores // workers`` in a local pool, ``cpus_per_unit`` on
            Ray, unchanged in this process). Set it to get bit-identical results across backends: float sums
            may round differently with another thread count.
        retries: how many times a unit whose worker died is run again (a unit that raises is not retried:
            its error is reported).
        runtime_env: Ray's runtime environment for the workers (e.g. ``{"env_vars": {"PYTHONPATH": "/code"}}`` or
            ``{"py_modules": [...]}`` so that nodes of a cluster import functions that are not installed there).

    Example:
        >>> ExecutorConfig(backend="ray", address="127.0.0.1:6379").cpus_per_unit
        1.0
        >>> ExecutorConfig(backend="spark")
        Traceback (most recent call last):
        ...
        effdl.core.errors.ConfigError: backend must be one of 'local', 'ray', got backend='spark'
    """

    backend: str = "local"
    workers: int = 1
    address: str | None = None
    cpus_per_unit: float = 1.0
    threads: int | None = None
    retries: int = 2
    runtime_env: dict[str, Any] | None = None

    def validate(self) -> None:
        """Checks every field."""
        check_choice("backend", self.backend, BACKENDS)
        check_range("workers", self.workers, 1, hint="use workers=1 to run in this process")
        check_range("cpus_per_unit", self.cpus_per_unit, 0.0, hint="use cpus_per_unit=1", low_open=True)
        if self.threads is not None:
            check_range("threads", self.threads, 1, hint="use threads=None for cores // workers")
        check_range("retries", self.retries, 0, hint="use retries=2")
        for name in ("address", "runtime_env"):
            if getattr(self, name) is not None and self.backend != "ray":
                raise ConfigError(f"{name}= is a setting of the Ray backend; set backend='ray' or drop {name}")

    def unit_threads(self) -> int:
        """Torch threads each unit runs with outside this process."""
        if self.threads is not None:
            return self.threads
        if self.backend == "ray":
            return max(1, int(self.cpus_per_unit))
        return max(1, (os.cpu_count() or 1) // self.workers)


@dataclasses.dataclass
class UnitFailure:
    """A unit that did not finish: its key, the error (one line) and where it happened."""

    key: str
    error: str
    detail: str = ""

    def to_dict(self) -> dict[str, str]:
        """Plain dict."""
        return dataclasses.asdict(self)


class UnitsFailedError(EffdlError, RuntimeError):
    """Some units failed (the others finished and were recorded); ``failures`` lists them."""

    def __init__(self, what: str, failures: list[UnitFailure], hint: str) -> None:
        lines = "\n".join(f"  {f.key}: {f.error}" for f in failures[:10])
        more = f"\n  ... and {len(failures) - 10} more" if len(failures) > 10 else ""
        super().__init__(f"{len(failures)} {what} failed (the rest finished):\n{lines}{more}\n{hint}")
        self.failures = failures


@dataclasses.dataclass
class UnitResults:
    """What :func:`run_units` returns: results by key, in the order the units were given, and the failures."""

    results: dict[str, Any]
    failures: list[UnitFailure]

    def raise_failures(self, what: str = "units", hint: str = "") -> None:
        """Raises :class:`UnitsFailedError` if any unit failed."""
        if self.failures:
            raise UnitsFailedError(what, self.failures, hint)


# --- one unit, wherever it runs -------------------------------------------------------------------------------

_OK, _ERROR = "ok", "error"
_SHARED: dict[str, Any] = {}  # digest -> unpickled shared object, per worker process


def _call(fn: Callable, shared: Any, key: str, unit: Any) -> tuple[str, Any]:
    try:
        return _OK, fn(shared, unit)
    except Exception as exc:  # noqa: BLE001 - a unit's own error is reported, the other units go on
        where = traceback.extract_tb(exc.__traceback__)[-1]
        return _ERROR, (f"{type(exc).__name__}: {exc}", f"{where.filename}:{where.lineno}")


def _shared_from(payload: bytes, digest: str) -> Any:
    if digest not in _SHARED:
        _SHARED.clear()  # one shared object per worker at a time
        _SHARED[digest] = pickle.loads(payload)  # our own bytes, pickled by the driver of this run
    return _SHARED[digest]


def _pool_init(payload: bytes, digest: str, threads: int) -> None:
    die_with_parent()  # a killed driver leaves no workers behind
    torch.set_num_threads(threads)
    _shared_from(payload, digest)


def _pool_call(fn: Callable, digest: str, key: str, unit: Any, started: str) -> tuple[str, Any]:
    Path(started).touch()  # tells the driver, should this worker die, that this unit was running in it
    return _call(fn, _SHARED[digest], key, unit)


def _ray_call(fn: Callable, refs: list, digest: str, threads: int, key: str, unit: Any) -> tuple[str, Any]:
    # the shared object's reference comes inside a list, so Ray does not fetch it for every task: a worker
    # fetches and unpickles it once, then reuses it for the next units of the run
    torch.set_num_threads(threads)
    if digest not in _SHARED:
        import ray

        _shared_from(ray.get(refs[0]), digest)
    return _call(fn, _SHARED[digest], key, unit)


# --- the backends ---------------------------------------------------------------------------------------------


def run_units(
    fn: Callable[[Any, Any], Any],
    units: Mapping[str, Any],
    config: ExecutorConfig | None = None,
    *,
    shared: Any = None,
    on_result: Callable[[str, Any], None] | None = None,
    progress: str | None = None,
) -> UnitResults:
    """Runs ``fn(shared, unit)`` for every ``(key, unit)`` of ``units`` on the backend of ``config``.

    Args:
        fn: a module-level function (workers import it by name); its result must pickle.
        units: ``{key: unit}``; keys name the units in failures and results.
        config: backend and resources (default: in this process).
        shared: one object all units read, sent to each worker once (must pickle unless run in this process).
        on_result: called in this process as each unit finishes, e.g. to save partial progress.
        progress: a progress bar with this label (None: none).

    Returns:
        :class:`UnitResults`: results in the order of ``units``; units that raised or whose worker died more
        than ``config.retries`` times are in ``failures`` and have no result.

    Example:
        >>> out = run_units(pow, {"a": 2, "b": 3}, shared=10)
        >>> out.results, out.failures
        ({'a': 100, 'b': 1000}, [])
    """
    config = config or ExecutorConfig()
    bar = None
    if progress and units:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(units), desc=progress, unit="unit")
    results: dict[str, Any] = {}
    failures: dict[str, UnitFailure] = {}

    def finish(key: str, status: str, value: Any) -> None:
        if status == _OK:
            results[key] = value
            if on_result is not None:
                on_result(key, value)
        else:
            error, detail = value
            log.warning("unit %s failed: %s (%s)", key, error, detail)
            failures[key] = UnitFailure(key=key, error=error, detail=detail)
        if bar is not None:
            bar.update()

    try:
        if config.backend == "ray":
            _run_ray(fn, dict(units), config, shared, finish)
        elif config.workers == 1 or len(units) < 2:
            threads = torch.get_num_threads()
            torch.set_num_threads(config.threads or threads)
            try:
                for key, unit in units.items():
                    finish(key, *_call(fn, shared, key, unit))
            finally:
                torch.set_num_threads(threads)
        else:
            _run_pool(fn, dict(units), config, shared, finish)
    finally:
        if bar is not None:
            bar.close()
    return UnitResults(
        results={k: results[k] for k in units if k in results}, failures=[failures[k] for k in units if k in failures]
    )


def _payload(shared: Any, backend: str) -> tuple[bytes, str]:
    # plain pickle bytes, not the objects: a process pool would move tensors into shared memory, and units that
    # write into the parameters (a landscape point) would overwrite one another's and the caller's
    try:
        payload = pickle.dumps(shared, protocol=pickle.HIGHEST_PROTOCOL)
    except (pickle.PicklingError, AttributeError, TypeError) as exc:
        raise ConfigError(
            f"the {backend} backend sends the model and data to its workers, and they do not pickle ({exc}); use "
            "module-level classes and functions (no lambdas or local classes), or run in this process (workers=1)"
        ) from exc
    return payload, hashlib.sha256(payload).hexdigest()[:16]


def _run_pool(fn, units: dict, config: ExecutorConfig, shared: Any, finish: Callable) -> None:
    payload, digest = _payload(shared, "local")
    todo = dict(units)
    number = {key: i for i, key in enumerate(units)}
    deaths = dict.fromkeys(units, 0)
    # spawn, not fork: a forked child of a process that has used OpenMP can hang in its first parallel region
    ctx = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="effdl-units-") as tmp:
        marks = {key: Path(tmp) / str(number[key]) for key in units}
        while todo:
            workers = min(config.workers, len(todo))
            with futures.ProcessPoolExecutor(
                workers, mp_context=ctx, initializer=_pool_init, initargs=(payload, digest, config.unit_threads())
            ) as pool:
                jobs = {pool.submit(_pool_call, fn, digest, k, u, str(marks[k])): k for k, u in todo.items()}
                try:
                    for job in futures.as_completed(jobs):
                        key = jobs[job]
                        try:
                            status, value = job.result()
                        except BrokenProcessPool:
                            continue  # a worker died: the unfinished units of this pool run again below
                        todo.pop(key)
                        finish(key, status, value)
                except BaseException:
                    for job in jobs:
                        job.cancel()
                    raise
            # the pool broke: a unit that had started lost its worker (the one that died, or one the pool stopped
            # with it); a unit still queued did not
            for key in list(todo):
                if marks[key].exists():
                    marks[key].unlink()
                    deaths[key] += 1
                if deaths[key] > config.retries:
                    todo.pop(key)
                    finish(key, _ERROR, (f"its worker died {deaths[key]} times (killed or out of memory)", "worker"))
            if todo:
                log.warning("a worker died; running %d unfinished unit(s) again in a new pool", len(todo))


def ray_session(config: ExecutorConfig):
    """Joins the Ray cluster of ``config`` (``address``, else ``$RAY_ADDRESS``), or starts Ray on this machine with
    ``workers`` CPUs, unless Ray is already running in this process. Returns ``(ray, started)``: ``started`` is
    True when this call started it (then the caller shuts it down)."""
    try:
        import ray
    except ImportError as exc:
        raise ConfigError("backend='ray' needs Ray: pip install 'effdl[ray]' (or use backend='local')") from exc
    if ray.is_initialized():
        return ray, False
    address = config.address or os.environ.get("RAY_ADDRESS") or None
    kwargs: dict[str, Any] = {"log_to_driver": False, "configure_logging": False, "runtime_env": config.runtime_env}
    if address is None:
        kwargs.update(num_cpus=config.workers, include_dashboard=False)
    log.info("starting Ray (%s)", f"joining {address}" if address else f"locally, {config.workers} CPU(s)")
    ray.init(address=address, **kwargs)
    return ray, True


def ray_error(exc: BaseException) -> str:
    """One line for a Ray error: its type and the last line of its message that names an error (Ray's messages
    hold the remote traceback, with terminal colours)."""
    lines = [re.sub(r"\x1b\[[0-9;]*m", "", line).strip() for line in str(exc).splitlines()]
    lines = [line for line in lines if line]
    named = [line for line in lines if "Error" in line.split(":")[0] or "Exception" in line.split(":")[0]]
    return f"{type(exc).__name__}: {(named or lines or [''])[-1]}"


def _run_ray(fn, units: dict, config: ExecutorConfig, shared: Any, finish: Callable) -> None:
    payload, digest = _payload(shared, "ray")
    ray, started = ray_session(config)
    try:
        from ray.exceptions import RayError

        remote = ray.remote(_ray_call).options(
            num_cpus=config.cpus_per_unit, max_retries=config.retries, retry_exceptions=False
        )
        ref = ray.put(payload)
        threads = config.unit_threads()
        pending = {remote.remote(fn, [ref], digest, threads, k, u): k for k, u in units.items()}
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            for obj in done:
                key = pending.pop(obj)
                try:
                    status, value = ray.get(obj)
                except RayError as exc:  # the worker died more than max_retries times, or the node went away
                    status, value = _ERROR, (ray_error(exc), "ray")
                finish(key, status, value)
    finally:
        if started:
            ray.shutdown()
