"""Short-exponent re-randomisation against the key's owner, who knows ``p`` and ``q``.

A re-randomised ciphertext ``c' = c·s`` goes back to the owner of the key. The owner can
compute every character of ``Z*_p`` and ``Z*_q`` of small order (``y^((p-1)/l) mod p``); if
the obfuscators ``s`` of a source do not take every value of those characters equally often,
``c'/c`` shows which of two candidate sources ``c`` was re-randomised. The owner-side linking
attack below must succeed no more often than a coin (50%), statistically tested, and the
quadratic characters of the obfuscators must be uniform (chi-squared).
"""

from __future__ import annotations

import secrets
from collections import Counter

import gmpy2
import pytest

from vfl.crypto.paillier import KeyPair
from vfl.crypto.pool import randomness_source
from vfl.crypto.randomness import OwnerShortExponentSource, Randomness, ShortExponentSource

SMALL_PRIMES = (2, 3)  # at most 36 value patterns: 256 samples learn them all
TRIALS = 400  # linking trials: a coin scores 200 +- 10 (one sd); 5 sd allowed either way
SAMPLES = 1000  # obfuscators for the chi-squared test of the quadratic characters
CHI2_DF3_P1E6 = 30.66  # chi-squared, 3 degrees of freedom, p = 1e-6


@pytest.fixture(scope="module")
def keys() -> KeyPair:
    return KeyPair.generate(512)


def _characters(y: int, p: int, q: int) -> tuple[int, ...]:
    """The owner's view of ``y``: ``y^((r-1)/l) mod r`` for each small prime ``l | r - 1``,
    ``r`` in ``{p, q}`` (each is an ``l``-th root of unity mod ``r``: a character value)."""
    out = []
    for r in (p, q):
        for ell in SMALL_PRIMES:
            if (r - 1) % ell == 0:
                out.append(int(gmpy2.powmod(y % r, (r - 1) // ell, r)))
    return tuple(out)


def _link(keys: KeyPair, source: object, trials: int) -> int:
    """How often the owner names the source of ``c' = c_b·s`` among ``c_0, c_1``.

    The owner first learns which character values the source's obfuscators take (from 256
    of them: public parameters or earlier traffic give it that), then picks the candidate
    whose ratio ``c'/c_i`` has seen values, at random when both or neither do.
    """
    pk, (p, q) = keys.public_key, keys.private_key.primes
    take = source.take  # type: ignore[attr-defined]
    seen = {_characters(s, p, q) for s in take(256)}
    wins = 0
    for _ in range(trials):
        m = secrets.randbelow(pk.n)
        c = [pk.raw_encrypt(m), pk.raw_encrypt(m)]
        b = secrets.randbelow(2)
        c_new = pk.rerandomise(c[b], r_pow_n=take(1)[0])
        fits = [
            _characters(c_new * int(gmpy2.invert(ci, pk.nsquare)) % pk.nsquare, p, q) in seen
            for ci in c
        ]
        guess = fits.index(True) if fits.count(True) == 1 else secrets.randbelow(2)
        wins += guess == b
    return wins


@pytest.mark.parametrize("mode", [Randomness.FULL, Randomness.SHORT_EXPONENT])
def test_the_key_owner_cannot_link_a_rerandomised_ciphertext(
    keys: KeyPair, mode: Randomness
) -> None:
    # Prepare: the obfuscators P would use for ciphertexts under E's key
    source = randomness_source(keys.public_key, mode)
    # Execute
    wins = _link(keys, source, TRIALS)
    # Assert: no better than a coin (the single-base short exponent scored 74-86%)
    assert abs(wins - TRIALS / 2) <= 5 * (TRIALS / 4) ** 0.5, f"{wins}/{TRIALS} linked"


@pytest.mark.parametrize("owner_side", [False, True], ids=["peer", "owner_crt_halves"])
def test_short_exponent_obfuscators_have_uniform_quadratic_characters(
    keys: KeyPair, owner_side: bool
) -> None:
    # Prepare: the peer's source for re-randomising, and the owner's own (item 4), which
    # draws each CRT half from many bases of the cyclic G_p and G_q
    p, q = keys.private_key.primes
    source = (
        OwnerShortExponentSource(keys.private_key)
        if owner_side
        else ShortExponentSource(keys.public_key)
    )
    # Execute: the Legendre symbols mod p and mod q of each obfuscator
    cells = Counter(
        (gmpy2.legendre(s % p, p), gmpy2.legendre(s % q, q)) for s in source.take(SAMPLES)
    )
    # Assert: all four (+-1, +-1) cells, equally often (chi-squared, 3 degrees of freedom)
    expected = SAMPLES / 4
    chi2 = sum((cells.get((a, b), 0) - expected) ** 2 / expected for a in (1, -1) for b in (1, -1))
    assert chi2 < CHI2_DF3_P1E6, dict(cells)
