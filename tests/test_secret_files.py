"""Secret files are 0600 in 0700 directories whatever the umask; failed PSIs leave no scalar;
the coordinator's capture survives restarts.

Everything in a party's work directory (alignment, checkpoints, model shard, PSI state,
metrics) is that party's secret; so are private keys and the relay capture.
"""

from __future__ import annotations

import os
import signal
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.test_processes import Pilot, _prepare
from tests.test_psi import random_sets
from tests.test_psi_resume import N, _dirs, run_both
from tests.timing import scaled
from vfl.checkpoint import CheckpointStore
from vfl.errors import ChannelTimeout, DataError, ProtocolError
from vfl.party.export import ShardIdentity, write_manifest, write_shard_files
from vfl.phases import Phase
from vfl.psi import store
from vfl.psi.resume import STATE_DIR
from vfl.transport.certs import generate_dev_pki
from vfl.transport.grpc_relay import open_capture, read_capture
from vfl.transport.sealing import write_box_keys


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture()
def umask_022() -> Iterator[None]:
    """The common default umask, under which plain writes come out 0644 and 0755."""
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def _private_tree(root: Path) -> dict[str, int]:
    """Every file or directory under ``root`` (itself included) whose mode is not 0600 or
    0700, with that mode."""
    wrong = {} if _mode(root) == 0o700 else {".": _mode(root)}
    for path in root.rglob("*"):
        want = 0o700 if path.is_dir() else 0o600
        if _mode(path) != want:
            wrong[str(path.relative_to(root))] = oct(_mode(path))
    return wrong


@pytest.mark.usefixtures("umask_022")
def test_writers_of_secrets_make_0600_files_in_0700_dirs(tmp_path: Path) -> None:
    # Prepare: a directory made 0755 beforehand, as a user or an older version left it
    work = tmp_path / "work"
    work.mkdir(mode=0o755)
    # Execute: every writer of a party's secrets
    CheckpointStore(work, job_id="j", party="shop").save(
        Phase.TRAIN, 1, seq=1, arrays={"u": np.arange(4)}
    )
    sums = write_shard_files(work / "model", {"share.json": b"{}", "head.pt": b"w"})
    write_manifest(work / "model", ShardIdentity("j", "f" * 64, "shop", "active", "p"), sums, "d")
    store.save_alignment(
        work, store.StoredAlignment("a" * 64, "b" * 64, ["u1"], np.array([0]), 3, 4)
    )
    os.chmod(work, 0o755)  # ... and a rewrite narrows the directory again
    store.save_alignment(
        work, store.StoredAlignment("a" * 64, "b" * 64, ["u2"], np.array([0]), 3, 4)
    )
    # Assert
    assert {p.name for p in work.rglob("*")} >= {"alignment.json", "manifest.json", "share.json"}
    assert _private_tree(work) == {}


@pytest.mark.usefixtures("umask_022")
def test_keys_are_0600_and_a_rewritten_box_key_loses_its_older_wider_mode(
    tmp_path: Path,
) -> None:
    # Prepare: an older box key left world-readable
    certs = tmp_path / "certs"
    certs.mkdir()
    old = certs / "shop.box"
    old.write_bytes(b"x" * 32)
    os.chmod(old, 0o644)
    # Execute: the writers `vfl certs` calls
    generate_dev_pki(certs, parties=["shop", "payments"])
    private, public = write_box_keys(certs, "shop")
    # Assert
    assert private == old and private.read_bytes() != b"x" * 32 and _mode(private) == 0o600
    keys = list(certs.glob("*.key"))  # coordinator, shop, payments
    assert {_mode(k) for k in keys} == {0o600} and len(keys) == 3
    assert _mode(certs) == 0o700 and public.stat().st_size == 32


class GarbageAfterHello:
    """P's wire: its hello goes through, every later message is replaced by garbage."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.sent = inner, 0

    def send(self, data: bytes) -> None:
        self.sent += 1
        self.inner.send(data if self.sent == 1 else b"\x07not a PSI frame")

    def recv(self, timeout: float) -> bytes:
        return self.inner.recv(timeout)


@pytest.mark.parametrize("failure", ["empty intersection", "bad peer input"])
def test_a_failed_psi_leaves_no_scalar_on_disk(tmp_path: Path, failure: str) -> None:
    # Prepare: disjoint sets, or a peer that sends garbage after its hello
    e_ids, p_ids = random_sets(23, N)
    wrap = None
    if failure == "empty intersection":
        p_ids = [f"other-{i}" for i in p_ids]
    else:
        wrap = GarbageAfterHello
    # Execute
    e, p = run_both(e_ids, p_ids, _dirs(tmp_path), wrap_p=wrap)
    # Assert: E reports the failure and keeps no secret scalar. With garbage from P, P only
    # sees E go silent (a timeout: resumable, so P keeps its state for the rerun)
    assert e.result is None and isinstance(e.error, DataError | ProtocolError), e.error
    failed = _dirs(tmp_path) if failure == "empty intersection" else _dirs(tmp_path)[:1]
    for work in failed:
        assert not (work / STATE_DIR).exists(), sorted((work / STATE_DIR).rglob("*"))
    if failure == "bad peer input":
        assert isinstance(p.error, ChannelTimeout) and (_dirs(tmp_path)[1] / STATE_DIR).is_dir()


def test_the_capture_appends_and_drops_a_record_cut_short(tmp_path: Path) -> None:
    # Prepare: a capture of one whole record and a record a kill cut short
    path = tmp_path / "relay.capture"
    path.write_bytes(b"\x00\x00\x00\x02ab" + b"\x00\x00\x00\x09abc")
    # Execute: the next start appends its frames
    with open_capture(path) as handle:
        handle.write(b"\x00\x00\x00\x01z")
    # Assert
    assert read_capture(path.read_bytes()) == [b"ab", b"z"] and _mode(path) == 0o600


@pytest.fixture()
def finished(tmp_path: Path, umask_022: None) -> Iterator[Pilot]:
    """One real three-process run (512-bit keys, 1 epoch) under umask 022."""
    run = _prepare(tmp_path, epochs=1)
    try:
        run.run_to_end()
        yield run
    finally:
        run.kill_all()


def test_a_real_run_writes_every_secret_0600_and_keeps_the_capture(finished: Pilot) -> None:
    # Assert: each party's whole work directory (alignment, checkpoints, shard, metrics)
    root = finished.root
    for k in ("e", "p"):
        assert (root / k / "model" / "manifest.json").is_file()
        assert _private_tree(root / k) == {}, k
    certs = root / "certs"
    assert {_mode(f) for f in [*certs.glob("*.key"), *certs.glob("*.box")]} == {0o600}
    capture = root / "relay.capture"
    frames = read_capture(capture.read_bytes())
    assert frames and _mode(capture) == 0o600
    # Execute: a second coordinator start (as after a restart)
    finished.start_coordinator()
    finished.procs["coordinator"].send_signal(signal.SIGTERM)
    assert finished.wait_exit("coordinator", scaled(20)) == 0
    # Assert: the first start's capture is still there
    assert read_capture(capture.read_bytes())[: len(frames)] == frames
