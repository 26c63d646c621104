"""Atomic output: write to a temporary file beside the target, then rename.

An error part-way never leaves half a file, and an existing file is replaced
in one step.  The result gets the permissions a plain ``open(..., "w")`` would
give it (``0o666`` less the umask) unless a ``mode`` is asked for — e.g.
``0o600`` for secrets, which then never exist with wider permissions.

Several outputs of one command (a poisoned copy and its flip log, a report and
its JSON) are written inside :func:`atomic_group`: every file is renamed into
place only when all of them were written, so a failure leaves none of them.

A file that cannot be written raises :class:`OutputError` naming the target
(never the temporary file) and the reason.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from .exceptions import FlipguardError, OutputError

__all__ = ["atomic_group", "atomic_path", "atomic_write_bytes", "atomic_write_text"]


#: The pending ``(temporary, target)`` renames of the innermost :func:`atomic_group`, or None.
_GROUP: contextvars.ContextVar[list | None] = contextvars.ContextVar("flipguard_atomic_group", default=None)


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc) or type(exc).__name__


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike, suffix: str = "", mode: int | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``target``; rename it over ``target`` on success.

    Inside :func:`atomic_group` the rename waits for the end of the group.
    """
    target = Path(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot write {target}: cannot create folder {target.parent} "
                          f"({_reason(exc)})") from None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix + ".tmp", dir=target.parent)
    except OSError as exc:
        raise OutputError(f"cannot write {target}: cannot create a file in {target.parent} "
                          f"({_reason(exc)})") from None
    os.fchmod(fd, _default_mode() if mode is None else mode)
    os.close(fd)
    tmp_path = Path(tmp)
    group = _GROUP.get()
    try:
        try:
            yield tmp_path
        except OSError as exc:
            if exc.filename is not None and os.fspath(exc.filename) == tmp and not isinstance(exc, FlipguardError):
                raise OutputError(f"cannot write {target}: {_reason(exc)}") from None
            raise
        if group is not None:
            group.append((tmp_path, target))
        else:
            _replace(tmp_path, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


@contextlib.contextmanager
def atomic_group() -> Iterator[None]:
    """Outputs written with :func:`atomic_path` inside appear together at the end, or not at all.

    Each file is written to its temporary name as usual; the renames happen when the block
    ends without an error.  An error in the block deletes every temporary file; a rename
    that fails at the end also removes the files already renamed, so a command never leaves
    one output without the others.  Nested groups join the outermost one.
    """
    if _GROUP.get() is not None:
        yield
        return
    pending: list[tuple[Path, Path]] = []
    token = _GROUP.set(pending)
    try:
        yield
    except BaseException:
        _GROUP.reset(token)
        for tmp, _ in pending:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        raise
    _GROUP.reset(token)
    done: list[Path] = []
    try:
        for tmp, target in pending:
            _replace(tmp, target)
            done.append(target)
    except BaseException:
        for tmp, _ in pending:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        for target in done:
            with contextlib.suppress(FileNotFoundError):
                target.unlink()
        raise


def _replace(tmp: Path, target: Path) -> None:
    try:
        os.replace(tmp, target)
    except OSError as exc:
        why = "it is a folder" if os.path.isdir(target) else _reason(exc)
        raise OutputError(f"cannot write {target}: {why}") from None


def atomic_write_bytes(target: str | os.PathLike, data: bytes, mode: int | None = None) -> None:
    with atomic_path(target, mode=mode) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(target: str | os.PathLike, text: str, mode: int | None = None) -> None:
    atomic_write_bytes(target, text.encode("utf-8"), mode=mode)


def _default_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask
