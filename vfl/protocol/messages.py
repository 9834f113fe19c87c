"""Typed messages exchanged between E and P, one ``*Ins``/``*Res`` pair per round trip.

Plaintext split learning (E drives, P answers):

1. ``ForwardIns(users, train)``: E names the aligned users of a step (positions in the agreed
   order). P replies ``ForwardRes(embeddings)`` with its bottom output ``b`` for those users.
2. ``BackwardIns(grads)``: E sends ``dL/db`` aggregated per user; P back-propagates through its
   bottom model, steps its optimiser and replies ``BackwardRes``.
3. ``Shutdown`` ends P's serving loop.

The interactive layer (:mod:`vfl.protocol.secure_split`, SPEC §4) uses ``SetupIns``/``SetupRes``
once, then per step ``SecureForwardIns``/``SecureForwardRes`` and
``SecureBackwardIns``/``SecureBackwardRes``. Their byte fields hold packed Paillier
ciphertexts, or the integers themselves in plaintext mode (same messages, no encryption).

Every message carries the step number; the envelope adds a sequence number (see ``serde``).

Control messages, sent once per session before or after the protocol proper, travel through
the same serde, so the message recorder sees them like any other:

4. ``Hello``: each party's agreed parameters, their digest, its role and its schema digest
   (:mod:`vfl.party.handshake`).
5. ``ResumeAt``: the latest phase and step each party checkpointed, or none
   (:mod:`vfl.party.resume`).
6. ``ExportSummary`` (either way) and ``ExportConfirmation`` (E -> P): the shard digests of
   an export and the pair E confirms (:mod:`vfl.party.export`).
7. ``InferenceSummary``: the shard each party serves in an inference session and the partner
   it was exported with (:mod:`vfl.party.inference`); P refuses a shard with ``ErrorRes``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any

import numpy as np


class MessageType(Enum):
    """Wire tag of each message class."""

    FORWARD_INS = "forward_ins"
    FORWARD_RES = "forward_res"
    BACKWARD_INS = "backward_ins"
    BACKWARD_RES = "backward_res"
    SHUTDOWN = "shutdown"
    ERROR = "error"
    SETUP_INS = "setup_ins"
    SETUP_RES = "setup_res"
    SECURE_FORWARD_RES = "secure_forward_res"
    SECURE_BACKWARD_INS = "secure_backward_ins"
    SECURE_BACKWARD_RES = "secure_backward_res"
    SECURE_FORWARD_INS = "secure_forward_ins"
    HELLO = "hello"
    RESUME_AT = "resume_at"
    EXPORT_SUMMARY = "export_summary"
    EXPORT_CONFIRMATION = "export_confirmation"
    INFERENCE_SUMMARY = "inference_summary"


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


@dataclass(frozen=True)
class SetupIns:
    """E -> P: the cipher suite of E's key (``"none"`` in plaintext mode), E's public key
    (empty in plaintext mode), the agreed parameters and, for a fresh job, ``[[Qᵀ]]_E``
    (E's rotation of the initial ``W_B``)."""

    step: int
    cipher: str  # a name of vfl.protocol.suites.SUITES: how to read public_key
    public_key: bytes
    params: str  # JSON of the parameters both parties must agree on
    enc_init: bytes = b""  # empty when resuming or serving: the shares exist already


@dataclass(frozen=True)
class SetupRes:
    """P -> E: the cipher suite of P's key, P's public key, its view of the agreed parameters
    and E's masked initial share."""

    step: int
    cipher: str
    public_key: bytes
    params: str
    enc_init: bytes = b""  # [[W_B(0)ᵀ - Mᵀ]]_E, E's initial share, when E sent [[Qᵀ]]_E


@dataclass(frozen=True)
class SecureForwardIns:
    """E -> P: compute ``[[b·W_B]]_E`` for these users; a fresh ``[[U]]_E`` if ``U`` changed."""

    step: int
    users: np.ndarray  # (m,) int64 aligned positions -- the only per-step thing P learns
    train: bool
    enc_u: bytes  # empty: P keeps the [[U]]_E it has


@dataclass(frozen=True)
class SecureForwardRes:
    """P -> E: packed ``[[b·W_B]]_E`` per user and, when training, fresh packed ``[[Vᵀ]]_P``."""

    step: int
    enc_zb: bytes
    enc_v: bytes  # empty when the forward was not for training


@dataclass(frozen=True)
class SecureBackwardIns:
    """E -> P: ``[[η·δ]]_E`` per user and ``[[δ·W_Bᵀ]]_P`` per user."""

    step: int
    enc_g: bytes
    enc_db: bytes


@dataclass(frozen=True)
class SecureBackwardRes:
    """P -> E: ``[[η·bᵀδ - R]]_E``, E's masked share update."""

    step: int
    enc_ge: bytes


@dataclass(frozen=True)
class Hello:
    """Either way, once a session: what the sender agreed to (``agreed``: every field under
    its dotted name), its digest, the sender's role and the digest of its data schema."""

    party: str
    role: str
    fingerprint: str
    agreed: dict[str, Any]
    schema_sha256: str


@dataclass(frozen=True)
class ResumeAt:
    """Either way, after the handshake: the sender's latest checkpoint (``phase`` "" and
    ``step`` -1: none, a fresh start)."""

    phase: str
    step: int


@dataclass(frozen=True)
class ExportSummary:
    """Either way, at step 2 of an export: the job and plan fingerprint the sender exported
    for, its name and its shard digest."""

    job: str
    plan: str
    party: str
    shard: str


@dataclass(frozen=True)
class ExportConfirmation:
    """E -> P, step 4 of an export: both manifests name the pair (``exported``: E's shard
    digest, ``partner``: P's)."""

    exported: str
    partner: str


@dataclass(frozen=True)
class InferenceSummary:
    """Either way, step 1 of an inference session: the sender's shard (job, plan fingerprint,
    party, digest) and the digest of the partner shard it was exported with."""

    job: str
    plan: str
    party: str
    shard: str
    partner: str


Message = (
    ForwardIns
    | ForwardRes
    | BackwardIns
    | BackwardRes
    | Shutdown
    | ErrorRes
    | SetupIns
    | SetupRes
    | SecureForwardRes
    | SecureBackwardIns
    | SecureBackwardRes
    | SecureForwardIns
    | Hello
    | ResumeAt
    | ExportSummary
    | ExportConfirmation
    | InferenceSummary
)

MESSAGE_TYPES: dict[MessageType, type] = {
    MessageType.FORWARD_INS: ForwardIns,
    MessageType.FORWARD_RES: ForwardRes,
    MessageType.BACKWARD_INS: BackwardIns,
    MessageType.BACKWARD_RES: BackwardRes,
    MessageType.SHUTDOWN: Shutdown,
    MessageType.ERROR: ErrorRes,
    MessageType.SETUP_INS: SetupIns,
    MessageType.SETUP_RES: SetupRes,
    MessageType.SECURE_FORWARD_RES: SecureForwardRes,
    MessageType.SECURE_BACKWARD_INS: SecureBackwardIns,
    MessageType.SECURE_BACKWARD_RES: SecureBackwardRes,
    MessageType.SECURE_FORWARD_INS: SecureForwardIns,
    MessageType.HELLO: Hello,
    MessageType.RESUME_AT: ResumeAt,
    MessageType.EXPORT_SUMMARY: ExportSummary,
    MessageType.EXPORT_CONFIRMATION: ExportConfirmation,
    MessageType.INFERENCE_SUMMARY: InferenceSummary,
}
TYPE_OF: dict[type, MessageType] = {cls: tag for tag, cls in MESSAGE_TYPES.items()}
