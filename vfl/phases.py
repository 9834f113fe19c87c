"""The phases of a party's run: one vocabulary for checkpoints, envelopes, heartbeats and logs.

A training job runs ``handshake → psi → alignment → train → eval → export``; an inference
session ``handshake → inference``. The coordinator records ``joined`` for a party that has
joined but not yet reported a phase. The same name is written into every sealed envelope
header (:mod:`vfl.transport.envelope`, checked on receipt), published with heartbeats
(:mod:`vfl.party.publishing`), printed in the ``phase`` log lines and, for the phases that
keep state, used in checkpoint file names (:mod:`vfl.checkpoint`).
"""

from __future__ import annotations

from enum import StrEnum


class Phase(StrEnum):
    """A phase of a party's run (a ``str``, so it crosses the wire and logs as its name)."""

    JOINED = "joined"
    HANDSHAKE = "handshake"
    PSI = "psi"
    ALIGNMENT = "alignment"
    TRAIN = "train"
    EVAL = "eval"
    EXPORT = "export"
    INFERENCE = "inference"

    @property
    def order(self) -> int:
        """Position among the checkpointed phases (PSI is 0), in the order a job runs them.

        Raises:
            ValueError: for a phase that keeps no checkpoint (joined, handshake, inference).
        """
        if self not in CHECKPOINTED:
            raise ValueError(f"phase '{self}' keeps no checkpoint")
        return CHECKPOINTED.index(self)


CHECKPOINTED = (Phase.PSI, Phase.ALIGNMENT, Phase.TRAIN, Phase.EVAL, Phase.EXPORT)
