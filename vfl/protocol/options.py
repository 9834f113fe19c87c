"""Choices of the interactive-layer protocol that both parties' configs name (SPEC §4)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from vfl.crypto.randomness import OWNER_ONLY, Randomness
from vfl.errors import SecurityFloorError

__all__ = [
    "DEFAULT_MIN_KEY_BITS",
    "Mode",
    "Randomness",
    "SecurityFloor",
    "check_rerandomise_source",
]

DEFAULT_MIN_KEY_BITS = 2048  # NIST SP 800-57 part 1: 2048-bit factoring moduli ~ 112-bit security


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
    ``SHORT_EXPONENT`` is faster and statistically close to it, within ``2^-128`` even for
    the owner (see :mod:`vfl.crypto.randomness`); each party still accepts it only if its
    own config allows it (:class:`SecurityFloor`). ``OWNER_CRT`` and
    ``OWNER_SHORT_EXPONENT`` need the other party's private key.

    Raises:
        ValueError: for ``OWNER_CRT`` and ``OWNER_SHORT_EXPONENT``.
    """
    if mode in OWNER_ONLY:
        raise ValueError(
            f"randomness = '{mode.value}' needs the key owner's primes; re-randomising under "
            "the other party's key must use 'full' (default) or 'short_exponent'"
        )
    return mode


@dataclass(frozen=True)
class SecurityFloor:
    """The least security one party accepts, from its *own* config (``[party]``).

    The job plan comes from the coordinator, which is trusted with no data, so a party never
    takes the plan's word for how strong its protection is: a 256-bit modulus factors in CPU
    minutes and then opens every ciphertext under that key (``U``, ``δ``, ...). Each party
    therefore checks the plan against this floor when the plan arrives (before any key is
    generated) and again when the interactive layer is set up.

    Attributes:
        min_key_bits: the smallest Paillier modulus ``n`` accepted, in bits (default 2048).
        allow_short_exponent: whether this party lets ciphertexts returned to it be
            re-randomised with :attr:`Randomness.SHORT_EXPONENT` obfuscators (default False).
        config: where the floor was written, for the error message.
    """

    min_key_bits: int = DEFAULT_MIN_KEY_BITS
    allow_short_exponent: bool = False
    config: str = "its party config"

    def check(self, *, mode: Mode, key_bits: int, randomness: Randomness, party: str) -> None:
        """Refuse a plan below this floor; plaintext mode is refused elsewhere (allow_plaintext).

        Raises:
            SecurityFloorError: ``key_bits < min_key_bits``, or ``randomness`` is
                ``short_exponent`` and this party does not allow it; naming the party, the
                plan key, the config key and the fix.
        """
        if mode is Mode.PLAINTEXT:
            return
        if key_bits < self.min_key_bits:
            raise SecurityFloorError(
                f"party '{party}' refuses the plan: train.key_bits = {key_bits} is below "
                f"[party] min_key_bits = {self.min_key_bits} of {self.config} (a short "
                f"modulus can be factored and every ciphertext under it read). Fix: set "
                f"train.key_bits = {max(self.min_key_bits, DEFAULT_MIN_KEY_BITS)} (or more) in "
                "the coordinator's job plan; lower min_key_bits only for tests"
            )
        if randomness is Randomness.SHORT_EXPONENT and not self.allow_short_exponent:
            raise SecurityFloorError(
                f"party '{party}' refuses the plan: train.randomness = 'short_exponent' is not "
                f"allowed by {self.config} ([party] allow_short_exponent is false). Fix: set "
                'train.randomness = "full" (the default) in the coordinator\'s job plan, or '
                "set [party] allow_short_exponent = true in this party's config to accept it"
            )
