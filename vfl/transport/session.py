"""A fresh sealed session between E and P for every process start, so a restart resumes cleanly.

A killed party leaves envelopes behind in the coordinator's mailboxes (its peer's unanswered
requests, its own last replies), and its restarted process numbers envelopes from 0 again. So
every process start first agrees a *session* with the peer, and binds every later envelope to
it:

1. **Hello.** Each side draws a random session id ``s`` (64 bits) and sends, sealed with the
   pinned keys under job id ``<job>/hello``, ``{"sid": s, "seen": <peer's sid or null>}``,
   again every ``resend_s`` until done. On a hello with a new peer sid it answers at once.
2. **Done** when a hello from the peer's latest sid has ``seen`` equal to its own sid: both
   know both ids. It sends one last hello (so the peer is done too) and returns.
3. **Session.** Envelopes are sealed under job id ``<job>/<sid of E-or-P, by name order>``
   with sequence numbers from 0 (:class:`SessionChannel`). Envelopes of the job's other
   sessions (left in a mailbox by a dead process) are dropped unread; a hello from a *new*
   peer sid means the peer restarted, and ends this session with :class:`PeerLost`.

Because the session id is inside the authenticated header, the coordinator cannot replay an
envelope of an earlier session into this one: it is dropped, never applied. What it can do
is drop or delay, which ends in a timeout and a resume.
"""

from __future__ import annotations

import json
import secrets
import time

from vfl.errors import ChannelTimeout, EnvelopeError, PeerLost
from vfl.transport.board import PartyState
from vfl.transport.channel import Channel
from vfl.transport.envelope import EnvelopeHeader
from vfl.transport.sealing import SealedChannel

HELLO = "hello"


class SessionChannel(SealedChannel):
    """A :class:`SealedChannel` bound to one session of job ``base_job``.

    ``job_id`` is ``<base_job>/<session>``; ``peer_sid`` is the peer's hello id.
    """

    def __init__(
        self,
        inner: Channel,
        *,
        private_key: bytes,
        peer_public_key: bytes,
        base_job: str,
        session: str,
        peer_sid: str,
        me: str,
    ) -> None:
        super().__init__(
            inner,
            private_key=private_key,
            peer_public_key=peer_public_key,
            job_id=f"{base_job}/{session}",
            me=me,
        )
        self.base_job, self.peer_sid = base_job, peer_sid
        self.dropped = 0  # envelopes of older sessions dropped unread

    def foreign(self, header: EnvelopeHeader, chunk: bytes) -> bool:
        """Drop envelopes of this job's other sessions; a new peer hello ends this one.

        Raises:
            PeerLost: the peer started a new session (it was restarted).
        """
        if not header.job.startswith(f"{self.base_job}/"):
            return False
        if header.job == f"{self.base_job}/{HELLO}":
            sid, _ = _parse_hello(chunk, self.peer)
            if sid != self.peer_sid:
                raise PeerLost(
                    f"{self.me}: party '{self.peer}' was restarted and opened a new session; "
                    "this one ends"
                )
        self.dropped += 1
        return True


def open_session(
    inner: Channel,
    *,
    private_key: bytes,
    peer_public_key: bytes,
    job_id: str,
    me: str,
    timeout: float,
    resend_s: float = 0.5,
) -> SessionChannel:
    """Steps 1-3 of the module docstring: agree a fresh session with the peer.

    Raises:
        ChannelTimeout: no complete hello exchange within ``timeout`` (names the peer).
        PeerLost: the peer reported that it finished or failed the job meanwhile.
        TamperError: an envelope was not sealed by the pinned peer key.
    """
    hello = SealedChannel(
        inner,
        private_key=private_key,
        peer_public_key=peer_public_key,
        job_id=f"{job_id}/{HELLO}",
        me=me,
    )
    mine = secrets.token_hex(8)
    theirs = _exchange(hello, inner, mine, timeout, resend_s)
    ids = sorted([(me, mine), (inner.peer, theirs)])
    return SessionChannel(
        inner,
        private_key=private_key,
        peer_public_key=peer_public_key,
        base_job=job_id,
        session=".".join(sid for _, sid in ids),
        peer_sid=theirs,
        me=me,
    )


def _exchange(
    hello: SealedChannel, inner: Channel, mine: str, timeout: float, resend_s: float
) -> str:
    """The peer's session id, once both sides have seen each other's (steps 1 and 2)."""
    deadline = time.monotonic() + timeout
    peer_sid: str | None = None
    _send_hello(hello, mine, peer_sid)
    next_send = time.monotonic() + resend_s
    while (now := time.monotonic()) < deadline:
        if now >= next_send:
            _send_hello(hello, mine, peer_sid)
            next_send = now + resend_s
        raw = _poll(inner, min(resend_s, deadline - now))
        if raw is None:
            continue
        header, chunk = hello.open_envelope(raw)
        if header.job != hello.job_id:
            continue  # an envelope of an earlier session, left in the mailbox
        sid, seen = _parse_hello(chunk, inner.peer)
        fresh = sid != peer_sid
        peer_sid = sid
        if seen == mine:
            _send_hello(hello, mine, peer_sid)
            return sid
        if fresh:
            _send_hello(hello, mine, peer_sid)
    raise ChannelTimeout(
        f"{hello.me}: party '{inner.peer}' did not answer the session hello within "
        f"{timeout:g} s. Fix: start (or restart) '{inner.peer}' with its usual command; "
        "both resume from their checkpoints"
    )


def _poll(inner: Channel, wait: float) -> bytes | None:
    """One envelope within ``wait`` s, or None; a silent peer is waited for, not fatal.

    Raises:
        PeerLost: the peer reported that it finished or failed the job.
    """
    try:
        return inner.recv(max(wait, 0.01))
    except PeerLost:
        status = getattr(inner, "peer_status", lambda: None)()
        if status is not None and status.state is not PartyState.RUNNING:
            raise
        time.sleep(min(wait, 0.2))
        return None
    except ChannelTimeout:
        return None


def _send_hello(hello: SealedChannel, mine: str, seen: str | None) -> None:
    header = EnvelopeHeader(hello.job_id, hello.me, hello.peer, HELLO, -1, 0)
    payload = json.dumps({"sid": mine, "seen": seen}).encode()
    hello.inner.send(hello.seal(header, payload))


def _parse_hello(chunk: bytes, peer: str) -> tuple[str, str | None]:
    """``(sid, seen)`` of a hello.

    Raises:
        EnvelopeError: not the JSON :func:`_send_hello` writes (only the peer could send it).
    """
    try:
        fields = json.loads(chunk.decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EnvelopeError(f"session hello from '{peer}' is not JSON: {exc}") from exc
    sid, seen = fields.get("sid") if isinstance(fields, dict) else None, None
    if isinstance(fields, dict):
        seen = fields.get("seen")
    if not isinstance(sid, str) or not (seen is None or isinstance(seen, str)):
        raise EnvelopeError(f"session hello from '{peer}' lacks its session id")
    return sid, seen
