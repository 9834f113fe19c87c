"""The layer's settings and the checks both parties run before its payloads flow."""

from __future__ import annotations

from dataclasses import dataclass, field

from vfl.errors import ParameterMismatch, PlaintextRefused, field_differences
from vfl.protocol.embedding_noise import EmbeddingNoise
from vfl.protocol.fixed_point import SecureScales
from vfl.protocol.options import Mode, Randomness, check_rerandomise_source
from vfl.protocol.share_optim import ShareSgdConfig
from vfl.protocol.suites import DEFAULT_CIPHER, cipher_suite

__all__ = ["LayerSettings", "agreed_parameters", "check_agreement", "check_mode_allowed"]


@dataclass(frozen=True)
class LayerSettings:
    """How one party runs the layer; all but the last three fields must agree.

    ``rerandomise``: the obfuscators for ciphertexts returned to the other party's key owner
    (``FULL`` by default; ``SHORT_EXPONENT`` is faster, see :mod:`vfl.crypto.randomness`, and
    needs the receiving party's own consent, :class:`~vfl.protocol.options.SecurityFloor`).
    A party's fresh encryptions under its own key always use ``OWNER_CRT`` (FULL's exact
    distribution, from its own primes). ``embedding_noise``: the multiplier of P's embedding
    protection (:mod:`vfl.protocol.embedding_noise`; 0 = none), agreed by both parties.
    ``cipher``: the scheme's name in :data:`~vfl.protocol.suites.SUITES` (unused, and agreed
    as ``"none"``, in plaintext mode). ``precompute``: draw both from background pools while
    the party waits for the other. ``workers``: processes for batched products.
    """

    mode: Mode = Mode.ENCRYPTED
    scales: SecureScales = field(default_factory=SecureScales)
    sgd: ShareSgdConfig = field(default_factory=lambda: ShareSgdConfig(lr=1.0))
    key_bits: int = 2048
    cipher: str = DEFAULT_CIPHER
    rerandomise: Randomness = Randomness.FULL
    embedding_noise: float = 0.0
    precompute: bool = True
    workers: int = 0

    def __post_init__(self) -> None:
        check_rerandomise_source(self.rerandomise)
        EmbeddingNoise(self.embedding_noise, 0)  # raises for a negative or infinite multiplier
        cipher_suite(self.cipher)  # raises UnknownCipherSuite, naming the known schemes

    @property
    def scheme(self) -> str:
        """The cipher suite both parties must run: its name, ``"none"`` in plaintext mode."""
        return self.cipher if self.mode is Mode.ENCRYPTED else "none"

    def agreed(self, shape: tuple[int, ...]) -> dict[str, int | float | str]:
        """What both parties must have identical before any payload is exchanged."""
        return {
            "mode": self.mode.value,
            "key_bits": self.key_bits if self.mode is Mode.ENCRYPTED else 0,
            "cipher": self.scheme,
            "d": int(shape[0]),
            "h": int(shape[1]),
            "embedding_noise": float(self.embedding_noise),
            **{k: v for k, v in vars(self.scales).items()},
            **{f"wb_{k}": v for k, v in vars(self.sgd).items()},
        }


def agreed_parameters(
    scales: SecureScales, shape: tuple[int, ...], key_bits: int
) -> dict[str, int | float | str]:
    """The agreed parameters of encrypted-mode settings with ``scales`` and ``key_bits``."""
    return LayerSettings(scales=scales, key_bits=key_bits).agreed(shape)


def check_agreement(
    mine: dict[str, int | float | str], theirs: dict[str, int | float | str], *, me: str, peer: str
) -> None:
    """Compare parameter fingerprints field by field.

    Raises:
        ParameterMismatch: naming every differing field with both parties' values.
    """
    diff = field_differences(mine, theirs, me=me, peer=peer)
    if diff:
        raise ParameterMismatch(
            "agreed parameters differ -- "
            + "; ".join(diff)
            + ". Fix: give both parties the same job config"
        )


def check_mode_allowed(mode: Mode, allowed: bool, *, party: str) -> None:
    """Refuse plaintext mode unless this party's own config allows it.

    Raises:
        PlaintextRefused: naming the party and the config key that would allow it.
    """
    if mode is Mode.PLAINTEXT and not allowed:
        raise PlaintextRefused(
            f"party '{party}' refuses the plaintext protocol: its party config does not set "
            '[party] allow_plaintext = true. Fix: use train.protocol = "encrypted" (the '
            "default), or, for development only, set allow_plaintext = true in BOTH party configs"
        )
