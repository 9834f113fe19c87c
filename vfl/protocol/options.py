"""Choices of the interactive-layer protocol that both parties' configs name (SPEC §4)."""

from __future__ import annotations

from enum import Enum


class Mode(Enum):
    """How the interactive layer's payloads travel.

    ``ENCRYPTED`` is the protocol of SPEC §4 and the default. ``PLAINTEXT`` keeps the same
    messages but sends plain integers and draws no masks: it is for development and for
    measuring the cost of privacy, and both parties must enable it in their own configs.
    """

    ENCRYPTED = "encrypted"
    PLAINTEXT = "plaintext"


class Randomness(Enum):
    """Where the ``r^n mod n^2`` of every encryption and re-randomisation comes from.

    ``POOL``: precomputed by background worker processes (:class:`vfl.crypto.pool.RandomnessPool`)
    while the party waits for the other; ``FRESH``: computed on demand in the caller.
    """

    POOL = "pool"
    FRESH = "fresh"
