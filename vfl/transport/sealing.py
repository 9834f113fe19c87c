"""End-to-end sealing between E and P, so the coordinator relays opaque bytes (SPEC §3).

Each party has an X25519 key pair for sealing; the other party's public half is pinned in its
config. Every message is sealed with NaCl ``Box`` (X25519 key agreement, XSalsa20-Poly1305,
a fresh random 24-byte nonce per message) before it enters the transport, and opened -- which
authenticates it as coming from the pinned peer -- after it leaves. The coordinator sees only
ciphertext lengths and timing.

Replays are caught one layer up: the protocol's sequence numbers and PSI's chunk indices are
inside the sealed payload.
"""

from __future__ import annotations

import os
from pathlib import Path

import nacl.exceptions
import nacl.public

from vfl.errors import ProtocolError, VflError
from vfl.transport.channel import Channel

KEY_BYTES = 32


class SealedChannel:
    """A :class:`~vfl.transport.channel.Channel` whose payloads are sealed to one pinned peer."""

    def __init__(self, inner: Channel, *, private_key: bytes, peer_public_key: bytes) -> None:
        """Wrap ``inner``; keys are raw 32-byte X25519 keys (ValueError otherwise)."""
        if len(private_key) != KEY_BYTES or len(peer_public_key) != KEY_BYTES:
            raise ValueError("sealing keys must be 32-byte X25519 keys")
        self.inner = inner
        self.peer = inner.peer
        self._box = nacl.public.Box(
            nacl.public.PrivateKey(private_key), nacl.public.PublicKey(peer_public_key)
        )

    def send(self, data: bytes) -> None:
        """Seal ``data`` with a fresh nonce and send it."""
        self.inner.send(bytes(self._box.encrypt(data)))

    def recv(self, timeout: float) -> bytes:
        """Receive and open the next message.

        Raises:
            ProtocolError: the message was not sealed by the pinned peer key, or was altered.
        """
        sealed = self.inner.recv(timeout)
        try:
            return bytes(self._box.decrypt(sealed))
        except nacl.exceptions.CryptoError as exc:
            raise ProtocolError(
                f"a message relayed as coming from '{self.peer}' failed authentication: it "
                "was not sealed with the pinned key or was altered in transit"
            ) from exc

    def close(self) -> None:
        """Close the wrapped channel if it can be closed."""
        close = getattr(self.inner, "close", None)
        if callable(close):
            close()


def write_box_keys(out_dir: Path, name: str) -> tuple[Path, Path]:
    """Write ``<name>.box`` (private, mode 0600) and ``<name>.box.pub`` (raw 32 bytes each)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    key = nacl.public.PrivateKey.generate()
    private, public = out_dir / f"{name}.box", out_dir / f"{name}.box.pub"
    fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(bytes(key))
    public.write_bytes(bytes(key.public_key))
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
            "file written by 'vfl certs-dev'"
        ) from exc
    if len(data) != KEY_BYTES:
        raise VflError(
            f"{what} {path} holds {len(data)} bytes, not a 32-byte X25519 key. "
            "Fix: regenerate it with 'vfl certs-dev'"
        )
    return data
