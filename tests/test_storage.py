"""Atomic writes: old or new content, never a mix; disk full and permission errors are named."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pandas as pd
import pytest

from vfl.errors import StorageError, VflError
from vfl.storage import (
    atomic_path,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    ensure_dir,
    remove_stale_temporaries,
)


def _only(directory: Path) -> list[str]:
    """Names in ``directory`` (to show no temporary file is left behind)."""
    return sorted(p.name for p in directory.iterdir())


def test_write_replaces_content_and_leaves_no_temporary(tmp_path: Path) -> None:
    # Prepare
    target = tmp_path / "sub" / "metrics.json"

    # Execute
    atomic_write_json(target, {"auc": 0.5})
    atomic_write_text(target, '{"auc": 0.7}')

    # Assert
    assert target.read_text() == '{"auc": 0.7}'
    assert _only(tmp_path / "sub") == ["metrics.json"]


@pytest.mark.parametrize("failing", ["fsync", "replace", "write"])
def test_disk_full_is_named_and_keeps_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing: str
) -> None:
    # Prepare: an existing file, then a disk that fills up at one stage of the next write
    target = atomic_write_bytes(tmp_path / "alignment.json", b"old content")

    def full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    if failing == "write":
        monkeypatch.setattr(os, "fdopen", _FullFile)
    else:
        monkeypatch.setattr(os, failing, full)

    # Execute
    with pytest.raises(StorageError) as err:
        atomic_write_bytes(target, b"new content that does not fit")
    monkeypatch.undo()

    # Assert
    message = str(err.value)
    assert isinstance(err.value, VflError) and err.value.file == str(target)
    assert str(target) in message and "no space left" in message
    assert "Fix: free space on the disk holding" in message and "intact" in message
    assert target.read_bytes() == b"old content"
    assert _only(tmp_path) == ["alignment.json"]


class _FullFile:
    """A file object over ``fd`` whose writes fail with ENOSPC."""

    def __init__(self, fd: int, *args: object) -> None:
        self.fd = fd

    def __enter__(self) -> _FullFile:
        return self

    def __exit__(self, *exc: object) -> None:
        os.close(self.fd)

    def write(self, data: bytes) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    def flush(self) -> None:
        return None


def test_private_file_is_never_readable_by_others(tmp_path: Path) -> None:
    path = atomic_write_bytes(tmp_path / "shop.key", b"secret", mode=0o600)
    assert path.stat().st_mode & 0o777 == 0o600 and path.read_bytes() == b"secret"


def test_permission_denied_names_directory_and_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prepare: running as root, so chmod would not stop the write; simulate the OS refusal
    def refuse(*args: object, **kwargs: object) -> None:
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(os, "replace", refuse)

    # Execute
    with pytest.raises(StorageError) as err:
        atomic_write_text(tmp_path / "report.md", "# report")

    # Assert
    assert "permission denied" in str(err.value)
    assert f"Fix: make {tmp_path} writable" in str(err.value)
    monkeypatch.undo()
    assert _only(tmp_path) == []


def test_file_in_the_way_of_a_directory(tmp_path: Path) -> None:
    blocker = tmp_path / "runs"
    blocker.write_text("not a directory")
    with pytest.raises(StorageError) as err:
        atomic_write_text(blocker / "compare.json", "{}")
    assert str(blocker) in str(err.value) and "is a file, not a directory" in str(err.value)
    assert blocker.read_text() == "not a directory"
    with pytest.raises(StorageError, match="Fix: rename or remove that file"):
        ensure_dir(blocker / "deeper")


def test_failing_writer_inside_atomic_path_keeps_old_file(tmp_path: Path) -> None:
    # Prepare
    target = tmp_path / "users.parquet"
    pd.DataFrame({"a": [1, 2]}).to_parquet(target)
    before = target.read_bytes()

    # Execute: the writer raises half way (not an OSError: it propagates unchanged)
    with pytest.raises(KeyError), atomic_path(target) as tmp:
        tmp.write_bytes(b"PAR1 half a file")
        raise KeyError("writer crashed")

    # Assert
    assert target.read_bytes() == before and _only(tmp_path) == ["users.parquet"]


def test_temporary_keeps_suffix_for_format_sniffing_writers(tmp_path: Path) -> None:
    with atomic_path(tmp_path / "plot.png") as tmp:
        assert tmp.suffix == ".png" and tmp.parent == tmp_path and tmp.name.startswith(".")
        pd.DataFrame({"a": [1]}).to_csv(tmp)
    assert (tmp_path / "plot.png").read_text().startswith(",a")


def test_stale_temporaries_of_a_killed_writer_are_removed(tmp_path: Path) -> None:
    stale = tmp_path / ".00-psi-0000000000.0a1b2c3d.tmp.vflckpt"
    stale.write_bytes(b"half")
    keep = tmp_path / ".hidden.tmp"  # a user's own file that merely looks similar
    keep.write_text("mine")
    assert remove_stale_temporaries(tmp_path) == [stale]
    assert _only(tmp_path) == [".hidden.tmp"]
