"""A fresh sealed session between E and P for every process start, with forward secrecy.

Why sessions: a killed party leaves envelopes behind in the coordinator's mailboxes (its
peer's unanswered requests, its own last replies), its restarted process numbers envelopes
from 0 again, and an earlier inference session's envelopes would fit a later one. So every
process start (training and every inference session alike) first agrees a *session* with
the peer and binds every later envelope to it. Why ephemeral keys: the pinned ``.box`` keys
are static, so a capture sealed with them is opened by whoever steals one later. Each
session's traffic is sealed under a key that exists only in the two processes' memory.

Construction (``a``/``A``: this side's ephemeral X25519 private/public key, ``B`` the peer's;
``K_pin`` the NaCl ``Box`` of this party's pinned private key and the peer's pinned public
key, the same key in both directions):

1. **Hello.** Each side draws a random session id ``s`` (64 bits) and an ephemeral X25519 key
   pair ``(a, A)``, and sends ``"H" || Box_K_pin(header, {"sid": s, "eph": A, "seen": <the
   peer's sid or null>})`` under job id ``<job>/hello``, again every ``resend_s`` until done.
   On a hello with a new peer sid it answers at once. A hello is accepted only if it opens
   under ``K_pin`` (so it comes from the pinned peer or from this party itself) *and* its
   sealed header says it goes from the peer to this party: a reflected hello (this party's
   own, bounced back by the relay) is refused with :class:`EnvelopeError`. A peer sid never
   changes its ``eph``.
2. **Done** when a hello from the peer's latest sid has ``seen`` equal to this side's sid:
   that hello is fresh (it names a sid drawn moments ago), so its ``B`` is the live peer's,
   authenticated by ``K_pin``. It sends one last hello (so the peer is done too) and returns.
3. **Keys.** ``x = X25519(a, B) = X25519(b, A)`` (an all-zero ``x``, from a low-order point,
   is refused); with the transcript ``T`` = canonical JSON of the job id and, in name order,
   each party's name, sid and ephemeral public key::

       K   = BLAKE2b-256(T, key=x, person="vfl-session-key")
       tag = BLAKE2b-128(T, key=x, person="vfl-session-tag")

   The ephemeral private key is dropped once ``x`` is computed; ``K`` lives only in the
   :class:`SessionChannel`.
4. **Session.** Every envelope is relayed as ``"S" || tag || SecretBox_K(header, chunk)``
   (XSalsa20-Poly1305, a fresh random 24-byte nonce each), its header under job id
   ``<job>/<sid of E-or-P, by name order>`` with sequence numbers from 0. Envelopes with
   another tag (an earlier session's, left in a mailbox) are dropped unread; one with this
   tag that fails authentication is a :class:`TamperError`; a hello from a *new* peer sid
   means the peer restarted, and ends this session with :class:`PeerLost`.

What this gives: the coordinator cannot replay an envelope of an earlier session (training
or inference) into this one: its tag and key differ, it is dropped, never applied. Forward
secrecy: a capture of the relayed bytes plus both pinned private keys stolen afterwards
yields ``A`` and ``B`` (from the hellos) but not ``a`` or ``b``, hence not ``x`` or ``K``:
no session payload opens. (Python cannot wipe memory: a copy of ``a`` may survive in the
process until its memory is reused; the process is the trust boundary.) The tag tells the
coordinator which envelopes belong together, which it sees from their timing anyway. What
it can still do is drop or delay, which ends in a timeout and a resume; someone who holds a
pinned private key *during* a hello can impersonate that party, as with any pinned key.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass

import nacl.bindings
import nacl.encoding
import nacl.exceptions
import nacl.hash
import nacl.public
import nacl.secret

from vfl.errors import ChannelTimeout, EnvelopeError, PeerLost, TamperError
from vfl.transport.board import PartyState
from vfl.transport.channel import Channel
from vfl.transport.envelope import EnvelopeHeader, unpack
from vfl.transport.sealing import KEY_BYTES, SealedChannel

HELLO = "hello"
HELLO_KIND = b"H"  # "H" || Box with the pinned keys
SESSION_KIND = b"S"  # "S" || tag || SecretBox with the session key
TAG_BYTES = 16


@dataclass(frozen=True)
class Hello:
    """One side's hello: session id, ephemeral X25519 public key, the peer sid it has seen."""

    sid: str
    eph: bytes
    seen: str | None = None

    def encode(self) -> bytes:
        """The hello's JSON payload."""
        return json.dumps({"sid": self.sid, "eph": self.eph.hex(), "seen": self.seen}).encode()


@dataclass(frozen=True)
class SessionKeys:
    """A session's SecretBox key ``K`` and public tag (step 3 of the module docstring)."""

    key: bytes
    tag: bytes


def derive_session_keys(
    private: nacl.public.PrivateKey, job_id: str, sides: dict[str, Hello], peer: str
) -> SessionKeys:
    """``K`` and ``tag`` (step 3) from this side's ephemeral ``private`` key and the hellos.

    ``sides`` maps both party names to their hellos (this side's own and ``peer``'s); both
    sides compute the same keys, since ``X25519(a, B) = X25519(b, A)`` and ``T`` is ordered
    by name.

    Raises:
        EnvelopeError: the peer's ephemeral key is a low-order point (``x`` would be zero).
    """
    try:
        shared = nacl.bindings.crypto_scalarmult(bytes(private), sides[peer].eph)
    except nacl.exceptions.CryptoError as exc:
        raise EnvelopeError(
            "the peer's ephemeral session key is a low-order point; refused"
        ) from exc
    transcript = json.dumps(
        {"job": job_id, "sides": [[n, h.sid, h.eph.hex()] for n, h in sorted(sides.items())]},
        separators=(",", ":"),
    ).encode()
    raw = nacl.encoding.RawEncoder
    key = nacl.hash.blake2b(transcript, 32, key=shared, person=b"vfl-session-key", encoder=raw)
    tag = nacl.hash.blake2b(
        transcript, TAG_BYTES, key=shared, person=b"vfl-session-tag", encoder=raw
    )
    return SessionKeys(key=key, tag=tag)


class SessionChannel(SealedChannel):
    """A :class:`SealedChannel` bound to one session of job ``base_job``, sealed with ``K``.

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
        keys: SessionKeys,
    ) -> None:
        super().__init__(
            inner,
            private_key=private_key,
            peer_public_key=peer_public_key,
            job_id=f"{base_job}/{session}",
            me=me,
        )
        if len(keys.key) != KEY_BYTES or len(keys.tag) != TAG_BYTES:
            raise ValueError("a session needs a 32-byte key and a 16-byte tag")
        self.base_job, self.peer_sid = base_job, peer_sid
        self.tag = keys.tag
        self._secret = nacl.secret.SecretBox(keys.key)
        self.dropped = 0  # envelopes of older sessions (and stale hellos) dropped unread

    def _wire(self, plain: bytes) -> bytes:
        """``"S" || tag || SecretBox_K(plain)`` with a fresh random nonce."""
        return SESSION_KIND + self.tag + bytes(self._secret.encrypt(plain))

    def open_envelope(self, sealed: bytes) -> tuple[EnvelopeHeader, bytes]:
        """Authenticate one envelope of this session under ``K`` and split it.

        Raises:
            TamperError: not of this session, or altered in transit.
            EnvelopeError: the authenticated header is malformed.
        """
        head = SESSION_KIND + self.tag
        try:
            if not sealed.startswith(head):
                raise nacl.exceptions.CryptoError("not this session's tag")
            plain = bytes(self._secret.decrypt(sealed[len(head) :]))
        except nacl.exceptions.CryptoError as exc:
            raise TamperError(
                f"{self.me}: an envelope relayed as coming from '{self.peer}' in this session "
                "failed authentication: it was altered in transit or not sealed with the "
                "session key; rejected"
            ) from exc
        return unpack(plain, peer=self.peer)

    def _next(self, timeout: float) -> tuple[EnvelopeHeader, bytes]:
        """The next envelope of this session that passes the checks; older ones are dropped.

        Raises:
            PeerLost: the peer started a new session (it was restarted).
            TamperError, EnvelopeError, ReplayError, ReorderError: see the module docstring.
        """
        while True:
            raw = self.inner.recv(timeout)
            kind = raw[:1]
            if kind == SESSION_KIND and raw[1 : 1 + TAG_BYTES] == self.tag:
                header, chunk = self.open_envelope(raw)
                self.accept(header)
                return header, chunk
            if kind == HELLO_KIND:
                self._stale_hello(raw[1:])
            elif kind != SESSION_KIND:
                raise _unknown_kind(self.me, self.peer)
            self.dropped += 1

    def _stale_hello(self, sealed: bytes) -> None:
        """A hello that arrives during the session: dropped, unless the peer restarted.

        Raises:
            PeerLost: a hello from a new peer sid.
            EnvelopeError: a reflected hello, or one that is not JSON.
            TamperError: not sealed with the pinned keys.
        """
        header, chunk = SealedChannel.open_envelope(self, sealed)
        if header.job != f"{self.base_job}/{HELLO}":
            return
        _check_direction(header, me=self.me, peer=self.peer)
        hello = _parse_hello(chunk, self.peer)
        if hello.sid != self.peer_sid:
            raise PeerLost(
                f"{self.me}: party '{self.peer}' was restarted and opened a new session; "
                "this one ends"
            )


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
    """Steps 1-3 of the module docstring: agree a fresh session and its keys with the peer.

    Raises:
        ChannelTimeout: no complete hello exchange within ``timeout`` (names the peer).
        PeerLost: the peer reported that it finished or failed the job meanwhile.
        TamperError: a hello was not sealed by the pinned peer key.
        EnvelopeError: a reflected or malformed hello, or a low-order ephemeral key.
    """
    hello = SealedChannel(
        inner,
        private_key=private_key,
        peer_public_key=peer_public_key,
        job_id=f"{job_id}/{HELLO}",
        me=me,
    )
    ephemeral = nacl.public.PrivateKey.generate()
    mine = Hello(secrets.token_hex(8), bytes(ephemeral.public_key))
    theirs = _exchange(hello, inner, mine, timeout, resend_s)
    keys = derive_session_keys(ephemeral, job_id, {me: mine, inner.peer: theirs}, inner.peer)
    del ephemeral  # step 3: only K survives the hello
    ids = sorted([(me, mine.sid), (inner.peer, theirs.sid)])
    return SessionChannel(
        inner,
        private_key=private_key,
        peer_public_key=peer_public_key,
        base_job=job_id,
        session=".".join(sid for _, sid in ids),
        peer_sid=theirs.sid,
        me=me,
        keys=keys,
    )


def _exchange(
    hello: SealedChannel, inner: Channel, mine: Hello, timeout: float, resend_s: float
) -> Hello:
    """The peer's hello, once both sides have seen each other's sid (steps 1 and 2)."""
    deadline = time.monotonic() + timeout
    peer: Hello | None = None
    _send_hello(hello, mine, hello.job_id)
    next_send = time.monotonic() + resend_s
    while (now := time.monotonic()) < deadline:
        if now >= next_send:
            _send_hello(hello, _seeing(mine, peer), hello.job_id)
            next_send = now + resend_s
        got = _next_hello(hello, inner, min(resend_s, deadline - now))
        if got is None:
            continue
        if peer is not None and got.sid == peer.sid and got.eph != peer.eph:
            raise EnvelopeError(
                f"{hello.me}: party '{inner.peer}' changed its ephemeral key within session "
                f"hello {got.sid}; refused"
            )
        fresh, peer = peer is None or got.sid != peer.sid, got
        if got.seen == mine.sid:
            _send_hello(hello, _seeing(mine, peer), hello.job_id)
            return got
        if fresh:
            _send_hello(hello, _seeing(mine, peer), hello.job_id)
    raise ChannelTimeout(
        f"{hello.me}: party '{inner.peer}' did not answer the session hello within "
        f"{timeout:g} s. Fix: start (or restart) '{inner.peer}' with its usual command; "
        "both resume from their checkpoints"
    )


def _seeing(mine: Hello, peer: Hello | None) -> Hello:
    return Hello(mine.sid, mine.eph, None if peer is None else peer.sid)


def _next_hello(hello: SealedChannel, inner: Channel, wait: float) -> Hello | None:
    """The next authentic hello from the peer within ``wait`` s, or None.

    Envelopes of an earlier session (left in the mailbox) are skipped unread.

    Raises:
        TamperError: a hello not sealed with the pinned keys, or altered.
        EnvelopeError: a reflected hello, an unknown envelope kind, or malformed JSON.
        PeerLost: the peer reported that it finished or failed the job.
    """
    raw = _poll(inner, wait)
    if raw is None or raw[:1] == SESSION_KIND:
        return None
    if raw[:1] != HELLO_KIND:
        raise _unknown_kind(hello.me, inner.peer)
    header, chunk = hello.open_envelope(raw[1:])
    if header.job != hello.job_id:
        return None  # an authentic envelope of another job
    _check_direction(header, me=hello.me, peer=inner.peer)
    return _parse_hello(chunk, inner.peer)


def _check_direction(header: EnvelopeHeader, *, me: str, peer: str) -> None:
    """A hello must go from ``peer`` to ``me``; the pinned Box key is the same both ways.

    Raises:
        EnvelopeError: this party's own hello reflected back, or a misrouted one.
    """
    if (header.sender, header.recipient) != (peer, me):
        raise EnvelopeError(
            f"{me}: session hello addressed from '{header.sender}' to '{header.recipient}' "
            f"arrived on the channel from '{peer}' (reflected or misrouted); refused"
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


def _send_hello(hello_channel: SealedChannel, hello: Hello, job: str) -> None:
    """``"H" || Box_K_pin(header, hello)`` to the peer (step 1)."""
    header = EnvelopeHeader(job, hello_channel.me, hello_channel.peer, HELLO, -1, 0)
    hello_channel.inner.send(HELLO_KIND + hello_channel.seal(header, hello.encode()))


def _unknown_kind(me: str, peer: str) -> EnvelopeError:
    return EnvelopeError(
        f"{me}: an envelope relayed as coming from '{peer}' is neither a session hello nor a "
        "session envelope (altered in transit or another program); refused"
    )


def _parse_hello(chunk: bytes, peer: str) -> Hello:
    """The :class:`Hello` of a hello payload.

    Raises:
        EnvelopeError: not the JSON :meth:`Hello.encode` writes (only the peer could send it).
    """
    try:
        fields = json.loads(chunk.decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EnvelopeError(f"session hello from '{peer}' is not JSON: {exc}") from exc
    if not isinstance(fields, dict):
        fields = {}
    sid, seen, eph = fields.get("sid"), fields.get("seen"), fields.get("eph")
    try:
        key = bytes.fromhex(eph) if isinstance(eph, str) else b""
    except ValueError:
        key = b""
    if not isinstance(sid, str) or not (seen is None or isinstance(seen, str)):
        raise EnvelopeError(f"session hello from '{peer}' lacks its session id")
    if len(key) != KEY_BYTES:
        raise EnvelopeError(f"session hello from '{peer}' lacks a 32-byte ephemeral key")
    return Hello(sid, key, seen)
