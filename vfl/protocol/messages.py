"""Typed messages exchanged between E and P, one ``*Ins``/``*Res`` pair per round trip.

Plaintext split learning (E drives, P answers):

1. ``ForwardIns(users, train)``: E names the aligned users of a step (positions in the agreed
   order). P replies ``ForwardRes(embeddings)`` with its bottom output ``b`` for those users.
2. ``BackwardIns(grads)``: E sends ``dL/db`` aggregated per user; P back-propagates through its
   bottom model, steps its optimiser and replies ``BackwardRes``.
3. ``Shutdown`` ends P's serving loop.

Every message carries the step number; the envelope adds a sequence number (see ``serde``).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import numpy as np


class MessageType(Enum):
    """Wire tag of each message class."""

    FORWARD_INS = "forward_ins"
    FORWARD_RES = "forward_res"
    BACKWARD_INS = "backward_ins"
    BACKWARD_RES = "backward_res"
    SHUTDOWN = "shutdown"
    ERROR = "error"


@dataclass(frozen=True)
class ForwardIns:
    """E -> P: compute ``b`` for these aligned users (keep the graph if ``train``)."""

    step: int
    users: np.ndarray  # (m,) int64
    train: bool


@dataclass(frozen=True)
class ForwardRes:
    """P -> E: ``b`` for the users of the matching ``ForwardIns``, row ``i`` = ``users[i]``."""

    step: int
    embeddings: np.ndarray  # (m, d) float32


@dataclass(frozen=True)
class BackwardIns:
    """E -> P: ``dL/db`` per user of the step's ``ForwardIns`` (rows summed per user)."""

    step: int
    grads: np.ndarray  # (m, d) float32


@dataclass(frozen=True)
class BackwardRes:
    """P -> E: the bottom model has been updated for ``step``."""

    step: int


@dataclass(frozen=True)
class Shutdown:
    """E -> P: the job is over; stop serving."""

    step: int


@dataclass(frozen=True)
class ErrorRes:
    """Either side: the previous request was rejected, with the reason."""

    step: int
    reason: str


Message = ForwardIns | ForwardRes | BackwardIns | BackwardRes | Shutdown | ErrorRes

MESSAGE_TYPES: dict[MessageType, type] = {
    MessageType.FORWARD_INS: ForwardIns,
    MessageType.FORWARD_RES: ForwardRes,
    MessageType.BACKWARD_INS: BackwardIns,
    MessageType.BACKWARD_RES: BackwardRes,
    MessageType.SHUTDOWN: Shutdown,
    MessageType.ERROR: ErrorRes,
}
TYPE_OF: dict[type, MessageType] = {cls: tag for tag, cls in MESSAGE_TYPES.items()}
