"""Trials: named runs with their own settings (the points of a sweep, the architectures of a search) that report
metrics as they go. On the local backend they are units of :func:`~effdl.scale.run_units`; on Ray they are Ray Tune
trials, with resources per trial, an optional early-stopping scheduler, and an experiment folder from which a
sweep whose driver died continues without running its finished trials again (or plain Ray tasks where neither a
scheduler nor an experiment folder is asked for).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from effdl.core.config import check_choice
from effdl.core.errors import ConfigError
from effdl.scale.executor import (
    _ERROR,
    _OK,
    ExecutorConfig,
    UnitFailure,
    UnitResults,
    _call,
    _payload,
    _shared_from,
    ray_error,
    ray_session,
    run_units,
)

__all__ = ["SCHEDULERS", "run_trials"]

log = logging.getLogger(__name__)

SCHEDULERS = ("fifo", "asha")
_RESULT, _STATUS = "effdl_result", "effdl_status"
# what Ray Tune adds to every reported result
_TUNE_KEYS = {"timestamp", "done", "training_iteration", "time_this_iter_s", "time_total_s", "pid", "date", "hostname",
              "time_since_restore", "iterations_since_restore", "node_ip", "trial_id", "experiment_tag"}  # fmt: skip


def _no_report(metrics: dict[str, float]) -> None:
    del metrics  # on the local backend nothing stops a trial early


def _local_trial(shared: Any, unit: tuple[Callable, dict]) -> Any:
    fn, params = unit
    return fn(shared, params, _no_report)


def run_trials(
    fn: Callable[[Any, dict, Callable[[dict], None]], dict],
    trials: Mapping[str, dict],
    config: ExecutorConfig | None = None,
    *,
    shared: Any = None,
    storage: str | os.PathLike | None = None,
    scheduler: str = "fifo",
    metric: str | None = None,
    mode: str = "max",
    max_steps: int = 1,
    on_result: Callable[[str, Any], None] | None = None,
    progress: str | None = None,
) -> UnitResults:
    """Runs ``fn(shared, params, report)`` for every ``(key, params)`` of ``trials``; ``report(metrics)`` passes
    intermediate metrics (one call per step, e.g. per epoch) to the scheduler; the return value (a JSON-able dict)
    is the trial's result.

    Args:
        fn: a module-level function (Ray workers import it by name).
        trials: ``{key: params}`` (params JSON-able).
        config: backend and resources; on Ray each trial gets ``cpus_per_unit`` CPUs.
        shared: one object every trial reads (model, data), sent once.
        storage: Ray Tune's experiment folder; an unfinished experiment found there is continued (its finished
            trials are not run again). None: the caller keeps its own record of finished trials; then trials
            with the ``fifo`` scheduler run as Ray tasks, and with ``asha`` in a temporary Tune folder.
        scheduler: ``fifo`` (run every trial to the end) or ``asha`` (asynchronous successive halving on
            ``metric``: Ray only; a trial stopped early returns its last reported metrics with
            ``"stopped_early": True``).
        metric, mode: what ``asha`` compares, and ``max`` or ``min``.
        max_steps: the most ``report`` calls of one trial (``asha``'s horizon).
        on_result: called in this process with ``(key, result)`` as each trial finishes.
        progress: a progress bar with this label (local backend; Ray Tune logs its own status).

    Example:
        >>> def trial(shared, params, report):
        ...     return {"score": shared * params["x"]}
        >>> run_trials(trial, {"a": {"x": 2}}, shared=3).results
        {'a': {'score': 6}}
    """
    config = config or ExecutorConfig()
    check_choice("scheduler", scheduler, SCHEDULERS)
    check_choice("mode", mode, ("max", "min"))
    if scheduler != "fifo" and metric is None:
        raise ConfigError(f"scheduler={scheduler!r} compares trials on a metric; pass metric='accuracy' (say)")
    if config.backend != "ray" and scheduler != "fifo":
        raise ConfigError(f"scheduler={scheduler!r} runs on Ray Tune; use backend='ray' or scheduler='fifo'")
    if config.backend != "ray" or (scheduler == "fifo" and storage is None):
        # nothing for Tune to do (no early stopping, no experiment to restore): plain units, which on Ray are
        # tasks on reused worker processes instead of one new trial actor (a fresh interpreter) per trial
        units = {key: (fn, params) for key, params in trials.items()}
        return run_units(_local_trial, units, config, shared=shared, on_result=on_result, progress=progress)
    how = (scheduler, metric, mode, max_steps)
    if storage is not None:
        return _run_tune(fn, dict(trials), config, shared, Path(storage), how, on_result)
    with tempfile.TemporaryDirectory(prefix="effdl-tune-") as tmp:
        return _run_tune(fn, dict(trials), config, shared, Path(tmp), how, on_result)


def _tune_trainable(trial_config: dict, *, fn, trials, payload, digest, threads) -> None:
    from ray import tune

    torch.set_num_threads(threads)
    key = trial_config["key"]
    last: dict[str, float] = {}

    def report(metrics: dict[str, float]) -> None:
        last.update(metrics)
        tune.report(dict(metrics))

    status, value = _call(lambda shared, params: fn(shared, params, report), _shared_from(payload, digest), key,
                          trials[key])  # fmt: skip
    # the final report repeats the metrics (a scheduler expects them in every result) and carries the result
    tune.report({**last, _STATUS: status, _RESULT: json.dumps(value)})


def _run_tune(fn, trials: dict, config: ExecutorConfig, shared: Any, storage: Path, how: tuple, on_result):
    scheduler, metric, mode, max_steps = how
    payload, digest = _payload(shared, "ray")
    ray, started = ray_session(config)
    try:
        from ray import tune

        trainable = tune.with_resources(
            tune.with_parameters(
                _tune_trainable, fn=fn, trials=trials, payload=payload, digest=digest, threads=config.unit_threads()
            ),
            {"cpu": config.cpus_per_unit},
        )
        storage = storage.absolute()
        path = storage / "experiment"
        if tune.Tuner.can_restore(str(path)):
            log.info("continuing the Ray Tune experiment in %s (finished trials are kept)", path)
            tuner = tune.Tuner.restore(str(path), trainable=trainable, resume_unfinished=True, resume_errored=True)
        else:
            sched = None
            if scheduler == "asha":
                from ray.tune.schedulers import ASHAScheduler

                # max_t counts the trial's final report (its result) too, so a trial that runs every step finishes
                sched = ASHAScheduler(
                    metric=metric, mode=mode, max_t=max_steps + 1, grace_period=1, time_attr="training_iteration"
                )
            tuner = tune.Tuner(
                trainable,
                param_space={"key": tune.grid_search(list(trials))},
                # trials reuse their actors (one interpreter per CPU, not one per trial)
                tune_config=tune.TuneConfig(scheduler=sched, reuse_actors=True),
                run_config=tune.RunConfig(
                    name="experiment",
                    storage_path=str(storage),
                    verbose=0,
                    failure_config=tune.FailureConfig(max_failures=config.retries),
                ),
            )
        tune_log = logging.getLogger("ray.tune")
        level = tune_log.level
        tune_log.setLevel(max(level, logging.WARNING))  # Tune's progress lines at INFO; ours say what matters
        try:
            with contextlib.redirect_stdout(io.StringIO()) as text:  # Tune prints its status tables
                grid = tuner.fit()
        finally:
            tune_log.setLevel(level)
        log.debug("Ray Tune: %s", text.getvalue())
        return _collect(grid, trials, on_result)
    finally:
        if started:
            ray.shutdown()


def _collect(grid, trials: dict, on_result) -> UnitResults:
    results: dict[str, Any] = {}
    failures: dict[str, UnitFailure] = {}
    for res in grid:
        key = (res.config or {}).get("key")
        if key not in trials:
            continue
        metrics = res.metrics or {}
        if res.error is not None:
            failures[key] = UnitFailure(key=key, error=ray_error(res.error), detail="ray tune")
        elif metrics.get(_STATUS) == _OK:
            results[key] = json.loads(metrics[_RESULT])
        elif metrics.get(_STATUS) == _ERROR:
            error, detail = json.loads(metrics[_RESULT])
            failures[key] = UnitFailure(key=key, error=error, detail=detail)
        else:  # stopped by the scheduler after its last report
            last = {k: v for k, v in metrics.items() if isinstance(v, int | float) and k not in _TUNE_KEYS}
            results[key] = last | {"stopped_early": True}
    for key in trials:
        if key in results and on_result is not None:
            on_result(key, results[key])
        elif key not in results and key not in failures:
            failures[key] = UnitFailure(key=key, error="the trial did not run (Ray Tune returned no result)")
    return UnitResults(
        results={k: results[k] for k in trials if k in results}, failures=[failures[k] for k in trials if k in failures]
    )
