"""The Ray engine: one Ray task per partition, retried by Ray when a worker is lost.

Ray is imported only here (and only when ``--engine ray`` is asked for).  The
engine uses plain Ray tasks (``ray.remote`` with ``max_retries``), not a
scheduler of its own: Ray places the tasks, restarts them on another worker
when one dies, and keeps ``shared`` objects in its object store.  Ray Data's
``read_parquet`` is not used for the map because it re-blocks rows across
files, and flipguard's results are per file (partition names and row
positions); each task reads its one file with pyarrow, so a worker holds one
partition at a time.
"""

from __future__ import annotations

import os

from ..exceptions import FlipguardError, InvalidParameterError
from ._base import Engine, progress_bar, run_task

__all__ = ["RayEngine"]


def _import_ray():
    try:
        import ray
    except ImportError:  # pragma: no cover - depends on the environment
        raise InvalidParameterError("--engine ray needs Ray: pip install 'flipguard[ray]'") from None
    return ray


class RayEngine(Engine):
    """Run partition tasks on Ray.

    Parameters
    ----------
    address : str, optional
        ``None``: use the Ray instance this process already started, else start
        a local one sized to the machine (shut down again by :meth:`close`).
        ``"host:6379"`` (the head's address) or ``"auto"``: join the running
        cluster; ``"ray://host:10001"``: Ray client.
    workers : int, optional
        Tasks in flight at once (default: the cluster's CPUs).  Bounds memory:
        each task holds one partition.
    max_retries : int, default=3
        Times Ray re-runs a task whose worker died (tasks are deterministic, so
        a retried task returns the same result).  Errors in the data itself
        (a flipguard error) are not retried.
    progress : bool, default=True
    """

    name = "ray"

    def __init__(self, *, address: str | None = None, workers: int | None = None, max_retries: int = 3,
                 progress: bool = True):
        super().__init__(progress=progress)
        self.address = address
        self.max_retries = max_retries
        self._workers = workers
        self._started = False
        self._remote = None

    def _ray(self):
        ray = _import_ray()
        if not ray.is_initialized():
            kwargs = dict(include_dashboard=False, log_to_driver=False, logging_level="ERROR",
                          configure_logging=False)
            try:
                if self.address is None:
                    ray.init(num_cpus=os.cpu_count() or 1, **kwargs)
                else:
                    ray.init(address=self.address, **kwargs)
            except (ConnectionError, ValueError, RuntimeError) as exc:
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                raise InvalidParameterError(f"--ray-address {self.address or '(local)'}: cannot start or join "
                                            f"Ray: {first}") from None
            self._started = True
        if self._remote is None:
            self._remote = ray.remote(run_task).options(max_retries=self.max_retries, retry_exceptions=False,
                                                        num_cpus=1)
        return ray

    @property
    def workers(self) -> int:
        if self._workers:
            return int(self._workers)
        ray = self._ray()
        return max(1, int(ray.cluster_resources().get("CPU", 1)))

    def _map(self, fn, items, shared, desc):
        ray = self._ray()
        limit = self.workers
        fn_ref, shared_ref = ray.put(fn), ray.put(shared)
        refs: list = [None] * len(items)
        index = {}
        pending = []
        nxt = 0
        with progress_bar(desc, len(items), self.progress) as advance:
            while nxt < len(items) or pending:
                while nxt < len(items) and len(pending) < limit:
                    ref = self._remote.remote(fn_ref, items[nxt], shared_ref)
                    refs[nxt] = ref
                    index[ref] = nxt
                    pending.append(ref)
                    nxt += 1
                done, pending = ray.wait(pending, num_returns=1)
                advance(len(done))
            try:
                return ray.get(refs)
            except ray.exceptions.RayError as exc:
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                raise FlipguardError(f"a Ray task failed after {self.max_retries} retries: {first}") from None

    def describe(self) -> dict:
        return {"engine": self.name, "workers": self.workers, "address": self.address or "local"}

    def close(self) -> None:
        if self._started:
            ray = _import_ray()
            ray.shutdown()
            self._started = False
            self._remote = None
