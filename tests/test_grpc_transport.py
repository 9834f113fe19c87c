"""Real gRPC over 127.0.0.1 with real mutual TLS: dev PKI, relay server and party channels."""

from __future__ import annotations

import os
import socket
import stat
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from cryptography import x509

from vfl.errors import ChannelTimeout, FrameError, PeerLost, TransportError, VflError
from vfl.transport import grpc_relay
from vfl.transport.board import PartyState
from vfl.transport.certs import DevPki, generate_dev_pki, peer_name_from_cert
from vfl.transport.framing import FrameHeader, encode_frame, peek_header
from vfl.transport.grpc_channel import GrpcChannel
from vfl.transport.grpc_relay import SEND_METHOD, RelayServer

JOB = "job-1"
MakeChannel = Callable[..., GrpcChannel]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> DevPki:
    return generate_dev_pki(tmp_path_factory.mktemp("pki"), parties=["E", "P", "X"])


@pytest.fixture(scope="module")
def foreign_pki(tmp_path_factory: pytest.TempPathFactory) -> DevPki:
    return generate_dev_pki(tmp_path_factory.mktemp("foreign"), parties=["E"])


def _start_relay(pki: DevPki, limit: int, bind: str = "127.0.0.1:0") -> RelayServer:
    cert, key = pki.coordinator.read()
    return RelayServer(
        bind,
        ca_pem=pki.ca_pem(),
        cert_pem=cert,
        key_pem=key,
        allowed_parties={"E", "P"},
        job_id=JOB,
        mailbox_limit_bytes=limit,
    )


@pytest.fixture
def relay(pki: DevPki) -> Iterator[tuple[RelayServer, int]]:
    server = _start_relay(pki, limit=64 * 1024 * 1024)
    port = server.start()
    yield server, port
    server.stop()


@pytest.fixture
def make_channel(pki: DevPki, relay: tuple[RelayServer, int]) -> Iterator[MakeChannel]:
    opened: list[GrpcChannel] = []

    def make(me: str, peer: str, *, issuer: DevPki = pki, timeout_s: float = 5.0) -> GrpcChannel:
        ch = _channel(issuer, relay[1], me, peer, timeout_s=timeout_s, ca_pem=pki.ca_pem())
        opened.append(ch)
        return ch

    yield make
    for ch in opened:
        ch.close()


def _raw_send(pki: DevPki, port: int, as_party: str, frame: bytes) -> None:
    cert, key = pki.parties[as_party].read()
    creds = grpc.ssl_channel_credentials(pki.ca_pem(), key, cert)
    with grpc.secure_channel(f"127.0.0.1:{port}", creds) as ch:
        ch.unary_unary(SEND_METHOD)(frame, timeout=5)


# --- certificates ---------------------------------------------------------------------------


def test_dev_pki_names_keys_and_sans(pki: DevPki) -> None:
    # Assert
    assert peer_name_from_cert(pki.parties["E"].cert.read_bytes()) == "E"
    assert peer_name_from_cert(pki.coordinator.cert.read_bytes()) == "coordinator"
    for files in [pki.coordinator, *pki.parties.values()]:
        assert stat.S_IMODE(os.stat(files.key).st_mode) == 0o600
    cert = x509.load_pem_x509_certificate(pki.coordinator.cert.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]


@pytest.mark.parametrize("names", [["E", "E"], ["ca"], ["../evil"], [""]])
def test_dev_pki_refuses_bad_party_names(tmp_path: Path, names: list[str]) -> None:
    with pytest.raises(VflError, match="Fix:"):
        generate_dev_pki(tmp_path, parties=names)


def test_peer_name_from_garbage_is_named_error() -> None:
    with pytest.raises(VflError, match="not a PEM certificate"):
        peer_name_from_cert(b"hello")


# --- framing ----------------------------------------------------------------------------------


def test_peek_header_reads_only_the_header() -> None:
    header = FrameHeader(JOB, "E", "P", "s1", 3)
    assert peek_header(encode_frame(header, b"\xff" * 10)) == header
    with pytest.raises(FrameError):
        peek_header(b"\x00\x00\xff\xff{}")


# --- exchange -------------------------------------------------------------------------------


def test_both_ways_in_order_including_5_mb(make_channel: MakeChannel) -> None:
    # Prepare
    e, p = make_channel("E", "P"), make_channel("P", "E")
    big = os.urandom(5 * 1024 * 1024)
    # Execute
    e.send(b"one")
    e.send(big)
    p.send(b"back")
    # Assert
    assert p.recv(5) == b"one"
    assert p.recv(5) == big
    assert e.recv(5) == b"back"
    assert e.traffic.bytes_sent == 3 + len(big)


def test_many_messages_keep_order_with_concurrent_sender(make_channel: MakeChannel) -> None:
    # Prepare
    e, p = make_channel("E", "P"), make_channel("P", "E")
    msgs = [i.to_bytes(4, "big") * (i % 7 + 1) for i in range(300)]
    sender = threading.Thread(target=lambda: [e.send(m) for m in msgs])
    # Execute
    sender.start()
    got = [p.recv(5) for _ in msgs]
    sender.join()
    # Assert
    assert got == msgs


def test_recv_timeout_names_peer_quickly(make_channel: MakeChannel) -> None:
    p = make_channel("P", "E")
    start = time.monotonic()
    with pytest.raises(ChannelTimeout, match="party 'E'"):
        p.recv(0.5)
    assert 0.45 < time.monotonic() - start < 1.5


# --- refusals -------------------------------------------------------------------------------


def test_client_certificate_from_another_ca_fails_fast(
    make_channel: MakeChannel, foreign_pki: DevPki
) -> None:
    e = make_channel("E", "P", issuer=foreign_pki, timeout_s=10.0)
    start = time.monotonic()
    with pytest.raises(TransportError, match=r"party 'E'.*Fix: .*CA"):
        e.send(b"x")
    assert time.monotonic() - start < 5.0


def test_coordinator_from_another_ca_fails_fast(
    relay: tuple[RelayServer, int], pki: DevPki, foreign_pki: DevPki
) -> None:
    cert, key = pki.parties["E"].read()
    e = GrpcChannel(
        f"127.0.0.1:{relay[1]}",
        me="E",
        peer="P",
        ca_pem=foreign_pki.ca_pem(),
        cert_pem=cert,
        key_pem=key,
        job_id=JOB,
        timeout_s=10.0,
    )
    with e, pytest.raises(TransportError, match="TLS"):
        e.send(b"x")


def test_party_not_in_job_is_refused_by_name(make_channel: MakeChannel) -> None:
    x = make_channel("X", "E")
    with pytest.raises(TransportError, match="party 'X' is not allowed"):
        x.send(b"x")
    with pytest.raises(TransportError, match="party 'X'"):
        x.recv(1.0)


def test_frame_claiming_another_sender_is_refused(
    relay: tuple[RelayServer, int], pki: DevPki
) -> None:
    forged = encode_frame(FrameHeader(JOB, "P", "E", "s1", 0), b"evil")
    with pytest.raises(grpc.RpcError) as info:
        _raw_send(pki, relay[1], "E", forged)
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "claiming to be from 'P'" in str(info.value.details())
    assert relay[0].stats() == {}


def test_resent_frame_is_delivered_once(
    relay: tuple[RelayServer, int], pki: DevPki, make_channel: MakeChannel
) -> None:
    frame = encode_frame(FrameHeader(JOB, "E", "P", "s1", 0), b"once")
    _raw_send(pki, relay[1], "E", frame)
    _raw_send(pki, relay[1], "E", frame)
    p = make_channel("P", "E")
    assert p.recv(2) == b"once"
    with pytest.raises(ChannelTimeout):
        p.recv(0.3)


def test_full_mailbox_pushes_back_until_read(pki: DevPki) -> None:
    server = _start_relay(pki, limit=1000)
    port = server.start()
    try:
        e, p = (_channel(pki, port, a, b) for a, b in [("E", "P"), ("P", "E")])
        e.send(b"a" * 800)
        with pytest.raises(ChannelTimeout, match="party 'P' is not reading"):
            e.send(b"b" * 800)
        assert p.recv(2) == b"a" * 800
        e.send(b"c" * 800)
        assert p.recv(2) == b"c" * 800
        e.close()
        p.close()
    finally:
        server.stop()


def _channel(
    pki: DevPki,
    port: int,
    me: str,
    peer: str,
    timeout_s: float = 0.4,
    ca_pem: bytes | None = None,
) -> GrpcChannel:
    """A party channel with ``me``'s certificate from ``pki`` (trusting ``ca_pem`` if given)."""
    cert, key = pki.parties[me].read()
    return GrpcChannel(
        f"127.0.0.1:{port}",
        me=me,
        peer=peer,
        ca_pem=ca_pem or pki.ca_pem(),
        cert_pem=cert,
        key_pem=key,
        job_id=JOB,
        timeout_s=timeout_s,
    )


def test_coordinator_down_is_a_timeout_not_a_hang(pki: DevPki) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    e = _channel(pki, port, "E", "P")
    start = time.monotonic()
    with pytest.raises(ChannelTimeout, match="unreachable"):
        e.send(b"x")
    e.close()
    assert time.monotonic() - start < 2.0


# --- what the coordinator learns ------------------------------------------------------------


def test_stats_count_bytes_and_relay_never_decodes_body(
    relay: tuple[RelayServer, int], make_channel: MakeChannel
) -> None:
    # Prepare: bodies that are not UTF-8, not JSON, and one that looks like a frame itself
    e, p = make_channel("E", "P"), make_channel("P", "E")
    bodies = [
        os.urandom(1000),
        b"\xff\xfe" * 50,
        encode_frame(FrameHeader(JOB, "P", "E", "z", 9), b""),
    ]
    # Execute
    for body in bodies:
        e.send(body)
    got = [p.recv(5) for _ in bodies]
    # Assert
    assert got == bodies
    ((link, counted),) = relay[0].stats().items()
    assert link == ("E", "P")
    assert sum(map(len, bodies)) < counted < sum(map(len, bodies)) + 200 * len(bodies)
    assert not hasattr(grpc_relay, "split_frame")


def test_channel_rides_out_a_coordinator_restart(pki: DevPki) -> None:
    # Prepare
    first = _start_relay(pki, limit=1 << 20)
    port = first.start()
    second = _start_relay(pki, limit=1 << 20, bind=f"127.0.0.1:{port}")
    e, p = (_channel(pki, port, a, b, timeout_s=5.0) for a, b in [("E", "P"), ("P", "E")])
    restart = threading.Timer(0.3, second.start)
    try:
        e.send(b"before")
        assert p.recv(2) == b"before"
        first.stop()
        # Execute
        restart.start()
        e.send(b"after")
        # Assert
        assert p.recv(5) == b"after"
    finally:
        restart.cancel()
        if restart.ident is not None:
            restart.join()
        e.close()
        p.close()
        second.stop()


def test_second_relay_on_a_taken_port_is_a_named_error(
    relay: tuple[RelayServer, int], pki: DevPki
) -> None:
    other = _start_relay(pki, limit=1000, bind=f"127.0.0.1:{relay[1]}")
    with pytest.raises(TransportError, match=r"cannot listen on .*Fix:"):
        other.start()
    other.stop()


# --- job, plan and heartbeats ----------------------------------------------------------------


def test_frames_and_polls_for_another_job_are_refused(
    relay: tuple[RelayServer, int], pki: DevPki
) -> None:
    # Prepare: a party channel of a job this coordinator does not serve
    e = _channel(pki, relay[1], "E", "P", timeout_s=2.0)
    e.job_id = "job-2"
    try:
        # Execute / Assert
        with pytest.raises(TransportError, match="serves job 'job-1', not 'job-2'"):
            e.send(b"x")
        with pytest.raises(TransportError, match="serves job 'job-1', not 'job-2'"):
            e.recv(1)
        with pytest.raises(TransportError, match="not 'job-2'"):
            e.join("job-2")
    finally:
        e.close()


def test_join_hands_out_the_plan_and_the_job(pki: DevPki) -> None:
    cert, key = pki.coordinator.read()
    server = RelayServer(
        "127.0.0.1:0",
        ca_pem=pki.ca_pem(),
        cert_pem=cert,
        key_pem=key,
        allowed_parties={"E", "P"},
        job_id=JOB,
        plan='{"job": {"name": "job-1"}}',
    )
    port = server.start()
    e = _channel(pki, port, "E", "P", timeout_s=2.0)
    e.job_id = ""  # the party learns the job from the coordinator
    try:
        reply = e.join()
        assert reply.job == JOB and e.job_id == JOB
        assert reply.plan == '{"job": {"name": "job-1"}}' and set(reply.parties) == {"E", "P"}
        assert "E" in server.board.joined
    finally:
        e.close()
        server.stop()


def test_vanished_peer_is_reported_by_name_within_seconds(
    relay: tuple[RelayServer, int], pki: DevPki
) -> None:
    # Prepare: both parties heartbeat; then P goes silent (its heartbeat thread stops)
    e = _channel(pki, relay[1], "E", "P", timeout_s=60.0)
    p = _channel(pki, relay[1], "P", "E", timeout_s=60.0)
    e.start_heartbeat(interval_s=0.2, lost_after_s=1.0)
    p.start_heartbeat(interval_s=0.2, lost_after_s=1.0)
    try:
        time.sleep(0.6)
        assert e.peer_status() is not None
        p.close()
        # Execute: E waits for a message from P, with a 60 s timeout
        start = time.monotonic()
        with pytest.raises(PeerLost, match="party 'P' stopped responding: no heartbeat for"):
            e.recv(60.0)
        # Assert: reported well before the timeout
        assert time.monotonic() - start < 5.0
    finally:
        e.close()


def test_peer_that_failed_is_reported_and_final_message_still_arrives(
    relay: tuple[RelayServer, int], pki: DevPki
) -> None:
    e = _channel(pki, relay[1], "E", "P", timeout_s=30.0)
    p = _channel(pki, relay[1], "P", "E", timeout_s=30.0)
    e.start_heartbeat(interval_s=0.2, lost_after_s=5.0)
    p.start_heartbeat(interval_s=0.2, lost_after_s=5.0)
    try:
        # a message sent just before P reports done is delivered, then P's end is named
        p.send(b"last words")
        p.report(state=PartyState.FAILED, progress={"error": "DataError"})
        time.sleep(0.5)
        assert e.recv(5.0) == b"last words"
        start = time.monotonic()
        with pytest.raises(PeerLost, match=r"party 'P' failed the job \(DataError\)"):
            e.recv(30.0)
        assert time.monotonic() - start < 3.0
    finally:
        e.close()
        p.close()
