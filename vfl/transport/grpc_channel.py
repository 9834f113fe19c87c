"""A party's :class:`~vfl.transport.channel.Channel` to its peer through the coordinator's relay.

The party dials out to the coordinator only (mutual TLS: it presents its own certificate and
verifies the coordinator's against the job CA). ``send`` wraps the bytes in a frame addressed to
the peer; ``recv`` long-polls the relay until a frame from the peer arrives.

Limits: one frame holds at most :data:`~vfl.transport.grpc_relay.MAX_MESSAGE_BYTES` (64 MiB of
body plus header room); the protocol layer chunks anything larger. Transient failures
(coordinator restarting, mailbox full) are retried with exponential backoff inside the caller's
timeout; certificate and permission failures are reported at once with the likely fix.

Liveness: :meth:`GrpcChannel.join` fetches the job plan, and :meth:`GrpcChannel.start_heartbeat`
pings the coordinator every ``interval_s`` from a background thread, carrying this party's
phase, state and published progress. Each reply holds every party's last-heard age, phase and
state (never its progress: :mod:`vfl.transport.board`); while
``recv`` waits it checks the peer's, and raises :class:`~vfl.errors.PeerLost` naming the peer
once it has been silent for ``lost_after_s`` (or reported a failure, or finished).
"""

from __future__ import annotations

import copy
import json
import secrets
import threading
import time
from collections.abc import Callable
from typing import Any

import grpc

from vfl.errors import ChannelTimeout, PeerLost, ProtocolError, TransportError
from vfl.phases import Phase
from vfl.transport.admission import (
    HEARTBEAT_KEY,
    INSTANCE_KEY,
    alive_window_s,
    encode_liveness,
    failed_before,
)
from vfl.transport.board import Heartbeat, PartyState, PartyStatus, decode_status
from vfl.transport.channel import TrafficCounter
from vfl.transport.dialling import DialProgress, JoinReply
from vfl.transport.framing import (
    FrameHeader,
    RecvRequest,
    encode_frame,
    encode_recv_request,
    split_frame,
)
from vfl.transport.grpc_errors import raise_unless_transient, tls_error
from vfl.transport.grpc_relay import (
    GRPC_OPTIONS,
    HEARTBEAT_METHOD,
    JOIN_METHOD,
    RECV_METHOD,
    SEND_METHOD,
)

_MAX_BACKOFF_S = 1.0
# gRPC's own reconnect backoff grows to 120 s by default: a coordinator that comes up (or
# back) after a party started would then be noticed late, past the connect deadline
_CLIENT_OPTIONS = [
    *GRPC_OPTIONS,
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 2000),
]
_POLL_SLACK_S = 0.5
# The coordinator hanging up during the handshake this many times in a row (about 1.5 s of
# backoff) means it refuses our certificate; a coordinator that is down refuses the connection.
_HANGUP = "socket closed"
_MAX_HANGUPS = 5
_NO_ATTEMPT = "no attempt made"
_HEARTBEAT_RPC_S = 2.0
_BEATING_POLL_S = 1.0
_GRACE_SLACK_S = 2.0


class GrpcChannel:
    """Endpoint ``me`` of the ordered link to ``peer``, relayed by the coordinator at ``target``."""

    def __init__(
        self,
        target: str,
        *,
        me: str,
        peer: str,
        ca_pem: bytes,
        cert_pem: bytes,
        key_pem: bytes,
        job_id: str = "",
        timeout_s: float = 30.0,
        connect_timeout_s: float = 30.0,
        heartbeat_s: float = 1.0,
        lost_after_s: float = 5.0,
        on_wait: Callable[[str], None] | None = None,
    ) -> None:
        """``connect_timeout_s`` bounds :meth:`join` (dialling), ``timeout_s`` every later
        RPC; ``on_wait`` receives a line now and then while :meth:`join` waits."""
        self.name, self.peer, self.job_id = me, peer, job_id
        self.target, self.timeout_s = target, timeout_s
        self.connect_timeout_s, self._on_wait = connect_timeout_s, on_wait
        # one instance id per process: the coordinator admits one process per party
        liveness = encode_liveness(heartbeat_s, lost_after_s)
        self._metadata = ((INSTANCE_KEY, secrets.token_hex(8)), (HEARTBEAT_KEY, liveness))
        self._alive_window_s = alive_window_s(heartbeat_s, lost_after_s)
        self._joined_at: float | None = None  # when join() succeeded
        self.traffic = TrafficCounter()
        creds = grpc.ssl_channel_credentials(
            root_certificates=ca_pem, private_key=key_pem, certificate_chain=cert_pem
        )
        self._channel: Any = grpc.secure_channel(target, creds, options=_CLIENT_OPTIONS)
        self._send_rpc = self._channel.unary_unary(SEND_METHOD)
        self._recv_rpc = self._channel.unary_unary(RECV_METHOD)
        self._join_rpc = self._channel.unary_unary(JOIN_METHOD)
        self._beat_rpc = self._channel.unary_unary(HEARTBEAT_METHOD)
        self._beat = _BeatState()
        self._session = secrets.token_hex(8)
        self._seq = 0
        self._last_seen: dict[str, int] = {}  # peer session -> last delivered seq
        self._parties: tuple[str, ...] = ()  # the job's parties, from join

    def send(self, data: bytes) -> None:
        """Deliver ``data`` to the relay for the peer within ``timeout_s``.

        Raises:
            ChannelTimeout: the coordinator did not accept the frame in time (it may still
                deliver it; the protocol layer's sequence numbers catch a duplicate re-send).
            TransportError: certificate or permission problem, or a refused frame.
        """
        if not isinstance(data, bytes):
            raise TypeError("channels carry bytes only")
        header = FrameHeader(self.job_id, self.name, self.peer, self._session, self._seq)
        deadline = time.monotonic() + self.timeout_s
        try:
            self._call(self._send_rpc, encode_frame(header, data), deadline, poll=False)
        except (ChannelTimeout, TransportError):
            # The relay may or may not hold this frame: a fresh session keeps the next frame
            # from being dropped as a re-send, and the receiver from seeing a false gap.
            self._session, self._seq = secrets.token_hex(8), 0
            raise
        self._seq += 1
        self.traffic.add(len(data))

    def recv(self, timeout: float) -> bytes:
        """Next message from the peer, waiting at most ``timeout`` seconds.

        Raises:
            ChannelTimeout: nothing from the peer in time (names the peer).
            ProtocolError: a frame from the wrong job or party, or a gap in its sequence.
            TransportError: certificate or permission problem.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            left = deadline - time.monotonic()
            if self._beat.thread is not None:  # look at the peer's heartbeat every second
                left = min(left, _BEATING_POLL_S)
            req = RecvRequest(job=self.job_id, sender=self.peer, wait_s=max(0.0, left))
            reply = self._call(self._recv_rpc, encode_recv_request(req), deadline, poll=True)
            if not reply:
                reply = self._check_peer(deadline)
            if reply:
                body = self._accept(reply)
                if body is not None:
                    return body
        raise self._timeout(f"no message from party '{self.peer}' within {timeout:g} s")

    def join(self, expected_job: str | None = None) -> JoinReply:
        """Fetch the job id, parties and plan from the coordinator; adopt the job id.

        Dials for at most ``connect_timeout_s``, telling ``on_wait`` the address and attempt
        while nothing answers. Another process of this party still joined is waited for
        :func:`~vfl.transport.admission.alive_window_s` plus slack (a crashed predecessor
        falls silent by then), then refused.

        Raises:
            TransportError: refused (certificate, job, another process of this party), or
                the coordinator's reply is garbage.
            ChannelTimeout: the coordinator is unreachable within ``connect_timeout_s``.
        """
        self.job_id = expected_job or self.job_id
        payload = json.dumps({"job": self.job_id}).encode()
        raw = self._dial(payload)
        try:
            fields = json.loads(raw.decode())
            reply = JoinReply(str(fields["job"]), tuple(fields["parties"]), fields["plan"])
        except (UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
            raise TransportError(f"{self.name}: malformed join reply from the coordinator") from exc
        self._parties = reply.parties
        self.job_id = reply.job
        self._check_party(self.peer)
        self._joined_at = time.monotonic()
        return reply

    def link(self, peer: str) -> GrpcChannel:
        """The link to ``peer`` over this same connection (after :meth:`join`): its own frame
        session and sequence numbers and its own traffic count; the connection, the
        coordinator's admission of this process and the heartbeat thread are shared, and
        ``recv`` on it reports ``peer`` lost by name. Close only the channel it came from.

        Raises:
            TransportError: ``peer`` is not a party of the job.
        """
        self._check_party(peer)
        other = copy.copy(self)
        other.peer, other.traffic = peer, TrafficCounter()
        other._session, other._seq, other._last_seen = secrets.token_hex(8), 0, {}
        return other

    def _check_party(self, peer: str) -> None:
        if peer not in self._parties:
            raise TransportError(
                f"{self.name}: the coordinator's job '{self.job_id}' has parties "
                f"{', '.join(self._parties)}, not the configured peer '{peer}'. Fix: set "
                "network.peer (or the name of a [[network.partners]] entry) to that party's "
                "certificate name"
            )

    def _dial(self, payload: bytes) -> bytes:
        """The join RPC, retried until ``connect_timeout_s`` (see :meth:`join`)."""
        deadline = time.monotonic() + self.connect_timeout_s
        progress = DialProgress(
            name=self.name,
            target=self.target,
            connect_timeout_s=self.connect_timeout_s,
            on_wait=self._on_wait,
        )
        return progress.through_grace(
            lambda: self._call(self._join_rpc, payload, deadline, poll=False, waiting=progress),
            grace_s=self._alive_window_s + _GRACE_SLACK_S,
            deadline=deadline,
        )

    def start_heartbeat(self, *, interval_s: float = 1.0, lost_after_s: float = 5.0) -> None:
        """Ping the coordinator every ``interval_s`` from a daemon thread (idempotent)."""
        if self._beat.thread is not None:
            return
        self._beat.lost_after_s = lost_after_s
        self._beat.thread = threading.Thread(
            target=self._beat_loop, args=(interval_s,), name="heartbeat", daemon=True
        )
        self._beat.thread.start()

    def report(
        self,
        *,
        phase: str | None = None,
        state: PartyState | None = None,
        progress: dict[str, Any] | None = None,
    ) -> None:
        """Change what the heartbeats say; a final state is sent at once."""
        with self._beat.lock:
            self._beat.phase = phase if phase is not None else self._beat.phase
            self._beat.state = state if state is not None else self._beat.state
            self._beat.progress = progress if progress is not None else self._beat.progress
        if state in (PartyState.DONE, PartyState.FAILED):
            self._beat_once()

    def peer_status(self) -> PartyStatus | None:
        """The peer's status from the latest heartbeat reply, with its age brought up to now."""
        with self._beat.lock:
            status, at = self._beat.statuses.get(self.peer), self._beat.peer_at
        if status is None or status.age_s is None:
            return status
        age = status.age_s + time.monotonic() - at
        return PartyStatus(age, status.phase, status.state, status.progress, status.error)

    def close(self) -> None:
        """Stop the heartbeat and close the underlying gRPC channel."""
        self._beat.stop.set()
        if self._beat.thread is not None:
            self._beat.thread.join(timeout=_HEARTBEAT_RPC_S + 1)
        self._channel.close()

    def __enter__(self) -> GrpcChannel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _beat_loop(self, interval_s: float) -> None:
        while not self._beat.stop.is_set():
            self._beat_once()
            self._beat.stop.wait(interval_s)

    def _beat_once(self) -> None:
        """One heartbeat; failures only age the last contact (``recv`` reports them)."""
        with self._beat.lock:
            beat = Heartbeat(self.job_id, self._beat.phase, self._beat.state, self._beat.progress)
        try:
            reply = self._beat_rpc(beat.encode(), timeout=_HEARTBEAT_RPC_S, metadata=self._metadata)
            statuses = decode_status(bytes(reply))
        except (grpc.RpcError, ProtocolError):
            return
        with self._beat.lock:
            self._beat.statuses, self._beat.peer_at = statuses, time.monotonic()
            self._beat.contact_at = self._beat.peer_at

    def _check_peer(self, deadline: float) -> bytes:
        """Raise :class:`PeerLost` if the peer is silent, failed or done while we wait.

        A peer that finished gets one last look at the mailbox first, so its final message,
        sent before it reported done, is still delivered (returned; else empty bytes).
        """
        if self._beat.thread is None:
            return b""
        status = self.peer_status()
        lost = self._beat.lost_after_s
        if status is not None and failed_before(status, self._joined_at):
            return b""  # an earlier run of the peer failed: wait for it to be restarted
        if status is not None and status.state is not PartyState.RUNNING:
            # its own deadline: the caller's may have passed during the long-poll just made
            last_look = max(deadline, time.monotonic() + _HEARTBEAT_RPC_S)
            req = RecvRequest(job=self.job_id, sender=self.peer, wait_s=0.0)
            reply = self._call(self._recv_rpc, encode_recv_request(req), last_look, poll=True)
            if reply:
                return reply
            what = "failed" if status.state is PartyState.FAILED else "finished"
            reason = status.error
            raise PeerLost(
                f"{self.name}: party '{self.peer}' {what} the job"
                + (f" ({reason})" if reason else "")
                + " while this party waits for its next message"
                + (
                    f". Fix: read the error in party '{self.peer}''s output, fix it, then "
                    "re-run both parties' commands to resume"
                    if status.state is PartyState.FAILED
                    else ""
                )
            )
        if status is not None and status.age_s is not None and status.age_s > lost:
            raise PeerLost(
                f"{self.name}: party '{self.peer}' stopped responding: no heartbeat for "
                f"{status.age_s:.0f} s (phase '{status.phase}')"
            )
        self._check_coordinator()
        return b""

    def _check_coordinator(self) -> None:
        """Raise :class:`PeerLost` once no heartbeat has been answered for 3 x lost_after_s."""
        if self._beat.thread is None:
            return
        silent = time.monotonic() - self._beat.contact_at
        if silent > 3 * self._beat.lost_after_s:
            raise PeerLost(
                f"{self.name}: the coordinator at {self.target} stopped responding: no "
                f"heartbeat answered for {silent:.0f} s"
            )

    def _accept(self, frame: bytes) -> bytes | None:
        """Body of a checked frame, or None for a duplicate."""
        header, body = split_frame(frame)
        if (header.job, header.sender, header.recipient) != (self.job_id, self.peer, self.name):
            raise ProtocolError(
                f"{self.name}: frame for job '{header.job}' from '{header.sender}' to "
                f"'{header.recipient}' on the channel of job '{self.job_id}' with '{self.peer}'"
            )
        last = self._last_seen.get(header.session)
        if last is not None and header.seq <= last:
            return None
        if last is not None and header.seq != last + 1:
            raise ProtocolError(
                f"{self.name}: frames {last + 1}..{header.seq - 1} from party '{self.peer}' "
                "are missing"
            )
        self._last_seen[header.session] = header.seq
        return body

    def _call(
        self,
        rpc: Any,
        payload: bytes,
        deadline: float,
        *,
        poll: bool,
        waiting: DialProgress | None = None,
    ) -> bytes:
        """One RPC, retried with backoff on transient errors until ``deadline``.

        A long-poll gets ``_POLL_SLACK_S`` beyond ``deadline`` so the relay answers first.
        ``waiting`` (dialling) hears of every failed attempt and names the connect deadline.
        """
        backoff, hangups, last, full = 0.05, 0, _NO_ATTEMPT, False
        while (left := deadline - time.monotonic()) > 0:
            try:
                slack = _POLL_SLACK_S if poll else 0.0
                return bytes(rpc(payload, timeout=left + slack, metadata=self._metadata))
            except grpc.RpcError as err:
                last = str(err.details() or "")
                full = err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                raise_unless_transient(err, name=self.name, target=self.target)
                hangups = hangups + 1 if _HANGUP in last.lower() else 0
            # hang-ups before the first join mean a TLS mismatch; once joined, the same
            # credentials were accepted, so a hang-up is a coordinator going away: retry
            if hangups >= _MAX_HANGUPS and self._joined_at is None:
                raise tls_error(last, name=self.name, target=self.target)
            if poll:
                self._check_coordinator()
            if waiting is not None:
                waiting.attempt_failed(last)
            time.sleep(min(backoff, max(0.0, deadline - time.monotonic())))
            backoff = min(2 * backoff, _MAX_BACKOFF_S)
        if last == _NO_ATTEMPT:
            raise self._timeout(f"timed out before reaching party '{self.peer}'")
        if full:
            raise self._timeout(f"party '{self.peer}' is not reading its messages: {last}")
        if waiting is not None:
            raise waiting.gave_up(last)
        raise self._timeout(
            f"coordinator at {self.target} unreachable while talking to party '{self.peer}' "
            f"(last error: {last}). Fix: check that the coordinator is running at that address"
        )

    def _timeout(self, what: str) -> ChannelTimeout:
        return ChannelTimeout(f"{self.name}: {what}")


class _BeatState:
    """Mutable heartbeat state shared between the heartbeat thread and ``recv``."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.thread: threading.Thread | None = None
        self.lost_after_s = 5.0
        self.phase: str = Phase.JOINED  # "" once a party publishes no phase
        self.state = PartyState.RUNNING
        self.progress: dict[str, Any] = {}
        self.statuses: dict[str, PartyStatus] = {}  # every party's, from the last reply
        self.peer_at = 0.0
        self.contact_at = time.monotonic()
