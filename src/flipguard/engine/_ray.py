"""The Ray engine: partition tasks as Ray tasks, retried by Ray when a worker is lost.

Ray is imported only here (and only when ``--engine ray`` is asked for).  The
engine uses plain Ray tasks (``ray.remote`` with ``max_retries``), not a
scheduler of its own: Ray places the tasks, restarts them on another worker
when one dies, and keeps ``shared`` objects in its object store.  Ray Data's
``read_parquet`` is not used for the map because it re-blocks rows across
files, and flipguard's results are per file (partition names and row
positions); each task reads its files with pyarrow, one at a time, so a worker
holds one partition at a time.

Items are **batched**: consecutive items go to one Ray task, about
``tasks_per_worker`` (4) tasks per worker, and the task runs them one after
another (one partition in memory at a time) and returns their results as a
list.  Each Ray task costs a round trip through the driver, the raylet and the
worker (submission, lease, argument resolution, result: about 2 ms of CPU in
each, 6.4-6.9 ms per task measured, docs/performance.md), and with at most
``workers`` tasks in flight a worker waits for that round trip before its
next task; seal and verify spend only 10-25 ms per 250k-row partition, so
that cost is paid per batch instead of per partition.
Several batches per worker keep the load balanced; results are the same item
by item whatever the batching, and a retried batch re-runs deterministic
tasks.
"""

from __future__ import annotations

from ..exceptions import FlipguardError, InvalidParameterError
from ._base import Engine, available_cores, progress_bar, run_task

__all__ = ["RayEngine"]


def run_batch(fn, items: list, shared) -> list:
    """Run ``fn`` over consecutive items in one Ray task; one item (partition) in memory at a time."""
    return [run_task(fn, item, shared) for item in items]


def batches(n_items: int, n_batches: int) -> list[range]:
    """``n_items`` consecutive indices split into ``n_batches`` ranges whose sizes differ by at most one.

    Never an empty range: fewer ranges when there are fewer items, none for no items.
    """
    if n_items <= 0:
        return []
    n_batches = max(1, min(n_items, n_batches))
    size, extra = divmod(n_items, n_batches)
    out, start = [], 0
    for b in range(n_batches):
        stop = start + size + (b < extra)
        out.append(range(start, stop))
        start = stop
    return out


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
    tasks_per_worker : int, default=4
        Items are batched into about this many Ray tasks per worker (never
        more tasks than items); a task runs its items one at a time.
    progress : bool, default=True
    """

    name = "ray"

    def __init__(self, *, address: str | None = None, workers: int | None = None, max_retries: int = 3,
                 tasks_per_worker: int = 4, progress: bool = True):
        super().__init__(progress=progress)
        self.address = address
        self.max_retries = max_retries
        self.tasks_per_worker = tasks_per_worker
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
                    ray.init(num_cpus=available_cores(), **kwargs)
                else:
                    ray.init(address=self.address, **kwargs)
            except (ConnectionError, ValueError, RuntimeError) as exc:
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                raise InvalidParameterError(f"--ray-address {self.address or '(local)'}: cannot start or join "
                                            f"Ray: {first}") from None
            self._started = True
        if self._remote is None:
            self._remote = ray.remote(run_batch).options(max_retries=self.max_retries, retry_exceptions=False,
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
        groups = batches(len(items), limit * max(1, int(self.tasks_per_worker)))
        fn_ref, shared_ref = ray.put(fn), ray.put(shared)
        refs: list = [None] * len(groups)
        size = {}
        pending = []
        nxt = 0
        with progress_bar(desc, len(items), self.progress) as advance:
            while nxt < len(groups) or pending:
                while nxt < len(groups) and len(pending) < limit:
                    g = groups[nxt]
                    ref = self._remote.remote(fn_ref, items[g.start:g.stop], shared_ref)
                    refs[nxt] = ref
                    size[ref] = len(g)
                    pending.append(ref)
                    nxt += 1
                done, pending = ray.wait(pending, num_returns=1)
                advance(sum(size[r] for r in done))
            try:
                return [r for batch in ray.get(refs) for r in batch]
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
