"""End-to-end sealing between E and P: the relay carries only opaque, authenticated bytes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from vfl.errors import EnvelopeError, ProtocolError, ReorderError, ReplayError, TamperError
from vfl.protocol.endpoint import Endpoint
from vfl.protocol.messages import ForwardIns
from vfl.transport.channel import InMemoryChannel
from vfl.transport.sealing import SealedChannel, read_key, write_box_keys


@pytest.fixture()
def keys(tmp_path: Path) -> dict[str, tuple[bytes, bytes]]:
    out = {}
    for name in ("E", "P", "X"):
        private, public = write_box_keys(tmp_path, name)
        out[name] = (read_key(private, "key"), read_key(public, "key"))
    return out


def _pair(keys, e_peer="P", p_peer="E"):  # type: ignore[no-untyped-def]
    e_raw, p_raw = InMemoryChannel.pair("E", "P")
    e_raw.sent, p_raw.sent = [], []
    e = SealedChannel(e_raw, private_key=keys["E"][0], peer_public_key=keys[e_peer][1])
    p = SealedChannel(p_raw, private_key=keys["P"][0], peer_public_key=keys[p_peer][1])
    return e, p, e_raw, p_raw


def test_messages_round_trip_and_the_relay_sees_no_plaintext(keys) -> None:
    # Prepare
    e, p, e_raw, _ = _pair(keys)
    users = np.array([11, 22, 33], dtype=np.int64)
    # Execute
    Endpoint(e, job_id="j").send(ForwardIns(step=4, users=users, train=True))
    msg = Endpoint(p, job_id="j").recv(ForwardIns)
    # Assert
    np.testing.assert_array_equal(msg.users, users)
    relayed = e_raw.sent[0]
    assert b"forward_ins" not in relayed and users.tobytes() not in relayed


def test_same_message_twice_looks_different(keys) -> None:
    e, _, e_raw, _ = _pair(keys)
    e.send(b"same bytes")
    e.send(b"same bytes")
    assert e_raw.sent[0] != e_raw.sent[1]  # fresh nonce each time


def test_altered_or_foreign_messages_are_rejected(keys) -> None:
    e, p, e_raw, p_raw = _pair(keys)
    e.send(b"payload")
    data = bytearray(p_raw._inbox.get())  # what the relay would deliver, tampered with
    data[-1] ^= 1
    p_raw._inbox.put(bytes(data))
    with pytest.raises(ProtocolError, match="failed authentication"):
        p.recv(timeout=1)
    # a third party with its own key cannot inject messages as E
    intruder = SealedChannel(e_raw, private_key=keys["X"][0], peer_public_key=keys["P"][1])
    intruder.send(b"forged")
    with pytest.raises(ProtocolError, match="'E'"):
        p.recv(timeout=1)


def _job_pair(keys, chunk_bytes=1024):  # type: ignore[no-untyped-def]
    e_raw, p_raw = InMemoryChannel.pair("E", "P")
    e_raw.sent = []
    e = SealedChannel(
        e_raw,
        private_key=keys["E"][0],
        peer_public_key=keys["P"][1],
        job_id="j",
        chunk_bytes=chunk_bytes,
    )
    p = SealedChannel(
        p_raw,
        private_key=keys["P"][0],
        peer_public_key=keys["E"][1],
        job_id="j",
        chunk_bytes=chunk_bytes,
    )
    return e, p, e_raw, p_raw


def test_replayed_envelope_is_rejected_not_applied(keys) -> None:
    # Prepare: the relay keeps a copy of E's first envelope
    e, p, e_raw, p_raw = _job_pair(keys)
    e.send(b"update 1")
    assert p.recv(timeout=1) == b"update 1"
    # Execute: the relay delivers the same sealed bytes again, then E's next message
    p_raw._inbox.put(e_raw.sent[0])
    e.send(b"update 2")
    # Assert: the replay is refused by name; the channel stays usable for the real next one
    with pytest.raises(ReplayError, match="already received"):
        p.recv(timeout=1)
    assert p.recv(timeout=1) == b"update 2"


def test_reordered_envelopes_are_rejected(keys) -> None:
    # Prepare: two envelopes, delivered in swapped order
    e, p, _e_raw, p_raw = _job_pair(keys)
    e.send(b"first")
    e.send(b"second")
    first, second = p_raw._inbox.get(), p_raw._inbox.get()
    p_raw._inbox.put(second)
    p_raw._inbox.put(first)
    # Execute / Assert
    with pytest.raises(ReorderError, match="arrived before 0"):
        p.recv(timeout=1)


def test_reflected_envelope_is_rejected(keys) -> None:
    # Both directions share one Box key; the sealed header says who sent what to whom.
    e, _p, e_raw, _ = _job_pair(keys)
    e.send(b"for P only")
    e.inner._inbox.put(e_raw.sent[0])  # the relay sends E's envelope back to E as "from P"
    with pytest.raises(EnvelopeError, match="reflected"):
        e.recv(timeout=1)


def test_other_job_or_phase_is_rejected(keys) -> None:
    e, p, _, _ = _job_pair(keys)
    e.phase, p.phase = "psi", "train"
    e.send(b"late psi chunk")
    with pytest.raises(EnvelopeError, match=r"phase 'psi'.*phase 'train'"):
        p.recv(timeout=1)
    other = SealedChannel(
        InMemoryChannel.pair("E", "P")[0],
        private_key=keys["E"][0],
        peer_public_key=keys["P"][1],
        job_id="other-job",
    )
    other.inner = e.inner  # same relay path, another job's sender
    other.send(b"x")
    with pytest.raises(EnvelopeError, match="job 'other-job'"):
        p.recv(timeout=1)


def test_large_message_streams_in_bounded_sealed_chunks(keys) -> None:
    # Prepare: 100 kB through 1 kB chunks
    e, p, e_raw, _ = _job_pair(keys, chunk_bytes=1024)
    payload = np.random.default_rng(0).bytes(100_000)
    # Execute
    e.send(payload)
    got = p.recv(timeout=1)
    # Assert: delivered whole; no relayed envelope above chunk + overhead
    assert got == payload
    assert len(e_raw.sent) == 98 and max(len(x) for x in e_raw.sent) < 1024 + 200
    assert p.next_in == e.next_out == 98


def test_flipped_bit_anywhere_is_tamper_error(keys) -> None:
    e, p, _e_raw, p_raw = _job_pair(keys)
    e.send(b"payload")
    sealed = p_raw._inbox.get()
    for bit in (0, 8 * 30 + 3, 8 * len(sealed) - 1):  # nonce, header/body, tag end
        data = bytearray(sealed)
        data[bit // 8] ^= 1 << (bit % 8)
        p_raw._inbox.put(bytes(data))
        with pytest.raises(TamperError, match="failed authentication"):
            p.recv(timeout=1)
    p_raw._inbox.put(sealed)  # the untouched envelope is still accepted afterwards
    assert p.recv(timeout=1) == b"payload"


def test_protocol_step_and_phase_travel_inside_the_seal(keys) -> None:
    from vfl.party.common import SteppedEndpoint

    e, p, _, _ = _job_pair(keys)
    e.phase = p.phase = "train"
    SteppedEndpoint(e, job_id="j").send(ForwardIns(step=7, users=np.arange(3), train=True))
    assert Endpoint(p, job_id="j").recv(ForwardIns).step == 7
    header = p.last_header
    assert header is not None
    assert (header.job, header.sender, header.recipient) == ("j", "E", "P")
    assert (header.phase, header.step, header.seq) == ("train", 7, 0)


def test_bad_key_files_are_named(tmp_path: Path) -> None:
    from vfl.errors import VflError

    bad = tmp_path / "short.box"
    bad.write_bytes(b"123")
    with pytest.raises(VflError, match=r"short\.box.*32-byte"):
        read_key(bad, "network.box_key")
    with pytest.raises(ValueError):
        SealedChannel(InMemoryChannel.pair("a", "b")[0], private_key=b"1", peer_public_key=b"2")


def test_party_refuses_to_run_unsealed(tmp_path: Path) -> None:
    import subprocess
    import sys

    from vfl.data.synthetic_writer import generate_synthetic
    from vfl.transport.certs import generate_dev_pki

    # Prepare: a party config with certificates but no sealing keys
    generate_synthetic(tmp_path / "data", users=60, items=40, seed=1)
    generate_dev_pki(tmp_path / "certs", parties=["shop", "payments"])
    cfg = tmp_path / "data" / "e_party.toml"
    cfg.write_text(
        cfg.read_text() + '\n[network]\ncoordinator = "127.0.0.1:1"\n'
        'ca = "../certs/ca.pem"\ncert = "../certs/shop.pem"\n'
        'key = "../certs/shop.key"\npeer = "payments"\n'
    )
    # Execute
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "vfl",
            "party",
            "--config",
            str(cfg),
            "--job",
            str(tmp_path / "data" / "job.toml"),
            "--out",
            str(tmp_path / "e"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    # Assert: a clear refusal naming the key and the fix, before any connection
    assert done.returncode == 2
    assert "network.box_key" in done.stderr and "Fix:" in done.stderr
    assert "Traceback" not in done.stderr
