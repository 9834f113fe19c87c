"""E with two passive parties on one relay (real gRPC, mutual TLS): each passive party sees
and reaches only E and itself, never the other partner, not even that it exists.

The relay is what every party talks through, so it is where one partner could learn of
another: the join reply's party list, the heartbeat and status replies, and the answers to a
frame or a poll naming the other partner. Each is recorded here as the partner receives it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from vfl.config.coordinator import load_coordinator_config
from vfl.errors import ConfigError
from vfl.transport.board import Heartbeat, PartyState
from vfl.transport.certs import DevPki, generate_dev_pki
from vfl.transport.framing import FrameHeader, RecvRequest, encode_frame, encode_recv_request
from vfl.transport.grpc_relay import (
    HEARTBEAT_METHOD,
    JOIN_METHOD,
    RECV_METHOD,
    SEND_METHOD,
    STATUS_METHOD,
    RelayServer,
)

JOB = "three"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> DevPki:
    return generate_dev_pki(tmp_path_factory.mktemp("pki"), parties=["E", "P", "L"])


@pytest.fixture
def relay(pki: DevPki) -> Iterator[tuple[RelayServer, int]]:
    cert, key = pki.coordinator.read()
    server = RelayServer(
        "127.0.0.1:0",
        ca_pem=pki.ca_pem(),
        cert_pem=cert,
        key_pem=key,
        allowed_parties={"E", "P", "L"},
        job_id=JOB,
        active="E",
    )
    port = server.start()
    yield server, port
    server.stop()


def _rpc(pki: DevPki, port: int, party: str, method: str, payload: bytes) -> bytes:
    """One raw RPC with ``party``'s certificate: exactly the bytes the party receives."""
    cert, key = pki.parties[party].read()
    creds = grpc.ssl_channel_credentials(pki.ca_pem(), key, cert)
    with grpc.secure_channel(f"127.0.0.1:{port}", creds) as ch:
        reply: bytes = ch.unary_unary(method)(payload, timeout=10)
        return reply


def _refusal(pki: DevPki, port: int, party: str, method: str, payload: bytes) -> str:
    with pytest.raises(grpc.RpcError) as info:
        _rpc(pki, port, party, method, payload)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    return str(info.value.details())


def _beat() -> bytes:
    return Heartbeat(JOB, "train", PartyState.RUNNING, {"epoch": 1}).encode()


def test_each_partner_learns_only_e_and_itself_from_join_heartbeat_and_status(
    relay: tuple[RelayServer, int], pki: DevPki
) -> None:
    # Prepare: all three join and heartbeat
    _, port = relay
    joins = {n: json.loads(_rpc(pki, port, n, JOIN_METHOD, b"{}")) for n in ("E", "P", "L")}
    beats = {n: json.loads(_rpc(pki, port, n, HEARTBEAT_METHOD, _beat())) for n in joins}
    # Execute: each asks for the operator's view too
    views = {n: json.loads(_rpc(pki, port, n, STATUS_METHOD, b"")) for n in joins}
    # Assert: E sees both partners; each partner only E and itself, in every reply
    assert joins["E"]["parties"] == ["E", "L", "P"]
    assert set(beats["E"]["parties"]) == set(views["E"]["parties"]) == {"E", "L", "P"}
    for me, other in (("P", "L"), ("L", "P")):
        assert joins[me]["parties"] == sorted(["E", me])
        assert set(beats[me]["parties"]) == set(views[me]["parties"]) == {"E", me}
        for reply in (joins[me], beats[me], views[me]):
            assert other not in json.dumps(reply)


def test_a_frame_or_poll_for_the_other_partner_is_refused_as_for_a_stranger(
    relay: tuple[RelayServer, int], pki: DevPki
) -> None:
    server, port = relay
    # Execute: P sends to L, and to a name that is no party at all; L polls for P
    to_partner = encode_frame(FrameHeader(JOB, "P", "L", "s1", 0), b"hello L")
    to_stranger = encode_frame(FrameHeader(JOB, "P", "Z", "s1", 0), b"hello Z")
    partner = _refusal(pki, port, "P", SEND_METHOD, to_partner)
    stranger = _refusal(pki, port, "P", SEND_METHOD, to_stranger)
    poll = _refusal(pki, port, "L", RECV_METHOD, encode_recv_request(RecvRequest(JOB, "P", 0.1)))
    # Assert: the same answer whether the name is a partner or nobody; nothing relayed
    assert partner == stranger.replace("'Z'", "'L'")
    assert poll == "sender 'P' is not a party of this job"
    assert server.stats() == {}


def test_e_and_each_partner_still_talk_both_ways(
    relay: tuple[RelayServer, int], pki: DevPki
) -> None:
    server, port = relay
    # Execute: E -> L and P -> E
    _rpc(pki, port, "E", SEND_METHOD, encode_frame(FrameHeader(JOB, "E", "L", "s", 0), b"to L"))
    _rpc(pki, port, "P", SEND_METHOD, encode_frame(FrameHeader(JOB, "P", "E", "s", 0), b"to E"))
    at_l = _rpc(pki, port, "L", RECV_METHOD, encode_recv_request(RecvRequest(JOB, "E", 2.0)))
    at_e = _rpc(pki, port, "E", RECV_METHOD, encode_recv_request(RecvRequest(JOB, "P", 2.0)))
    # Assert
    assert at_l.endswith(b"to L") and at_e.endswith(b"to E")
    assert set(server.stats()) == {("E", "L"), ("P", "E")}


def _coordinator_toml(tmp_path: Path, pki: DevPki, extra: str) -> Path:
    cert = pki.coordinator
    path = tmp_path / "coordinator.toml"
    path.write_text(
        "[coordinator]\n"
        f'job = "{JOB}"\n'
        'parties = ["E", "P", "L"]\n'
        f'ca = "{pki.ca}"\ncert = "{cert.cert}"\nkey = "{cert.key}"\n' + extra
    )
    return path


def test_three_parties_need_the_active_party_named(tmp_path: Path, pki: DevPki) -> None:
    with pytest.raises(ConfigError) as missing:
        load_coordinator_config(_coordinator_toml(tmp_path, pki, ""))
    with pytest.raises(ConfigError) as wrong:
        load_coordinator_config(_coordinator_toml(tmp_path, pki, 'active = "X"\n'))
    assert "coordinator.active" in str(missing.value) and 'active = "E"' in str(missing.value)
    assert "active party 'X' is not in parties" in str(wrong.value)
    ok = load_coordinator_config(_coordinator_toml(tmp_path, pki, 'active = "E"\n'))
    assert ok.coordinator.active == "E"
