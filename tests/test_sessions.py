"""Sealed sessions between E and P: fresh per-session ephemeral keys authenticated by the pinned
ones, reflected hellos refused, envelopes of an earlier session (training or inference) dropped,
never applied, and a session's envelopes still checked for tampering, replay and reordering."""

from __future__ import annotations

import io
import queue
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nacl.public
import pytest

from tests.helpers import run_concurrently
from tests.test_processes import Pilot, _prepare
from tests.test_what_c_learns import start_relay
from tests.timing import scaled
from vfl.config.party import load_party_config
from vfl.config.plan import JobPlan
from vfl.errors import EnvelopeError, ReorderError, ReplayError, TamperError
from vfl.party.runner import PartyRun
from vfl.party.serving import run_session
from vfl.protocol.endpoint import ByteChannel
from vfl.transport.channel import InMemoryChannel
from vfl.transport.framing import split_frame
from vfl.transport.grpc_relay import RelayServer, read_capture
from vfl.transport.session import SESSION_KIND, SessionChannel, open_session

KEYS = {name: nacl.public.PrivateKey.generate() for name in ("E", "P")}


def _keys(me: str, peer: str) -> dict[str, bytes]:
    return {
        "private_key": bytes(KEYS[me]),
        "peer_public_key": bytes(KEYS[peer].public_key),
    }


def _open_pair(e: InMemoryChannel, p: InMemoryChannel) -> tuple[SessionChannel, SessionChannel]:
    """Both sides open a session at the same time, as two processes do."""
    got: dict[str, SessionChannel] = {}

    def side(ch: InMemoryChannel, me: str, peer: str) -> None:
        got[me] = open_session(ch, **_keys(me, peer), job_id="job", me=me, timeout=scaled(10))

    thread = threading.Thread(target=side, args=(p, "P", "E"))
    thread.start()
    side(e, "E", "P")
    thread.join(timeout=scaled(10))
    return got["E"], got["P"]


def _mirror(name: str, peer: str) -> InMemoryChannel:
    """A relay that sends everything ``name`` sends straight back to it."""
    box: queue.Queue[bytes] = queue.Queue()
    return InMemoryChannel(name, peer, inbox=box, outbox=box)


def test_a_reflected_hello_is_refused_not_taken_for_the_peer() -> None:
    # Prepare: a relay that reflects E's hellos back to E
    mirror = _mirror("E", "P")
    # Execute / Assert: E refuses its own hello instead of opening a session with itself
    with pytest.raises(EnvelopeError, match="reflected or misrouted"):
        open_session(mirror, **_keys("E", "P"), job_id="job", me="E", timeout=scaled(5))


def test_a_hello_reflected_into_a_running_session_is_refused() -> None:
    # Prepare: a session; E's first hello, as the relay saw it
    e_raw, p_raw = InMemoryChannel.pair("E", "P")
    e_raw.sent = []
    e, _ = _open_pair(e_raw, p_raw)
    own_hello = e_raw.sent[0]
    # Execute: the relay bounces it back into E's session
    e_raw._inbox.put(own_hello)
    # Assert: refused by name, not taken for a restarted peer
    with pytest.raises(EnvelopeError, match="reflected or misrouted"):
        e.recv(timeout=1)


def test_every_session_has_its_own_key_and_the_pinned_keys_open_none() -> None:
    # Prepare: two sessions between the same pinned parties
    e_raw, p_raw = InMemoryChannel.pair("E", "P")
    e_raw.sent = []
    e1, p1 = _open_pair(e_raw, p_raw)
    e1.send(b"first session")
    assert p1.recv(timeout=5) == b"first session"
    first = e_raw.sent[-1]
    e2, p2 = _open_pair(e_raw, p_raw)
    e2.send(b"second session")
    second = e_raw.sent[-1]
    # Assert: fresh tags and keys; each side derived the same ones; one session cannot open
    # the other's envelopes
    assert e1.tag == p1.tag and e2.tag == p2.tag and e1.tag != e2.tag
    assert first[:1] == second[:1] == SESSION_KIND
    assert p2.recv(timeout=5) == b"second session"
    with pytest.raises(TamperError):
        p2.open_envelope(first)
    static = nacl.public.Box(KEYS["P"], KEYS["E"].public_key)
    for body in (first, second):
        for start in (0, 1, 17):
            with pytest.raises(nacl.exceptions.CryptoError):
                static.decrypt(body[start:])


def test_session_envelopes_altered_replayed_or_reordered_are_rejected() -> None:
    # Prepare: three envelopes E sent in a session, as relayed
    e_raw, p_raw = InMemoryChannel.pair("E", "P")
    e, p = _open_pair(e_raw, p_raw)
    e_raw.sent = []
    for n in range(3):
        e.send(f"message {n}".encode())
    while True:  # the relay holds them back
        try:
            p_raw.recv(timeout=0.1)
        except TimeoutError:
            break
    sent = e_raw.sent
    # Execute / Assert: a flipped bit anywhere after the kind and tag fails authentication
    for bit in (8 * 17 + 3, 8 * 40, 8 * len(sent[0]) - 1):
        flipped = bytearray(sent[0])
        flipped[bit // 8] ^= 1 << (bit % 8)
        p_raw._inbox.put(bytes(flipped))
        with pytest.raises(TamperError):
            p.recv(timeout=1)
    p_raw._inbox.put(sent[0])
    assert p.recv(timeout=1) == b"message 0"
    p_raw._inbox.put(sent[0])
    with pytest.raises(ReplayError):
        p.recv(timeout=1)
    p_raw._inbox.put(sent[2])
    with pytest.raises(ReorderError):
        p.recv(timeout=1)


Body = Callable[[ByteChannel, JobPlan], dict[str, Any]]


def _inference_session(pilot: Pilot, relay: RelayServer, bodies: dict[str, Body]) -> None:
    """One inference session as ``vfl infer`` / ``vfl serve`` run it (``run_session``), both
    parties as threads, through ``relay``."""
    errors: list[BaseException] = []

    def party(k: str) -> None:
        run = PartyRun(load_party_config(pilot.files[k]), pilot.files[k], pilot.root / k)
        try:
            run_session(run, bodies[k], emit=lambda _: None)
        except BaseException as exc:  # reported below
            errors.append(exc)

    try:
        run_concurrently(party, [("p",), ("e",)], timeout=scaled(120))
    finally:
        relay.stop()
    assert not errors, errors


def test_an_earlier_inference_sessions_envelope_is_dropped_in_a_later_one(
    tmp_path: Path,
) -> None:
    # Prepare: a first inference session through its coordinator, whose capture is kept
    pilot = _prepare(tmp_path, epochs=1)
    got: dict[str, list[bytes]] = {"first": [], "second": []}
    dropped: list[int] = []

    def asks(text: bytes, after: threading.Event | None = None) -> Body:
        def body(channel: ByteChannel, plan: JobPlan) -> dict[str, Any]:
            if after is not None:
                assert after.wait(scaled(30))
            channel.send(text)
            return {}

        return body

    def answers(into: str, before: Callable[[], None] = lambda: None) -> Body:
        def body(channel: ByteChannel, plan: JobPlan) -> dict[str, Any]:
            before()
            got[into].append(channel.recv(scaled(30)))
            dropped.append(getattr(channel, "dropped", 0))
            return {}

        return body

    capture = io.BytesIO()
    first = start_relay(pilot.files["coordinator"], capture)
    _inference_session(pilot, first, {"e": asks(b"first: score user 7"), "p": answers("first")})
    frames = read_capture(capture.getvalue())
    request = [f for f in frames if split_frame(f)[0].sender == "shop"][-1]
    # Execute: in the second session, the coordinator replays the first one's request to P
    # before E's new request
    second = start_relay(pilot.files["coordinator"])
    replayed = threading.Event()

    def replay() -> None:
        assert second._boxes.put(split_frame(request)[0], request)
        replayed.set()

    bodies = {"e": asks(b"second: score user 9", replayed), "p": answers("second", replay)}
    _inference_session(pilot, second, bodies)
    # Assert: each session got its own request; the replayed one was dropped unread
    assert got == {"first": [b"first: score user 7"], "second": [b"second: score user 9"]}
    assert dropped[-1] >= 1
