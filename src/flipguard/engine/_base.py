"""Where partitioned work runs: a map over partitions, merged exactly by the caller.

An :class:`Engine` has one job, :meth:`Engine.map`: call ``fn(item, shared)``
for every item and return the results **in item order**.  Everything that
combines the results (sums, counts, top-k, Merkle roots) happens on the
caller's side in that fixed order, so a result never depends on which engine
ran the map, how many workers it had or in which order tasks finished.

``fn`` must be a module-level function (or a ``functools.partial`` of one)
and deterministic: Ray may run a task twice when a worker is lost.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from .. import exceptions as _exc
from ..exceptions import FlipguardError, InvalidParameterError

__all__ = ["ENGINE_NAMES", "Engine", "LocalEngine", "get_engine"]

ENGINE_NAMES = ("local", "ray")


@dataclass(frozen=True)
class _Failure:
    """A flipguard error raised inside a task, carried back as data (no traceback noise)."""

    kind: str
    message: str

    def raise_(self):
        cls = getattr(_exc, self.kind, FlipguardError)
        raise cls(self.message)


def run_task(fn: Callable, item: Any, shared: Any) -> Any:
    """Run one task; flipguard errors come back as :class:`_Failure` values."""
    try:
        return fn(item, shared)
    except FlipguardError as exc:
        return _Failure(type(exc).__name__, str(exc))


def unwrap(result: Any) -> Any:
    if isinstance(result, _Failure):
        result.raise_()
    return result


@contextmanager
def progress_bar(desc: str, total: int, enabled: bool):
    """A rich progress bar on stderr (only on a terminal); yields ``advance()``."""
    if not (enabled and desc and sys.stderr.isatty() and total > 1):
        yield lambda n=1: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeRemainingColumn(), transient=True, redirect_stdout=False) as bar:
        task = bar.add_task(desc, total=total)
        yield lambda n=1: bar.advance(task, n)


class Engine:
    """Base class: run ``fn(item, shared)`` over items, results in item order.

    Parameters
    ----------
    progress : bool, default=True
        Show a progress bar across partitions when stderr is a terminal.
    """

    name = "engine"

    def __init__(self, *, progress: bool = True):
        self.progress = progress

    @property
    def workers(self) -> int:
        """How many tasks run at once."""
        raise NotImplementedError

    def map(self, fn: Callable, items: Sequence, *, shared: Any = None, desc: str = "") -> list:
        """``[fn(item, shared) for item in items]``, possibly in parallel; errors re-raised here.

        ``shared`` is sent to each worker once (a fitted model, thresholds).
        The first :class:`~flipguard.exceptions.FlipguardError` raised by a
        task (in item order) is raised again, unchanged, by ``map``.
        """
        results = self._map(fn, list(items), shared, desc)
        return [unwrap(r) for r in results]

    def _map(self, fn, items, shared, desc) -> list:  # pragma: no cover - abstract
        raise NotImplementedError

    def close(self) -> None:
        """Release what the engine started (a local Ray instance)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def describe(self) -> dict:
        return {"engine": self.name, "workers": self.workers}


def available_cores() -> int:
    """The cores this process may use: its CPU affinity (a container's or taskset's share), not the host's."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not on Linux
        return max(1, os.cpu_count() or 1)


class LocalEngine(Engine):
    """In-process engine: tasks run in this process (threads when ``n_jobs > 1``).

    Parameters
    ----------
    n_jobs : int, default=1
        Threads running tasks at once (seal/verify release the GIL while
        hashing and reading; model work runs one task at a time anyway).
    progress : bool, default=True

    Examples
    --------
    >>> from flipguard.engine import LocalEngine
    >>> LocalEngine().map(lambda x, k: x * k, [1, 2, 3], shared=10)
    [10, 20, 30]
    """

    name = "local"

    def __init__(self, *, n_jobs: int = 1, progress: bool = True):
        super().__init__(progress=progress)
        self.n_jobs = n_jobs

    @property
    def workers(self) -> int:
        return available_cores() if self.n_jobs == -1 else max(1, int(self.n_jobs))

    def _map(self, fn, items, shared, desc):
        with progress_bar(desc, len(items), self.progress) as advance:
            if self.workers == 1 or len(items) <= 1:
                out = []
                for item in items:
                    out.append(run_task(fn, item, shared))
                    advance()
                return out
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(max_workers=self.workers) as pool:
                futures = [pool.submit(run_task, fn, item, shared) for item in items]
                out = []
                for f in futures:
                    out.append(f.result())
                    advance()
                return out


def get_engine(engine: str | Engine | None = "local", *, ray_address: str | None = None,
               workers: int | None = None, progress: bool = True) -> Engine:
    """An :class:`Engine` from a name (``"local"`` or ``"ray"``) or an engine instance.

    Parameters
    ----------
    engine : {"local", "ray"} or Engine, default="local"
    ray_address : str, optional
        For ``"ray"``: ``None`` starts a local Ray instance sized to the machine
        (or uses the one already running in this process); ``"host:6379"`` (the
        head's address) or ``"auto"`` joins the cluster as a driver on one of its
        nodes; ``"ray://host:10001"`` connects a Ray client from outside it.
    workers : int, optional
        Tasks at once (default: the local engine 1, Ray the cluster's CPUs).
    """
    if isinstance(engine, Engine):
        return engine
    if engine in (None, "local"):
        if ray_address is not None:
            raise InvalidParameterError("--ray-address needs --engine ray")
        return LocalEngine(n_jobs=workers or 1, progress=progress)
    if engine == "ray":
        from ._ray import RayEngine

        return RayEngine(address=ray_address, workers=workers, progress=progress)
    raise InvalidParameterError(f"--engine must be one of {', '.join(ENGINE_NAMES)}; got {engine!r}")
