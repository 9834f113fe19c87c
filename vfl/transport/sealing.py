"""End-to-end sealing between E and P, so the coordinator relays opaque bytes (SPEC §3).

Each party has an X25519 key pair for sealing; the other party's public half is pinned in its
config. Every message is split into chunks of at most ``chunk_bytes``; each chunk is prefixed
with an :class:`~vfl.transport.envelope.EnvelopeHeader` (job id, sender, recipient, phase, step,
per-direction sequence number, chunk index) and sealed with NaCl ``Box`` (X25519 key agreement,
XSalsa20-Poly1305, a fresh random 24-byte nonce per envelope) before it enters the transport.
The receiver opens each envelope -- which authenticates it as coming from the pinned peer --
and checks the header before the payload is used:

* an altered envelope (one flipped bit) fails authentication: :class:`TamperError`;
* a replayed or duplicated envelope: :class:`ReplayError`; a reordered or dropped one:
  :class:`ReorderError`; one for another job, phase or direction (the two directions share
  one Box key, so the header's sender/recipient is what stops a reflection): EnvelopeError.

The coordinator sees only envelope lengths and timing. Large payloads cross as a stream of
bounded envelopes, so no relay frame or gRPC message exceeds ``chunk_bytes`` plus overhead.

The pinned keys are static, so a channel sealed with them alone has no forward secrecy: whoever
later steals a ``.box`` private key opens a recorded capture. The parties therefore use this
class directly only for the session hello, and seal everything else under per-session
ephemeral keys (:class:`vfl.transport.session.SessionChannel`, which overrides :meth:`_wire`
and :meth:`open_envelope`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import nacl.exceptions
import nacl.public

from vfl.errors import EnvelopeError, TamperError, VflError
from vfl.phases import Phase
from vfl.storage import atomic_write_bytes
from vfl.transport.channel import Channel
from vfl.transport.envelope import EnvelopeHeader, SequenceCheck, pack, unpack

KEY_BYTES = 32
DEFAULT_CHUNK_BYTES = 1024 * 1024
MAX_MESSAGE_BYTES = 1024 * 1024 * 1024


class SealedChannel:
    """A :class:`~vfl.transport.channel.Channel` whose payloads are sealed to one pinned peer.

    ``phase`` and ``step`` are set by the party as it moves through the pipeline; they are
    written into every envelope sent and the phase is checked on every envelope received.
    """

    def __init__(
        self,
        inner: Channel,
        *,
        private_key: bytes,
        peer_public_key: bytes,
        job_id: str = "",
        me: str | None = None,
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
        next_out: int = 0,
        next_in: int = 0,
    ) -> None:
        """Wrap ``inner``; keys are raw 32-byte X25519 keys (ValueError otherwise)."""
        if len(private_key) != KEY_BYTES or len(peer_public_key) != KEY_BYTES:
            raise ValueError("sealing keys must be 32-byte X25519 keys")
        if chunk_bytes < 1:
            raise ValueError(f"chunk_bytes must be >= 1, got {chunk_bytes}")
        self.inner = inner
        self.peer = inner.peer
        self.me = me if me is not None else str(getattr(inner, "name", "?"))
        self.job_id = job_id
        self.phase, self.step = Phase.JOINED, -1
        self.chunk_bytes = chunk_bytes
        self.next_out = next_out
        self.last_header: EnvelopeHeader | None = None  # of the last envelope accepted
        self.on_receive: Callable[[bytes], None] | None = None  # sees each payload (audits)
        self._check = SequenceCheck(job=job_id, me=self.me, peer=self.peer, next_seq=next_in)
        self._box = nacl.public.Box(
            nacl.public.PrivateKey(private_key), nacl.public.PublicKey(peer_public_key)
        )

    @property
    def next_in(self) -> int:
        """Sequence number of the next envelope expected from the peer."""
        return self._check.next_seq

    def send(self, data: bytes) -> None:
        """Seal ``data`` (as one or more envelopes, each with a fresh nonce) and send it."""
        if not isinstance(data, bytes):
            raise TypeError("channels carry bytes only")
        size = self.chunk_bytes
        parts = max(1, -(-len(data) // size))
        for part in range(parts):
            header = EnvelopeHeader(
                self.job_id, self.me, self.peer, self.phase, self.step, self.next_out, part, parts
            )
            chunk = data[part * size : (part + 1) * size]
            self.inner.send(self._wire(pack(header, chunk)))
            self.next_out += 1

    def recv(self, timeout: float) -> bytes:
        """Receive, open and check the envelopes of the next message; return its payload.

        Raises:
            TamperError: an envelope was not sealed by the pinned peer key, or was altered.
            ReplayError, ReorderError, EnvelopeError: see the module docstring.
            ChannelTimeout: from the wrapped channel.
        """
        header, chunk = self._next(timeout)
        if header.parts * self.chunk_bytes > MAX_MESSAGE_BYTES + self.chunk_bytes:
            raise EnvelopeError(f"message from '{self.peer}' announces {header.parts} parts")
        pieces = [chunk]
        for part in range(1, header.parts):
            nxt, chunk = self._next(timeout)
            if (nxt.part, nxt.parts) != (part, header.parts):
                raise EnvelopeError(
                    f"{self.me}: part {nxt.part}/{nxt.parts} from '{self.peer}' where part "
                    f"{part}/{header.parts} was due"
                )
            pieces.append(chunk)
        payload = b"".join(pieces)
        if self.on_receive is not None:
            self.on_receive(payload)
        return payload

    def seal(self, header: EnvelopeHeader, chunk: bytes) -> bytes:
        """One sealed envelope (fresh nonce) of ``header`` and ``chunk``; no sequence kept."""
        return self._wire(pack(header, chunk))

    def _wire(self, plain: bytes) -> bytes:
        """The bytes relayed for one envelope's plaintext: ``Box`` with the pinned keys."""
        return bytes(self._box.encrypt(plain))

    def open_envelope(self, sealed: bytes) -> tuple[EnvelopeHeader, bytes]:
        """Authenticate and split one envelope, without the order check.

        Raises:
            TamperError: not sealed by the pinned peer key, or altered.
            EnvelopeError: the authenticated header is malformed.
        """
        try:
            plain = bytes(self._box.decrypt(sealed))
        except nacl.exceptions.CryptoError as exc:
            raise TamperError(
                f"{self.me}: a message relayed as coming from '{self.peer}' failed "
                "authentication: it was not sealed with the pinned key or was altered in "
                "transit; rejected"
            ) from exc
        return unpack(plain, peer=self.peer)

    def _next(self, timeout: float) -> tuple[EnvelopeHeader, bytes]:
        """The next envelope, opened and checked (:meth:`accept`)."""
        header, chunk = self.open_envelope(self.inner.recv(timeout))
        self.accept(header)
        return header, chunk

    def accept(self, header: EnvelopeHeader) -> None:
        """Check an opened envelope's job, direction, phase and sequence number; keep it.

        Raises:
            ReplayError, ReorderError, EnvelopeError: see the module docstring.
        """
        self._check.accept(header, phase=self.phase)
        self.last_header = header

    def close(self) -> None:
        """Close the wrapped channel if it can be closed."""
        close = getattr(self.inner, "close", None)
        if callable(close):
            close()


def write_box_keys(out_dir: Path, name: str) -> tuple[Path, Path]:
    """Write ``<name>.box`` (private, mode 0600) and ``<name>.box.pub`` (raw 32 bytes each).

    The private key is written atomically as a new file of mode exactly 0600 in a 0700
    directory, whatever the umask: rewriting it over an older, wider file narrows it.

    Raises:
        StorageError: the directory cannot be created or written.
    """
    key = nacl.public.PrivateKey.generate()
    private, public = out_dir / f"{name}.box", out_dir / f"{name}.box.pub"
    atomic_write_bytes(private, bytes(key), private=True)
    atomic_write_bytes(public, bytes(key.public_key))
    return private, public


def read_key(path: Path, what: str) -> bytes:
    """Read a raw 32-byte sealing key file.

    Raises:
        VflError: the file is unreadable or not 32 bytes, naming the file and the fix.
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise VflError(
            f"cannot read {what} {path} ({exc}). Fix: point the config at the "
            "file written by 'vfl certs'"
        ) from exc
    if len(data) != KEY_BYTES:
        raise VflError(
            f"{what} {path} holds {len(data)} bytes, not a 32-byte X25519 key. "
            "Fix: regenerate it with 'vfl certs'"
        )
    return data
