"""Sealing key files per organisation: own X25519 pair, the partner's pinned public half.

Same files the sealed channel reads (:func:`vfl.transport.sealing.read_key`): ``<name>.box``
holds the raw 32-byte private key (mode 0600) and ``<name>.box.pub`` the raw 32-byte public
key. The **fingerprint** of a public key is ``SHA-256(public key bytes)`` in hex, printed in
groups of four for reading out over a second channel (phone, signed e-mail); pinning a
partner's key (:func:`pin_peer_key`) compares all 64 hex digits, separators ignored.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import nacl.public

from vfl.errors import VflError
from vfl.storage import atomic_write_bytes, ensure_dir
from vfl.transport.pki import private_dir

KEY_BYTES = 32
_SEPARATORS = re.compile(r"[\s:_-]")


@dataclass(frozen=True)
class BoxKeyPair:
    """Where :func:`write_box_key_pair` wrote the pair, and the public key's fingerprint."""

    private: Path
    public: Path
    fingerprint: str


def fingerprint(public_key: bytes) -> str:
    """``SHA-256(public_key)`` as 64 lower-case hex digits."""
    return hashlib.sha256(public_key).hexdigest()


def readable(hex_digest: str) -> str:
    """``hex_digest`` in groups of four, e.g. ``1a2b 3c4d ...``."""
    return " ".join(hex_digest[i : i + 4] for i in range(0, len(hex_digest), 4))


def write_box_key_pair(out_dir: Path, name: str) -> BoxKeyPair:
    """Write a fresh ``<name>.box`` (0600) and ``<name>.box.pub`` (0644) into ``out_dir``.

    Raises:
        VflError: either file exists already (replacing it would break the partner's pin).
        StorageError: the directory cannot be written.
    """
    out = private_dir(out_dir)
    private, public = out / f"{name}.box", out / f"{name}.box.pub"
    for path in (private, public):
        if path.exists():
            raise VflError(
                f"{path} already exists. Fix: keep it (the partner pinned its public half), or "
                "move it away first to rotate the key and send the partner the new one"
            )
    key = nacl.public.PrivateKey.generate()
    atomic_write_bytes(private, bytes(key), mode=0o600)
    atomic_write_bytes(public, bytes(key.public_key), mode=0o644)
    return BoxKeyPair(private, public, fingerprint(bytes(key.public_key)))


def read_public_key(path: Path) -> bytes:
    """The raw 32-byte public key in ``path``.

    Raises:
        VflError: unreadable or not 32 bytes, naming the file and the fix.
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise VflError(
            f"cannot read {path} ({exc.strerror}). Fix: pass the partner's .box.pub file"
        ) from exc
    if len(data) != KEY_BYTES:
        raise VflError(
            f"{path} holds {len(data)} bytes, not a 32-byte X25519 public key. Fix: pass the "
            "partner's .box.pub file (never its .box private key)"
        )
    return data


def pin_peer_key(source: Path, *, name: str, expected: str, out_dir: Path) -> Path:
    """Copy the partner's public key to ``out_dir/<name>.box.pub`` if its fingerprint matches.

    ``expected`` is the fingerprint the partner read out (separators and case ignored).

    Raises:
        VflError: the file is not a public key, or the fingerprints differ (nothing written).
        StorageError: the directory cannot be written.
    """
    key = read_public_key(source)
    wanted = _SEPARATORS.sub("", expected).lower()
    actual = fingerprint(key)
    if wanted != actual:
        raise VflError(
            f"{source}: fingerprint {readable(actual)} is not the {readable(wanted) or 'empty'} "
            f"that '{name}' read out; nothing pinned. Fix: ask '{name}' to read the fingerprint "
            "'vfl keys' printed again, and get the key file from them over a channel you trust"
        )
    target = ensure_dir(out_dir) / f"{name}.box.pub"
    return atomic_write_bytes(target, key, mode=0o644)
