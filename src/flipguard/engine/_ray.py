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

import contextlib
import os
import socket
import sys
import tempfile
import warnings
from urllib.parse import urlsplit

from ..exceptions import FlipguardError, InvalidParameterError
from ._base import Engine, available_cores, progress_bar, run_task

__all__ = ["RayEngine"]

#: Seconds to wait for the cluster's address to accept a TCP connection before ``ray.init``.
CONNECT_TIMEOUT_S = 10

#: Ray's own knobs for joining a cluster, applied when this process imports Ray to join one (Ray reads them
#: once, at import; a value already in the environment wins).  Ray's defaults wait 30 s for the GCS to answer
#: and try 20 times: about 12 minutes before ``ray.init`` gives up on an address where something listens but
#: no Ray head answers (a dashboard port, say).  With these: 2 tries of 5 + 8 + 1 s, about 30 s.
JOIN_KNOBS = {"RAY_py_gcs_connect_timeout_s": "8", "RAY_NUM_REDIS_GET_RETRIES": "2"}

#: Warnings ``ray.init`` prints that say nothing about flipguard's work (silenced around that call only):
#: Ray's tip about a future default for accelerator env vars (flipguard's tasks ask for no GPU), and the Ray
#: client's "connection timed out" hint, which flipguard's own error line replaces.
QUIET_WARNINGS = ((FutureWarning, r"Tip: In future versions of Ray, Ray will no longer override accelerator"),
                  (UserWarning, r"Ray Client connection timed out"))


@contextlib.contextmanager
def native_stderr_held():
    """Hold what is written on file descriptor 2 inside the block; write it out after, unless the block raised.

    Joining an address where something listens but no Ray head answers, Ray's C++ core logs each failed
    try on the process's stderr ("Failed to connect to GCS ...") before ``ray.init`` raises; the command's
    own one-line error says the same.  On success whatever was held (a warning, a note) is written out as
    it would have been, only later.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    held = tempfile.TemporaryFile()
    raised = False
    try:
        os.dup2(held.fileno(), 2)
        yield
    except BaseException:
        raised = True
        raise
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        if not raised:
            held.seek(0)
            if text := held.read():
                os.write(2, text)
        held.close()


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


def _import_ray(join: bool = False):
    """``import ray``; when this process imports it to join a cluster, with :data:`JOIN_KNOBS` in force."""
    knobs = {k: v for k, v in JOIN_KNOBS.items() if k not in os.environ} if join and "ray" not in sys.modules else {}
    os.environ.update(knobs)
    try:
        import ray
    except ImportError:  # pragma: no cover - depends on the environment
        raise InvalidParameterError("--engine ray needs Ray: pip install 'flipguard[ray]'") from None
    finally:  # Ray has read them; processes started later (a local Ray, say) get the environment as it was
        for k in knobs:
            os.environ.pop(k, None)
    return ray


def _split_host_port(addr: str) -> tuple[str, int] | None:
    """``("host", port)`` from ``host:port`` / ``[v6]:port``; ``None`` when it is not that form."""
    host, sep, port = addr.rpartition(":")
    if not sep or not host or not port.isdigit():
        return None
    return host.strip("[]"), int(port)


def join_target(address: str) -> tuple[str, int] | None:
    """The ``(host, port)`` that ``ray.init(address=address)`` will connect to, or ``None`` if it cannot be told.

    ``ray://host[:10001]`` is a Ray client's server; ``auto`` is ``RAY_ADDRESS`` or the cluster Ray finds on
    this machine; ``host:port`` is a head's GCS, with ``localhost`` / ``127.0.0.1`` replaced by this node's
    address as Ray does.  Raises :class:`InvalidParameterError` when ``auto`` finds no cluster.
    """
    addr = address
    if addr == "auto" and os.environ.get("RAY_ADDRESS"):
        addr = os.environ["RAY_ADDRESS"]
    if "://" in addr:
        parts = urlsplit(addr)
        if parts.scheme != "ray":
            return None  # another client protocol: left to Ray
        try:
            port = parts.port
        except ValueError:
            port = -1
        if not parts.hostname or port == -1:
            raise InvalidParameterError(f"--ray-address {address}: not a Ray client address "
                                        "(ray://HOST or ray://HOST:PORT)")
        return parts.hostname, port or 10001
    try:
        from ray._private.services import canonicalize_bootstrap_address
    except ImportError:  # pragma: no cover - Ray moved it: check the address as given
        return None if addr == "auto" else _split_host_port(addr)
    try:
        resolved = canonicalize_bootstrap_address(addr)
    except ConnectionError:  # "auto" and no running Ray instance found
        raise InvalidParameterError(f"--ray-address {address}: cannot join a Ray cluster there (none is running "
                                    "on this machine and RAY_ADDRESS is not set: start one with `ray start "
                                    "--head`, or give the head's address)") from None
    except Exception:  # noqa: BLE001 - a malformed address: ray.init says what is wrong with it
        return None
    return _split_host_port(resolved) if resolved else None


def check_reachable(address: str, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """Fail fast, with one line, when nothing accepts a connection where ``address`` points.

    Without this check ``ray.init`` retries an unreachable address for minutes, printing Ray's own log
    lines.  A refused connection or an unknown host fails at once, silence after ``timeout`` seconds.
    """
    target = join_target(address)
    if target is None:
        return
    host, port = target
    where = f"{host}:{port}"

    def fail(reason: str):
        raise InvalidParameterError(f"--ray-address {address}: cannot join a Ray cluster there ({reason})")

    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except socket.gaierror:
        fail(f"unknown host {host!r}")
    except ConnectionRefusedError:
        fail(f"connection to {where} refused: is a Ray head running there?")
    except (socket.timeout, TimeoutError):
        fail(f"no answer from {where} within {timeout:g} s")
    except OSError as exc:
        fail(f"cannot connect to {where}: {exc.strerror or exc}")


class RayEngine(Engine):
    """Run partition tasks on Ray.

    Parameters
    ----------
    address : str, optional
        ``None``: use the Ray instance this process already started, else start
        a local one sized to the machine (shut down again by :meth:`close`).
        ``"host:6379"`` (the head's address) or ``"auto"``: join the running
        cluster; ``"ray://host:10001"``: Ray client.  An address where nothing
        answers fails at once (refused, unknown host) or after
        :data:`CONNECT_TIMEOUT_S` seconds, before ``ray.init``; one where
        something listens but no Ray head answers, in about 30 s
        (:data:`JOIN_KNOBS`).  Either way an :class:`InvalidParameterError`
        naming the address, raised again (without waiting) if asked again.
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
        self._failed: InvalidParameterError | None = None

    def _ray(self):
        if self._failed is not None:  # asked again (``describe`` in a caller's ``finally``): do not wait twice
            raise self._failed
        try:
            return self._init_ray()
        except InvalidParameterError as exc:
            self._failed = exc
            raise

    def _init_ray(self):
        ray = _import_ray(join=self.address is not None)
        if not ray.is_initialized():
            kwargs = dict(include_dashboard=False, log_to_driver=False, logging_level="ERROR",
                          configure_logging=False)
            if self.address is not None:
                check_reachable(self.address)
            try:
                with warnings.catch_warnings():
                    for category, message in QUIET_WARNINGS:
                        warnings.filterwarnings("ignore", message=message, category=category)
                    if self.address is None:
                        ray.init(num_cpus=available_cores(), **kwargs)
                    else:
                        with native_stderr_held():
                            ray.init(address=self.address, **kwargs)
            except (ConnectionError, ValueError, RuntimeError) as exc:
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                if self.address is None:
                    raise InvalidParameterError(f"--engine ray: cannot start a local Ray instance: {first}") from None
                raise InvalidParameterError(f"--ray-address {self.address}: cannot join a Ray cluster there "
                                            f"({first})") from None
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
