"""Atomic file writes: a reader (or a restarted process) sees the old file or the new one, never
a truncated mix.

1. Write into a temporary file in the target's own directory (same file system, so the rename
   is atomic), named ``.<stem>.<random>.tmp<suffix>`` so that writers which infer the format
   from the suffix (pandas, matplotlib) still see ``.csv``, ``.parquet`` or ``.png``.
2. ``fsync`` the file, ``os.replace`` it onto the target, then ``fsync`` the directory so the
   rename itself survives a crash of the machine.
3. On any failure the temporary file is removed and the previous target is left untouched.

Secret files (checkpoints, model shards, aligned ids, PSI state, keys, the coordinator's
capture) are written with ``private=True``: the file is created mode 0600 before a byte is
written and its directory is made 0700, *whatever the umask*, and a rewrite replaces the
file, so an older, wider mode never survives.

Every ``OSError`` becomes a :class:`~vfl.errors.StorageError` naming the path and the fix:
disk full (``ENOSPC``, ``EDQUOT``), permission denied, read-only file system, a file where a
directory should be. A process killed between steps leaves at most a stray temporary file,
which :func:`remove_stale_temporaries` clears.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from vfl.errors import StorageError

PRIVATE_FILE_MODE = 0o600  # secret files: owner read/write only
PRIVATE_DIR_MODE = 0o700  # their directories: owner only
_TMP_MARK = ".tmp"
_TEMP_NAME = re.compile(r"^\..*\.[0-9a-f]{8}\.tmp")


def _fix_for(exc: OSError, directory: Path) -> tuple[str, str]:
    """(problem, fix) for an OS error while writing into ``directory``."""
    code = exc.errno
    if code in (errno.ENOSPC, errno.EDQUOT):
        return "no space left on the device (disk full or quota exceeded)", (
            f"free space on the disk holding {directory}, or write to another disk; "
            "the previous version of the file is intact"
        )
    if code in (errno.EACCES, errno.EPERM):
        return "permission denied", (
            f"make {directory} writable for this user, or choose another output directory"
        )
    if code == errno.EROFS:
        return "the file system is read-only", "choose a directory on a writable file system"
    if code in (errno.ENOTDIR, errno.EEXIST):
        return "a part of the path is a file, not a directory", (
            "rename or remove that file, or choose another output directory"
        )
    if code == errno.EISDIR:
        return "the target is a directory", "remove the directory or choose another file name"
    return f"cannot write ({exc.strerror or exc})", f"check that {directory} is writable"


def storage_error(path: Path, exc: OSError) -> StorageError:
    """The :class:`StorageError` for ``exc`` raised while writing ``path``."""
    problem, fix = _fix_for(exc, path.parent)
    return StorageError(str(path), problem, fix)


def ensure_dir(path: str | Path, *, private: bool = False) -> Path:
    """Create ``path`` and its parents if missing; return it.

    ``private``: ``path`` itself (not its parents) ends mode 0700, created or not.

    Raises:
        StorageError: a file is in the way, permission denied, disk full or read-only.
    """
    directory = Path(path)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        if private:
            os.chmod(directory, PRIVATE_DIR_MODE)
    except OSError as exc:
        problem, fix = _fix_for(exc, directory.parent)
        raise StorageError(str(directory), f"cannot create the directory: {problem}", fix) from exc
    return directory


def _temporary(path: Path) -> Path:
    """A fresh temporary name next to ``path`` that keeps its suffix."""
    return path.with_name(f".{path.stem}.{secrets.token_hex(4)}{_TMP_MARK}{path.suffix}")


def _fsync_dir(directory: Path) -> None:
    """Make a rename in ``directory`` durable (a no-op where directories cannot be synced)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems refuse fsync on directories; the rename is still atomic
    finally:
        os.close(fd)


def _commit(tmp: Path, path: Path) -> None:
    """fsync ``tmp``'s contents and rename it onto ``path``."""
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    _fsync_dir(path.parent)


@contextlib.contextmanager
def atomic_path(path: str | Path, *, private: bool = False) -> Iterator[Path]:
    """Yield a temporary path to write ``path``'s new content into; commit it on success.

    For writers that need a file name (``DataFrame.to_parquet``, ``Figure.savefig``). If the
    block raises, the temporary file is removed, ``path`` keeps its previous content and the
    exception propagates (an ``OSError`` as :class:`StorageError`). ``private``: the
    temporary file exists, empty and mode 0600, before the block writes to it, the result is
    0600 and its directory 0700.

    Raises:
        StorageError: the directory cannot be created or written, or the disk is full.
    """
    target = Path(path)
    ensure_dir(target.parent, private=private)
    tmp = _temporary(target)
    try:
        if private:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE_MODE))
            os.chmod(tmp, PRIVATE_FILE_MODE)  # exactly 0600, whatever the umask
        yield tmp
        if private:
            os.chmod(tmp, PRIVATE_FILE_MODE)  # also if the writer replaced the file
        _commit(tmp, target)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, StorageError):
            raise
        raise storage_error(target, exc) from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(
    path: str | Path, data: bytes, *, mode: int = 0o666, private: bool = False
) -> Path:
    """Replace ``path``'s content with ``data`` atomically; return the path.

    ``mode`` (less the umask) applies from the moment the file exists. ``private`` (secrets:
    keys, checkpoints, shards, ids) makes it exactly 0600 from that moment, whatever the
    umask or the mode of the file it replaces, and its directory 0700.

    Raises:
        StorageError: disk full, permission denied, read-only, or a file in the way.
    """
    target = Path(path)
    with atomic_path(target, private=private) as tmp:
        flags = os.O_WRONLY | (os.O_TRUNC if private else os.O_CREAT | os.O_EXCL)
        fd = os.open(tmp, flags, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
    return target


def atomic_write_text(
    path: str | Path, text: str, *, encoding: str = "utf-8", private: bool = False
) -> Path:
    """Replace ``path``'s content with ``text`` atomically; return the path.

    ``private``: as :func:`atomic_write_bytes`.

    Raises:
        StorageError: disk full, permission denied, read-only, or a file in the way.
    """
    return atomic_write_bytes(path, text.encode(encoding), private=private)


def atomic_write_json(
    path: str | Path, obj: Any, *, indent: int | None = 2, private: bool = False
) -> Path:
    """Write ``obj`` as JSON atomically; return the path.

    ``private``: as :func:`atomic_write_bytes`.

    Raises:
        StorageError: disk full, permission denied, read-only, or a file in the way.
        TypeError: ``obj`` is not JSON-serialisable (nothing is written).
    """
    return atomic_write_text(path, json.dumps(obj, indent=indent), private=private)


def remove_stale_temporaries(directory: str | Path) -> list[Path]:
    """Delete temporary files a killed writer left in ``directory``; return what was removed."""
    removed = []
    for candidate in Path(directory).glob(f".*{_TMP_MARK}*"):
        if _TEMP_NAME.match(candidate.name) and candidate.is_file():
            candidate.unlink(missing_ok=True)
            removed.append(candidate)
    return removed


def open_private_append(path: str | Path) -> BinaryIO:
    """Open ``path`` to append bytes, mode exactly 0600 (created so, or narrowed if older).

    A missing directory is created 0700; an existing one is left as it is (it may be the
    user's own). The caller closes the returned file.

    Raises:
        StorageError: permission denied, read-only, a file in the way, or disk full.
    """
    target = Path(path)
    if not target.parent.exists():
        ensure_dir(target.parent, private=True)
    try:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_APPEND, PRIVATE_FILE_MODE)
        os.fchmod(fd, PRIVATE_FILE_MODE)
    except OSError as exc:
        raise storage_error(target, exc) from exc
    return os.fdopen(fd, "ab")
