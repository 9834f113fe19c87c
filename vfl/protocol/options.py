"""Choices of the interactive-layer protocol that both parties' configs name (SPEC §4)."""

from __future__ import annotations

from enum import Enum

from vfl.crypto.randomness import Randomness

__all__ = ["Mode", "Randomness", "check_rerandomise_source"]


class Mode(Enum):
    """How the interactive layer's payloads travel.

    ``ENCRYPTED`` is the protocol of SPEC §4 and the default. ``PLAINTEXT`` keeps the same
    messages but sends plain integers and draws no masks: it is for development and for
    measuring the cost of privacy, and both parties must enable it in their own configs.
    """

    ENCRYPTED = "encrypted"
    PLAINTEXT = "plaintext"


def check_rerandomise_source(mode: Randomness) -> Randomness:
    """The obfuscators that re-randomise ciphertexts under the *other* party's key.

    ``FULL`` (default) hides the operands perfectly, even from the key's owner;
    ``SHORT_EXPONENT`` is faster and hides them only computationally from the owner (see
    :mod:`vfl.crypto.randomness`). ``OWNER_CRT`` needs the other party's private key.

    Raises:
        ValueError: for ``OWNER_CRT``.
    """
    if mode is Randomness.OWNER_CRT:
        raise ValueError(
            "randomness = 'owner_crt' needs the key owner's primes; re-randomising under the "
            "other party's key must use 'full' (default) or 'short_exponent'"
        )
    return mode
