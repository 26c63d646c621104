"""Reading and writing the small files integrity works with (keys, manifests, snapshots, ledgers, scripts).

Every read goes through :func:`read_bytes`, which opens the file without
blocking and refuses anything but a regular file: a FIFO planted where a
snapshot should be cannot hang ``verify``, ``/dev/zero`` cannot exhaust
memory, and with ``follow_symlinks=False`` a symbolic link is refused (ledgers
and their snapshot folders).  :func:`write_files_atomically` replaces several
files so that a failure part-way leaves every earlier file as it was.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from pathlib import Path

from ..exceptions import IntegrityError

__all__ = ["read_bytes", "refuse_symlink", "regular_file_or_absent", "write_files_atomically"]

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "is a directory"
    if stat.S_ISFIFO(mode):
        return "is a FIFO (named pipe), not a regular file"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "is a device, not a regular file"
    if stat.S_ISSOCK(mode):
        return "is a socket, not a regular file"
    return "is not a regular file"


def read_bytes(path: str | os.PathLike, what: str, *, follow_symlinks: bool = True) -> bytes:
    """The bytes of the regular file ``path``; anything else is one :class:`IntegrityError` line.

    ``what`` names the file in the message, e.g. ``"manifest"`` gives
    ``"manifest keys/x.json: no such file"``.  The file is opened with
    ``O_NONBLOCK`` and checked with ``fstat`` before a byte is read, so FIFOs
    and devices are refused without waiting on them.
    """
    path = Path(path)
    flags = os.O_RDONLY | _NONBLOCK | getattr(os, "O_CLOEXEC", 0) | (0 if follow_symlinks else _NOFOLLOW)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise IntegrityError(f"{what} {path}: no such file") from None
    except IsADirectoryError:
        raise IntegrityError(f"{what} {path}: is a directory") from None
    except PermissionError:
        raise IntegrityError(f"{what} {path}: permission denied") from None
    except OSError as exc:
        if not follow_symlinks and os.path.islink(path):
            raise IntegrityError(f"{what} {path}: is a symbolic link; flipguard does not follow links "
                                 "here (give the real path)") from None
        raise IntegrityError(f"{what} {path}: cannot open ({exc.strerror or exc})") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise IntegrityError(f"{what} {path}: {_kind(st.st_mode)}")
        # FileIO.readall sizes one buffer from fstat and reads straight into it: no second copy
        # of a snapshot that may be hundreds of megabytes
        with os.fdopen(fd, "rb", buffering=0, closefd=False) as fh:
            return fh.readall()
    finally:
        os.close(fd)


def refuse_symlink(path: str | os.PathLike, what: str) -> None:
    """Raise when ``path`` is a symbolic link (ledgers and snapshot folders are never followed)."""
    if os.path.islink(path):
        raise IntegrityError(f"{what} {path}: is a symbolic link; flipguard does not follow links "
                             "for ledgers and snapshot folders (give the real path)")


def regular_file_or_absent(path: str | os.PathLike, what: str) -> None:
    """Raise unless ``path`` does not exist or is a regular file (checked without following a link)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISLNK(st.st_mode):
        return  # replacing a link by rename replaces the link itself, never its target
    if not stat.S_ISREG(st.st_mode):
        raise IntegrityError(f"{what} {path}: {_kind(st.st_mode)}")


def _temp_beside(target: Path, data: bytes, mode: int | None) -> Path:
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        os.fchmod(fd, _default_mode() if mode is None else mode)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    os.close(fd)
    return Path(tmp)


def write_files_atomically(files: list[tuple[Path, bytes | Path]], *, mode: int | None = None) -> None:
    """Write every ``(target, data)`` pair, or none: temporary files first, then renames in order.

    ``data`` is bytes, or the path of a finished temporary file beside the
    target (renamed into place).  If a rename fails, the targets already
    replaced get their previous contents back (kept as hard links until the
    end), so a failure leaves every earlier file exactly as it was.
    """
    for target, _ in files:
        regular_file_or_absent(target, "output")
        if not target.parent.is_dir():
            raise IntegrityError(f"output {target}: folder {target.parent} does not exist")
    temps: list[Path] = []
    backups: list[tuple[Path, Path | None]] = []
    try:
        for target, data in files:
            temps.append(data if isinstance(data, Path) else _temp_beside(target, data, mode))
        for (target, _), tmp in zip(files, temps):
            backup = None
            if os.path.lexists(target):
                backup = target.with_name(f".{target.name}.{os.getpid()}.{os.urandom(4).hex()}.old")
                os.link(target, backup, follow_symlinks=False)
            backups.append((target, backup))
            os.replace(tmp, target)
    except BaseException:
        for target, backup in reversed(backups):  # undo what was replaced
            with contextlib.suppress(OSError):
                if backup is not None:
                    os.replace(backup, target)
                else:
                    os.unlink(target)
        raise
    finally:
        for tmp in temps:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        for _, backup in backups:
            if backup is not None:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(backup)
    fsync_dirs({t.parent for t, _ in files})


def fsync_dirs(dirs) -> None:
    """Make renames in ``dirs`` durable (best effort: a file system that cannot fsync a folder is skipped)."""
    for d in dirs:
        with contextlib.suppress(OSError):
            dfd = os.open(d, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)


def _default_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask
