"""End-to-end sealing between E and P: the relay carries only opaque, authenticated bytes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from vfl.errors import ProtocolError
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
