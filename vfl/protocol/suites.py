"""Cipher suites of the interactive layer: a scheme's name -> the factory of its keys and ciphers.

The secure layer (:mod:`vfl.protocol.secure_layer`) never names a scheme in its code: it asks
:func:`cipher_suite` for the suite its :class:`~vfl.protocol.agreement.LayerSettings` name
(``train.cipher`` of the job plan), and the suite

1. generates a key pair of ``key_bits`` bits (:meth:`CipherSuite.generate_keys`);
2. reads the other party's public key from its wire bytes (:meth:`CipherSuite.public_key`);
3. builds the :class:`~vfl.protocol.ciphers.LayerCipher` under a public key, with the private
   key for its owner (:meth:`CipherSuite.cipher`, from :class:`CipherParts`).

The scheme's name is one of the agreed parameters and travels in the setup messages, so two
parties running different schemes stop at setup, naming the field and both values.

``"paillier"`` (phe + gmpy2, packed slots: :class:`~vfl.protocol.ciphers.PaillierCipher`) is
the one scheme today. The plaintext mode of the protocol is not a suite: it sends the same
messages without any key (:class:`~vfl.protocol.ciphers.PlainCipher`), whatever the name.

A second scheme is one class with these three methods and one entry in :data:`SUITES`; its
key types stand in for Paillier's (an additively homomorphic scheme with scalar products of
ciphertexts by integers, which is all the layer uses).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Protocol

from vfl.crypto.paillier import KeyPair, PrivateKey, PublicKey
from vfl.crypto.pool import RPowNSource
from vfl.errors import UnknownCipherSuite
from vfl.protocol.ciphers import LayerCipher, PaillierCipher
from vfl.protocol.fixed_point import SecureScales
from vfl.protocol.kernels import Kernels

__all__ = [
    "DEFAULT_CIPHER",
    "SUITES",
    "CipherParts",
    "CipherSuite",
    "PaillierSuite",
    "UnknownCipherSuite",
    "cipher_suite",
    "known_suites",
]

DEFAULT_CIPHER = "paillier"


@dataclass(frozen=True)
class CipherParts:
    """What a cipher under one key is built from: the key (the private half only for its
    owner), the layer's scales, the batched kernels and the source of fresh randomness
    (``None``: drawn inline)."""

    public_key: PublicKey
    scales: SecureScales
    kernels: Kernels
    private_key: PrivateKey | None = None
    randomness: RPowNSource | None = None


class CipherSuite(Protocol):
    """Keys and ciphers of one additively homomorphic scheme (see the module docstring)."""

    name: str

    def generate_keys(self, key_bits: int) -> KeyPair: ...

    def public_key(self, data: bytes) -> PublicKey: ...

    def cipher(self, parts: CipherParts) -> LayerCipher: ...


class PaillierSuite:
    """Paillier (phe + gmpy2) with signed slot packing: the scheme of SPEC §4."""

    name = "paillier"

    def generate_keys(self, key_bits: int) -> KeyPair:
        """A fresh key pair with a ``key_bits``-bit modulus.

        Raises:
            ValueError: ``key_bits`` is odd or below 256.
        """
        return KeyPair.generate(key_bits)

    def public_key(self, data: bytes) -> PublicKey:
        """The public key of :meth:`PublicKey.to_bytes` output.

        Raises:
            ValueError: malformed bytes.
        """
        return PublicKey.from_bytes(data)

    def cipher(self, parts: CipherParts) -> LayerCipher:
        """Packed Paillier under ``parts.public_key`` (decrypting only with its private key)."""
        return PaillierCipher(
            parts.public_key,
            parts.scales,
            private_key=parts.private_key,
            randomness=parts.randomness,
            kernels=parts.kernels,
        )


SUITES: Mapping[str, Callable[[], CipherSuite]] = MappingProxyType({DEFAULT_CIPHER: PaillierSuite})


def cipher_suite(name: str) -> CipherSuite:
    """The suite registered as ``name``.

    Raises:
        UnknownCipherSuite: no suite has that name (the message names the known schemes).
    """
    factory = SUITES.get(name)
    if factory is None:
        raise UnknownCipherSuite(f"unknown cipher suite {name!r}; known: {known_suites()}")
    return factory()


def known_suites() -> str:
    """The registered scheme names, for error messages (``'paillier'``)."""
    return ", ".join(repr(k) for k in sorted(SUITES))
