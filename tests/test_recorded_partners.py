"""What each passive party receives in a real four-process job (coordinator, E, P, L over
gRPC with mutual TLS), recorded by the party processes themselves (``VFL_RECORD_RECEIVED=1``,
:mod:`vfl.protocol.recorder`: every payload after unsealing, the handshake to the export).

For each passive party:

1. every ciphertext it receives is under E's key (the one in E's authenticated
   ``SetupIns``) or its own (``∂L/∂b``, which it opens), never under the other partner's,
   and nothing names the other partner or carries its keys;
2. every position it is asked about lies in its own alignment with E, and each ``∂L/∂b``
   has one row per user of the forward it answers;
3. what it receives does not depend on the other partner: the same job run again with L
   knowing half as many of E's users gives P the same messages (types, plan, parameters, the
   same users by id at every step, ciphertexts of the same sizes), while L's own messages
   differ -- so the comparison finds a difference where one exists; and a job of E with P
   alone gives P the same messages again: it cannot tell that L exists.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.fault_harness import start_process, wait_listening
from tests.timing import scaled
from vfl.cli.pilot_cmd import Dataset, pilot_train, write_run_configs
from vfl.crypto.paillier import EncryptedVector, KeyMismatchError, PublicKey
from vfl.data.synthetic_writer import generate_synthetic
from vfl.errors import ProtocolError
from vfl.protocol.messages import (
    ExportConfirmation,
    ExportSummary,
    Hello,
    SecureBackwardIns,
    SecureForwardIns,
    SetupIns,
    SetupRes,
)
from vfl.protocol.recorder import (
    RECORD_ENV,
    Recorded,
    read_received,
    received_path,
    recorder_for,
)
from vfl.protocol.serde import Envelope, decode, encode
from vfl.transport.sealing import read_key

SEEDS = {"e": 11, "p": 22, "l": 33}
NAMES = {"e": "shop", "p": "payments", "l": "logistics"}
OTHER = {"p": "l", "l": "p"}
# fields whose values come from the whole model, so from every partner's features: a
# passive party's own dL/db (which it opens) and the digests of the two shards it holds with E
VALUES: dict[type, tuple[str, ...]] = {
    SecureBackwardIns: ("enc_db",),
    ExportSummary: ("shard",),
    ExportConfirmation: ("exported", "partner"),
}


@dataclasses.dataclass(frozen=True)
class Job:
    """One finished four-process job and the directory it ran in."""

    root: Path

    def received(self, k: str, peer: str) -> Recorded:
        """What party ``k`` received from ``peer`` (keys of :data:`NAMES`)."""
        return read_received(received_path(self.root / k, NAMES[peer]))

    def alignment(self, k: str) -> list[str]:
        """Passive party ``k``'s aligned ids with E, in position order: by id, as both sides
        train (:func:`vfl.party.common.in_id_order`; the file holds PSI's random order)."""
        ids: list[str] = json.loads((self.root / k / "alignment.json").read_text())["ids"]
        return sorted(ids)


def _run(root: Path, *, l_keeps_every: int = 1, parties: int = 3) -> Job:
    """The job through four processes (``parties=2``: three, without L), each party
    recording what it receives; L keeps only every ``l_keeps_every``-th of its users."""
    generate_synthetic(root / "data", users=120, items=200, seed=3, third_party=0.5)
    users = root / "data" / "l_users.csv"
    head, *rows = users.read_text().splitlines()
    users.write_text("\n".join([head, *rows[::l_keeps_every]]) + "\n")
    train = pilot_train(Dataset.SYNTHETIC, epochs=2, patience=2, key_bits=512)
    files = write_run_configs(root, train, plaintext=False, parties=parties)["encrypted"]
    coordinator = start_process(
        "coordinator", files.coordinator, root, root / "coordinator.log", seed=None
    )
    procs = {"coordinator": coordinator}
    try:
        wait_listening(coordinator, root / "coordinator.log")
        for k in [k for k in ("p", "l", "e") if k in files.parties]:
            log = root / f"{k}.log"
            procs[k] = start_process(
                k, files.parties[k], root, log, seed=SEEDS[k], env={RECORD_ENV: "1"}
            )
        _wait_done(root, procs)
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    return Job(root)


def _wait_done(root: Path, procs: dict[str, subprocess.Popen[bytes]]) -> None:
    """Until the parties exit; fails if one fails or all take more than 600 s (scaled)."""
    deadline = time.monotonic() + scaled(600)
    parties = [k for k in procs if k != "coordinator"]
    while any(procs[k].poll() is None for k in parties):
        assert time.monotonic() < deadline, (root / "e.log").read_text()[-3000:]
        time.sleep(0.2)
    for k in parties:
        assert procs[k].returncode == 0, (root / f"{k}.log").read_text()[-3000:]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Job, Job, Job]]:
    """The job, the same job with L knowing half as many users, and E with P alone."""
    yield (
        _run(tmp_path_factory.mktemp("recorded")),
        _run(tmp_path_factory.mktemp("recorded-half-l"), l_keeps_every=2),
        _run(tmp_path_factory.mktemp("recorded-without-l"), parties=2),
    )


@pytest.fixture(scope="module")
def jobs(runs: tuple[Job, Job, Job]) -> tuple[Job, Job]:
    """The two jobs with both partners."""
    return runs[0], runs[1]


def _blobs(value: Any) -> Iterator[bytes]:
    """Every serialised ciphertext vector in a message field."""
    if isinstance(value, bytes) and value.startswith(b"VFLE"):
        yield value
    elif isinstance(value, dict | list | tuple):
        for v in value.values() if isinstance(value, dict) else value:
            yield from _blobs(v)


def _fields(message: object) -> dict[str, Any]:
    return {f.name: getattr(message, f.name) for f in dataclasses.fields(message)}  # type: ignore[arg-type]


def _under(data: bytes, key: PublicKey) -> bool:
    try:
        EncryptedVector.deserialise(data, key)
    except KeyMismatchError:
        return False
    return True


def _three_keys(*data: bytes) -> tuple[PublicKey, PublicKey, PublicKey]:
    e, own, other = (PublicKey.from_bytes(d) for d in data)
    return e, own, other


def _keys(job: Job, k: str) -> tuple[PublicKey, PublicKey, PublicKey]:
    """E's key as E sent it to ``k``, ``k``'s own key and the other partner's (as E got them)."""
    (setup,) = job.received(k, "e").of_type(SetupIns)
    (own,) = job.received("e", k).of_type(SetupRes)
    (other,) = job.received("e", OTHER[k]).of_type(SetupRes)
    return _three_keys(setup.public_key, own.public_key, other.public_key)


@pytest.mark.parametrize("k", ["p", "l"])
def test_a_passive_party_receives_only_ciphertexts_under_e_key_or_its_own(
    k: str, jobs: tuple[Job, Job]
) -> None:
    for job in jobs:
        # Prepare
        rec = job.received(k, "e")
        e_key, own, other = _keys(job, k)
        assert len({e_key.n, own.n, other.n}) == 3
        # Assert: each ciphertext parses under E's key or this party's, none under the other's
        blobs = [b for m in rec.received for b in _blobs(_fields(m))]
        assert len(blobs) > 10
        for blob in blobs:
            assert _under(blob, e_key) or _under(blob, own)
            assert not _under(blob, other)
        # ... and no payload names the other partner or carries its key or sealing key
        raw = received_path(job.root / k, NAMES["e"]).read_bytes()
        box = job.root / "certs" / f"{NAMES[OTHER[k]]}.box.pub"
        other_box = read_key(box, "the other partner's sealing key")
        for secret in (NAMES[OTHER[k]].encode(), other.to_bytes(), other_box):
            assert secret not in raw


@pytest.mark.parametrize("k", ["p", "l"])
def test_a_passive_party_is_asked_only_about_its_own_users(k: str, jobs: tuple[Job, Job]) -> None:
    for job in jobs:
        # Prepare
        rec = job.received(k, "e")
        n_own = len(job.alignment(k))
        forwards = rec.of_type(SecureForwardIns)
        # Assert: positions inside its own alignment, and each dL/db one row per user asked
        assert forwards
        for m in forwards:
            assert m.users.dtype == np.int64 and m.users.ndim == 1
            assert m.users.size == 0 or (m.users.min() >= 0 and m.users.max() < n_own)
        _, own, _ = _keys(job, k)
        backwards = rec.of_type(SecureBackwardIns)
        trained = [m for m in forwards if m.train]
        assert len(backwards) == len(trained) > 0
        for fwd, bwd in zip(trained, backwards, strict=True):
            assert fwd.step == bwd.step
            assert EncryptedVector.deserialise(bwd.enc_db, own).shape[0] == fwd.users.size


def _shape(job: Job, k: str) -> list[tuple[str, Any]]:
    """What ``k`` received from E, in order, with what may differ between two runs of the
    same job taken out: fresh keys and randomness (ciphertexts and keys by size) and the
    values computed from the whole model (:data:`VALUES`); positions as the ids ``k`` holds
    at them."""
    ids = np.array(job.alignment(k))
    out: list[tuple[str, Any]] = []
    for payload in job.received(k, "e").payloads:
        try:
            m = decode(payload).message
        except ProtocolError:  # PSI frames and session control: by size
            out.append(("bytes", len(payload)))
            continue
        fields = _fields(m)
        if isinstance(m, SecureForwardIns):
            fields["users"] = ids[m.users].tolist()
        for name in VALUES.get(type(m), ()):
            fields.pop(name)
        out.append((type(m).__name__, {n: _sized(v) for n, v in fields.items()}))
    return out


def _sized(value: Any) -> Any:
    """Ciphertexts and keys by size; everything else as it is."""
    return ("bytes", len(value)) if isinstance(value, bytes) else value


def _differences(a: list[tuple[str, Any]], b: list[tuple[str, Any]]) -> list[str]:
    if len(a) != len(b):
        return [f"{len(a)} records vs {len(b)}"]
    return [f"record {i}: {x} vs {y}" for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y]


def test_what_a_passive_party_receives_does_not_depend_on_the_other_partner(
    jobs: tuple[Job, Job],
) -> None:
    # Prepare: L knows fewer of E's users in the second run; P's data is the same
    full, half = jobs
    assert len(half.alignment("l")) < len(full.alignment("l"))
    assert sorted(half.alignment("p")) == sorted(full.alignment("p"))
    # Assert: P receives the same messages; a check that finds L's own differences
    assert _differences(_shape(full, "p"), _shape(half, "p")) == []
    assert _differences(_shape(full, "l"), _shape(half, "l")) != []
    hellos = [job.received("p", "e").of_type(Hello) for job in jobs]
    assert hellos[0] == hellos[1]


def test_a_passive_party_cannot_tell_whether_e_has_another_partner(
    runs: tuple[Job, Job, Job],
) -> None:
    # Prepare: the same data and seeds, E with P and L, and E with P alone
    with_l, _, without_l = runs
    assert not (without_l.root / "l").exists()
    # Assert: P receives the same messages in both jobs (same plan, parameters, users by id
    # at every step, ciphertext sizes): nothing tells it that a second partner exists
    assert _differences(_shape(with_l, "p"), _shape(without_l, "p")) == []


def test_recording_is_off_unless_asked_and_reads_back_each_payload(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prepare
    monkeypatch.delenv(RECORD_ENV, raising=False)
    assert recorder_for(tmp_path, "shop") is None
    monkeypatch.setenv(RECORD_ENV, "1")
    tap = recorder_for(tmp_path, "shop")
    assert tap is not None
    message = Hello(
        party="shop", role="active", fingerprint="f", agreed={"a": 1}, schema_sha256="s"
    )
    # Execute
    tap(encode(Envelope(job_id="j", seq=0, message=message)))
    tap(b"psi frame")
    got = read_received(received_path(tmp_path, "shop"))
    # Assert: in arrival order, protocol messages decoded, the file private
    assert got.received == [message] and got.undecodable == [b"psi frame"]
    assert len(got.payloads) == 2
    assert received_path(tmp_path, "shop").stat().st_mode & 0o077 == 0
