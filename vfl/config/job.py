"""Job config: which two party configs train together, the model shape and the training knobs.

Every section except ``[parties]`` has defaults, so a file holding only ``[parties]`` is valid::

    [job]
    name = "synthetic-pilot"
    seed = 7

    [parties]
    active = "e_party.toml"    # relative to this file; must exist
    passive = "p_party.toml"

    [model]
    embedding_dim = 16
    passive_out = 16

    [train]
    epochs = 20

    [eval]
    k = 10

    [psi]
    curve = "x25519"           # or "ed25519"; both parties must use the same
    chunk_size = 4096

    [privacy]
    embedding_noise = 0.0      # P's noise on its embedding before E decrypts z_B (0 = off)
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    field_validator,
)

from vfl.config.party import PartyConfig, Role, load_party_config
from vfl.config.toml_io import ConfigPath, load_toml_model, rule_error
from vfl.errors import ConfigError, UnknownCipherSuite
from vfl.protocol.options import Mode, Randomness, check_rerandomise_source
from vfl.protocol.suites import DEFAULT_CIPHER, cipher_suite, known_suites

_FROZEN = ConfigDict(extra="forbid", frozen=True)


class JobSection(BaseModel):
    """``[job]``: a name for reports and the seed for every random choice."""

    model_config = _FROZEN

    name: str = "vfl-job"
    seed: NonNegativeInt = 0


class PartiesSection(BaseModel):
    """``[parties]``: the two party config files, resolved to absolute paths."""

    model_config = _FROZEN

    active: ConfigPath
    passive: ConfigPath


class ModelConfig(BaseModel):
    """``[model]``: tower widths of the split model."""

    model_config = _FROZEN

    embedding_dim: PositiveInt = 16  # E user/item tower width
    user_id_embedding: bool = True  # E learns an embedding per user id
    passive_hidden: tuple[PositiveInt, ...] = (32,)  # P bottom MLP hidden sizes
    passive_out: PositiveInt = 16  # d, width of P's bottom output b
    active_hidden: tuple[PositiveInt, ...] = (64,)  # E bottom MLP hidden sizes
    interactive_out: PositiveInt = 16  # h, width of z (16 slots = one ciphertext per row)
    top_hidden: tuple[PositiveInt, ...] = (32,)
    # E's sequence-aware user representation: attention over the user's last N training
    # positives by time (vfl/models/sequence.py); 0 switches it off. E-local: d, h unchanged.
    history_length: NonNegativeInt = 20


class TrainConfig(BaseModel):
    """``[train]``: optimisation settings."""

    model_config = _FROZEN

    epochs: PositiveInt = 20  # the most epochs; early stopping usually ends sooner
    # Early stopping: end once this many epochs passed without a better validation NDCG@k
    # (None: train all epochs). E-only, like epochs and the time budget.
    patience: PositiveInt | None = 3
    time_budget_s: PositiveFloat | None = None  # stop after the epoch that reaches it
    users_per_step: PositiveInt = 32
    learning_rate: PositiveFloat = 0.003
    # Adam learning rate of each passive party's bottom model (None: learning_rate). Its
    # gradient ∂L/∂b carries the label noise, so a partner whose features add little on a
    # dataset drifts less at a lower rate (issue 15: MovieLens selects 0.0003 by validation).
    passive_learning_rate: PositiveFloat | None = None
    weight_decay: NonNegativeFloat = 1e-5
    negatives_per_positive: PositiveInt = 4
    # SGD learning rate of the secret-shared W_B (encrypted mode): a share update must stay
    # linear in its gradient, so W_B cannot use Adam there.
    wb_learning_rate: PositiveFloat = 1.0
    wb_momentum: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.0  # momentum kept as shares too
    wb_weight_decay: NonNegativeFloat = 0.0
    key_bits: Annotated[int, Field(ge=256, multiple_of=2)] = 2048  # Paillier modulus, even
    # The interactive layer's cipher suite, by name (vfl/protocol/suites.py): "paillier"
    # (phe + gmpy2) is the one scheme today. Agreed at the handshake and again at setup.
    cipher: str = DEFAULT_CIPHER
    # "plaintext" (same messages, no encryption, no masks) is for development and for
    # measuring the cost of privacy; both party configs must set [party] allow_plaintext.
    protocol: Mode = Mode.ENCRYPTED
    # r^n of re-randomisations under the other party's key: "full" (perfect hiding, even from
    # the key's owner) or "short_exponent" (about 6x faster, within 2^-128 of uniform even for
    # the owner, see vfl/crypto/randomness; each party's own [party] allow_short_exponent).
    # Own fresh encryptions always use the owner's CRT shortcut ("owner_crt", same as full).
    randomness: Randomness = Randomness.FULL
    precompute_randomness: bool = True  # r^n computed ahead by background processes
    crypto_workers: NonNegativeInt = 0  # processes per party for batched Paillier work

    @property
    def passive_lr(self) -> float:
        """The passive bottom models' Adam learning rate (``learning_rate`` unless set)."""
        return (
            self.learning_rate if self.passive_learning_rate is None else self.passive_learning_rate
        )

    @field_validator("cipher")
    @classmethod
    def _known_cipher(cls, value: str) -> str:
        """A scheme of :data:`~vfl.protocol.suites.SUITES`."""
        try:
            cipher_suite(value)
        except UnknownCipherSuite as exc:
            raise rule_error(
                f"unknown cipher suite {value!r} (known: {known_suites()})",
                f'use cipher = "{DEFAULT_CIPHER}" (the default), or one of the known suites',
            ) from exc
        return value

    @field_validator("randomness")
    @classmethod
    def _rerandomise_source(cls, value: Randomness) -> Randomness:
        """``owner_crt`` cannot re-randomise under the other party's key."""
        try:
            return check_rerandomise_source(value)
        except ValueError as exc:
            raise rule_error(str(exc), 'use randomness = "full" or "short_exponent"') from exc


class EvalConfig(BaseModel):
    """``[eval]``: ranking evaluation (HR@k / NDCG@k against sampled negatives)."""

    model_config = _FROZEN

    k: PositiveInt = 10
    test_negatives: PositiveInt = 99
    # Cold-start users: test users with at most this quantile of training positives.
    cold_start_quantile: float = Field(default=0.2, gt=0.0, le=1.0)


class PrivacyConfig(BaseModel):
    """``[privacy]``: the defences both parties run with (part of the plan, so P knows them).

    Label protection (:mod:`vfl.training.defences`): before E forms P's embedding gradient
    ``∂L/∂b = δ·W_Bᵀ``, it clips each user's mean row gradient ``m·δ_u`` to L2 norm
    ``label_clip`` and adds Gaussian noise of standard deviation ``label_noise · label_clip``
    per coordinate. ``label_noise = 0`` switches it off. The weight gradient of ``W_B``
    (which P never sees in the clear) keeps the exact ``δ``.

    Embedding protection: ``embedding_noise`` is the multiplier ``s`` of the noise P adds to
    its embedding ``b`` (``|b_i| < 1``) before ``[[z_B]]_E`` is formed, in training and
    evaluation alike (:mod:`vfl.protocol.embedding_noise`); 0 turns it off (the library
    default; the pilot writes its own). It protects P's attributes from what E decrypts and
    costs accuracy: ``benchmarks/privacy_zb.py`` measures the trade-off.
    """

    model_config = _FROZEN

    label_noise: NonNegativeFloat = 2.0  # noise multiplier (std / clipping bound); 0 = off
    label_clip: PositiveFloat = 0.05  # L2 bound of a user's mean row gradient m·δ_u
    embedding_noise: NonNegativeFloat = 0.0  # P's noise on b before E decrypts z_B; 0 = off


class PsiCurve(Enum):
    """The elliptic-curve group of the PSI (see :mod:`vfl.psi.curve`); part of the handshake."""

    X25519 = "x25519"  # Montgomery ladder on Curve25519 u-coordinates, Elligator 2 hashing
    ED25519 = "ed25519"  # prime-order subgroup of edwards25519, about 2x slower


class PsiConfig(BaseModel):
    """``[psi]``: the PSI group, chunking of the streamed sets and local worker processes."""

    model_config = _FROZEN

    curve: PsiCurve = PsiCurve.X25519
    chunk_size: PositiveInt = 4096  # points per streamed frame and per worker call
    workers: PositiveInt | None = None  # curve worker processes; None = every core


class JobConfig(BaseModel):
    """A whole job config file."""

    model_config = _FROZEN

    job: JobSection = JobSection()
    parties: PartiesSection
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    eval: EvalConfig = EvalConfig()
    psi: PsiConfig = PsiConfig()
    privacy: PrivacyConfig = PrivacyConfig()


def load_job_config(path: str | Path) -> JobConfig:
    """Read and validate a job config TOML file.

    Raises:
        ConfigError: unreadable/invalid TOML, unknown key, wrong type or range, missing
            ``[parties]`` key, or a party config file that does not exist.
    """
    return load_toml_model(JobConfig, path)


def load_job_parties(job: JobConfig, job_file: str | Path) -> tuple[PartyConfig, PartyConfig]:
    """Load the (active, passive) party configs named by ``job`` and check their roles.

    Raises:
        ConfigError: a party config is invalid, or its role does not match its slot.
    """
    active = load_party_config(job.parties.active)
    passive = load_party_config(job.parties.passive)
    for slot, cfg, role in (("active", active, Role.ACTIVE), ("passive", passive, Role.PASSIVE)):
        if cfg.role is not role:
            raise ConfigError(
                str(job_file),
                f"parties.{slot}",
                f"{getattr(job.parties, slot)} has party.role = '{cfg.role.value}'",
                f"point parties.{slot} at a config with role = '{role.value}'",
            )
    return active, passive
