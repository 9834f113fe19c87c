"""The checkpoint store: round trips, latest(), pruning, refusals and the resume agreement."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import numpy as np
import pytest

from vfl.checkpoint import (
    Checkpoint,
    CheckpointStore,
    Phase,
    agree_resume,
    decode,
    encode,
    file_name,
)
from vfl.errors import CheckpointError, StorageError

JOB = {"train.users_per_step": 8, "train.key_bits": 512}


def _store(tmp_path: Path, **overrides: object) -> CheckpointStore:
    """E's store for job 'pilot' in ``tmp_path``."""
    fields: dict[str, object] = {"job_id": "pilot", "party": "shop", "params": JOB}
    return CheckpointStore(tmp_path, **{**fields, **overrides})  # type: ignore[arg-type]


def _share() -> np.ndarray:
    """A W_B share: signed integers far beyond int64, as the secure layer keeps them."""
    return np.array([[2**130 + 7, -(2**119)], [0, -1]], dtype=object)


def test_round_trip_keeps_arrays_bigints_blobs_and_meta(tmp_path: Path) -> None:
    # Prepare
    store = _store(tmp_path)
    weights = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    rng_state = np.random.default_rng(5).bit_generator.state

    # Execute
    store.save(
        Phase.TRAIN,
        12,
        seq=41,
        meta={"epoch": 1, "rng": rng_state},
        arrays={"top.weight": weights, "u": _share()},
        blobs={"enc_u": b"VFLE\x01" + bytes(range(256))},
    )
    got = store.latest()

    # Assert
    assert got is not None and (got.phase, got.step, got.seq) == (Phase.TRAIN, 12, 41)
    np.testing.assert_array_equal(got.arrays["top.weight"], weights)
    assert got.arrays["top.weight"].dtype == np.float32
    assert got.arrays["u"].tolist() == _share().tolist() and got.arrays["u"].dtype == object
    assert got.blobs["enc_u"] == b"VFLE\x01" + bytes(range(256))
    resumed = np.random.default_rng(0)
    resumed.bit_generator.state = got.meta["rng"]
    assert resumed.integers(1 << 60) == np.random.default_rng(5).integers(1 << 60)
    assert got.params == JOB


def test_latest_orders_by_phase_then_step_and_prunes(tmp_path: Path) -> None:
    # Prepare
    store = _store(tmp_path, keep=2)

    # Execute
    store.save(Phase.PSI, 0)
    store.save(Phase.ALIGNMENT, 0)
    for step in range(5):
        store.save(Phase.TRAIN, step, meta={"step": step})

    # Assert
    assert store.positions() == [
        (Phase.PSI, 0),
        (Phase.ALIGNMENT, 0),
        (Phase.TRAIN, 3),
        (Phase.TRAIN, 4),
    ]
    latest = store.latest()
    assert latest is not None and latest.position == (Phase.TRAIN.order, 4)
    aligned = store.latest(Phase.ALIGNMENT)
    assert aligned is not None and aligned.step == 0
    assert store.latest(Phase.EXPORT) is None
    assert _store(tmp_path / "fresh").latest() is None


def test_corrupted_or_truncated_checkpoint_is_refused_by_name(tmp_path: Path) -> None:
    # Prepare
    store = _store(tmp_path)
    store.save(Phase.TRAIN, 0, arrays={"u": _share()})
    path = store.save(Phase.TRAIN, 1, arrays={"u": _share()})
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01

    # Execute / Assert: a flipped bit
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError) as err:
        store.latest()
    assert str(path) in str(err.value) and "digest does not match" in str(err.value)
    assert "Fix: delete this file to resume from the previous checkpoint" in str(err.value)
    # a truncated file
    path.write_bytes(bytes(data[:100]))
    with pytest.raises(CheckpointError, match="digest does not match"):
        store.latest()
    path.write_bytes(b"VFL")
    with pytest.raises(CheckpointError, match="not a vfl checkpoint"):
        store.latest()
    # following the fix works: the previous step is intact
    path.unlink()
    previous = store.latest()
    assert previous is not None and previous.step == 0


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        ({"job_id": "other-job"}, "checkpoint of job 'pilot', party 'shop', but this is job"),
        ({"party": "payments"}, "party 'shop', but this is job 'pilot', party 'payments'"),
        (
            {"params": {**JOB, "train.users_per_step": 16}},
            "train.users_per_step: checkpoint has 8, this run has 16",
        ),
    ],
    ids=["other-job", "other-party", "other-params"],
)
def test_checkpoint_of_another_job_party_or_config_is_refused(
    tmp_path: Path, overrides: dict[str, object], words: str
) -> None:
    _store(tmp_path).save(Phase.TRAIN, 3)
    with pytest.raises(CheckpointError) as err:
        _store(tmp_path, **overrides).latest()
    assert words in str(err.value) and "Fix:" in str(err.value)
    assert str(tmp_path / "checkpoints") in str(err.value)


def test_newer_format_is_refused(tmp_path: Path) -> None:
    data = bytearray(encode(Checkpoint("pilot", "shop", Phase.PSI, 0)))
    data[7] = 99  # version byte
    body = bytes(data[:-32])
    import hashlib

    with pytest.raises(CheckpointError, match="version 99 is newer"):
        decode(body + hashlib.sha256(body).digest(), "x.vflckpt")


def test_disk_full_during_save_keeps_the_previous_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prepare
    store = _store(tmp_path)
    store.save(Phase.TRAIN, 6, meta={"loss": 0.5})

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)

    # Execute
    with pytest.raises(StorageError) as err:
        store.save(Phase.TRAIN, 7, meta={"loss": 0.4})
    monkeypatch.undo()

    # Assert
    assert file_name(Phase.TRAIN, 7) in str(err.value) and "no space left" in str(err.value)
    latest = store.latest()
    assert latest is not None and latest.step == 6 and latest.meta == {"loss": 0.5}
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == [file_name(Phase.TRAIN, 6)]


def test_a_killed_writer_leaves_only_a_temporary_that_latest_ignores(tmp_path: Path) -> None:
    store = _store(tmp_path)
    store.save(Phase.TRAIN, 2)
    stale = tmp_path / "checkpoints" / f".{file_name(Phase.TRAIN, 3)[:-8]}.deadbeef.tmp.vflckpt"
    stale.write_bytes(b"half written")
    latest = store.latest()
    assert latest is not None and latest.step == 2 and not stale.exists()


def test_keep_must_allow_stepping_back() -> None:
    with pytest.raises(ValueError, match="at least 2"):
        CheckpointStore("x", job_id="j", party="p", keep=1)


@pytest.mark.parametrize(
    ("mine", "theirs", "expected"),
    [
        (None, None, None),
        ((Phase.TRAIN, 7), (Phase.TRAIN, 7), (Phase.TRAIN, 7)),
        ((Phase.TRAIN, 8), (Phase.TRAIN, 7), (Phase.TRAIN, 7)),
        ((Phase.TRAIN, 0), (Phase.ALIGNMENT, 0), (Phase.ALIGNMENT, 0)),
        ((Phase.EVAL, 0), (Phase.TRAIN, 40), (Phase.TRAIN, 40)),
        ((Phase.ALIGNMENT, 0), None, None),
    ],
)
def test_agree_resume_takes_the_older_position(
    mine: tuple[Phase, int] | None,
    theirs: tuple[Phase, int] | None,
    expected: tuple[Phase, int] | None,
) -> None:
    assert agree_resume(mine, theirs, me="E", peer="P") == expected
    assert agree_resume(theirs, mine, me="P", peer="E") == expected


@pytest.mark.parametrize(
    ("mine", "theirs"),
    [((Phase.TRAIN, 9), (Phase.TRAIN, 7)), ((Phase.TRAIN, 3), None)],
)
def test_agree_resume_refuses_lost_state_naming_both(
    mine: tuple[Phase, int], theirs: tuple[Phase, int] | None
) -> None:
    with pytest.raises(CheckpointError) as err:
        agree_resume(mine, theirs, me="shop", peer="payments")
    message = str(err.value)
    assert f"shop is at train step {mine[1]}" in message and "payments at" in message
    assert "Fix:" in message


def test_missing_checkpoint_at_agreed_position_is_named(tmp_path: Path) -> None:
    store = _store(tmp_path)
    store.save(Phase.TRAIN, 5)
    with pytest.raises(CheckpointError, match=r"no checkpoint of train step 4.*Fix:"):
        store.load(Phase.TRAIN, 4)
