"""Obfuscator sources (full and short-exponent), fixed-base tables, batched products, executor."""

from __future__ import annotations

import secrets

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vfl.crypto import parallel as executor_module
from vfl.crypto.batched import best_window, combine
from vfl.crypto.paillier import EncryptedVector, KeyMismatchError, KeyPair
from vfl.crypto.parallel import split
from vfl.crypto.pool import RandomnessPool, randomness_source
from vfl.crypto.randomness import (
    DEFAULT_WINDOW,
    FixedBaseTable,
    FullSource,
    ManyBaseTable,
    OwnerCrtSource,
    OwnerShortExponentSource,
    Randomness,
    ShortExponentSource,
    _owner_tables,
    many_base_rows,
    owner_mode,
)
from vfl.executor import InlineExecutor, LocalProcessExecutor

EXAMPLES = settings(max_examples=200, deadline=None)
MODULUS = 2**127 - 1  # a prime: every nonzero residue is a unit


@pytest.fixture(scope="module")
def keys() -> KeyPair:
    return KeyPair.generate(512)


def _is_nth_residue(keys: KeyPair, value: int) -> bool:
    """``y`` is an ``n``-th residue mod ``n^2`` iff it decrypts to 0 as a ciphertext."""
    return keys.private_key.raw_decrypt(value) == 0


@given(
    base=st.integers(2, MODULUS - 1),
    x=st.integers(0, 2**300 - 1),
    window=st.integers(1, 9),
)
@EXAMPLES
def test_fixed_base_table_power_matches_pow(base: int, x: int, window: int) -> None:
    table = FixedBaseTable(base, MODULUS, 300, window)
    assert table.power(x) == pow(base, x, MODULUS)


def test_fixed_base_table_refuses_a_too_long_exponent() -> None:
    table = FixedBaseTable(3, MODULUS, 16, 4)
    with pytest.raises(ValueError, match="17 bits exceeds"):
        table.power(2**16)


@given(
    data=st.data(),
    m=st.integers(1, 12),
    d=st.integers(1, 4),
    g=st.integers(1, 3),
    bits=st.integers(1, 70),
)
@EXAMPLES
def test_combine_equals_product_of_powers(
    data: st.DataObject, m: int, d: int, g: int, bits: int
) -> None:
    # Prepare: units mod a prime, signed coefficients (zeros included)
    bases = [[data.draw(st.integers(1, MODULUS - 1)) for _ in range(g)] for _ in range(d)]
    entry = st.integers(-(2**bits), 2**bits)
    coeffs = np.array([[data.draw(entry) for _ in range(d)] for _ in range(m)], dtype=object)
    # Execute
    out = combine(bases, coeffs, MODULUS)
    # Assert: the naive product, one pow per term
    for i in range(m):
        for k in range(g):
            expected = 1
            for j in range(d):
                expected = expected * pow(bases[j][k], int(coeffs[i, j]), MODULUS) % MODULUS
            assert out[i][k] == expected


def test_best_window_uses_tables_only_when_they_pay() -> None:
    assert best_window(21, 1) == 0  # one use: plain powmod
    assert best_window(21, 256) >= 5  # many uses: a wide table
    assert best_window(1024, 10_000) == 10


def test_short_exponent_values_are_fresh_nth_residues(keys: KeyPair) -> None:
    # Prepare
    source = ShortExponentSource(keys.public_key)
    # Execute
    values = source.take(50)
    # Assert: valid obfuscators (encryptions of 0), all distinct, and usable for encryption
    assert len(set(values)) == 50
    assert all(_is_nth_residue(keys, v) for v in values)
    enc = EncryptedVector.raw_encrypt(keys.public_key, [5, -7], pool=source)
    n = keys.public_key.n
    assert keys.private_key.raw_decrypt_vector(enc) == [5, n - 7]
    # 266 bases of 8-bit digits at 512 bits (many_base_rows), each base an n-th residue
    assert len(source.bases) == many_base_rows(512) == 266 and source.exponent_bits == 8 * 266
    assert all(_is_nth_residue(keys, b) for b in source.bases) and source.take(0) == []


def test_short_exponent_source_refuses_too_few_or_bad_bases(keys: KeyPair) -> None:
    pk = keys.public_key
    bases = ShortExponentSource(pk).bases
    with pytest.raises(ValueError, match="too few"):
        ShortExponentSource(pk, bases=bases[:-1])
    with pytest.raises(ValueError, match="unit"):
        ShortExponentSource(pk, bases=(pk.n, *bases[1:]))
    assert ShortExponentSource(pk, bases=bases).bases == bases  # public bases can be reused


def test_many_base_table_power_matches_the_product_of_powers() -> None:
    # Prepare: three bases, 4-bit digits
    table = ManyBaseTable((3, 5, 7), MODULUS, 4)
    for x in (0, 1, 0xF, 0x10, 0xABC, 0xFFF):
        digits = [(x >> (4 * i)) & 0xF for i in range(3)]
        # Execute / Assert
        assert (
            table.power(x)
            == pow(3, digits[0], MODULUS)
            * pow(5, digits[1], MODULUS)
            * pow(7, digits[2], MODULUS)
            % MODULUS
        )
    with pytest.raises(ValueError, match="13 bits exceeds"):
        table.power(1 << 12)


def test_many_base_rows_meet_both_conditions_of_the_bound() -> None:
    for n_bits in (512, 1024, 2048, 3072):
        rows = many_base_rows(n_bits)
        assert 8 * rows >= n_bits + 256  # phi(n) / 2^(w t) <= 2^-256
        assert rows >= 256 + 8 + 2  # k = 2 term: 4 * (1/2)^t <= 2^(-256 - 8)
    assert many_base_rows(2048) == 288


def test_sources_are_rpown_sources_for_rerandomisation(keys: KeyPair) -> None:
    pk = keys.public_key
    enc = EncryptedVector.raw_encrypt(pk, [1, 2, 3])
    for mode in Randomness:
        source = randomness_source(pk, mode, private_key=keys.private_key)
        fresh = enc.rerandomised(pool=source)
        assert not set(fresh.ciphertexts) & set(enc.ciphertexts)
        assert keys.private_key.raw_decrypt_vector(fresh) == [1, 2, 3]
    assert isinstance(randomness_source(pk), FullSource)


def test_source_of_another_key_is_refused(keys: KeyPair) -> None:
    other = KeyPair.generate(512).public_key
    with pytest.raises(KeyMismatchError):
        EncryptedVector.raw_encrypt(keys.public_key, [1], pool=ShortExponentSource(other))


@pytest.mark.parametrize("workers", [0, 1])
def test_short_exponent_pool_hands_out_fresh_residues_once(keys: KeyPair, workers: int) -> None:
    # Prepare
    with RandomnessPool(
        keys.public_key, 8, workers, mode=Randomness.SHORT_EXPONENT, timeout=60
    ) as pool:
        # Execute
        values = pool.take(20)
    # Assert
    assert len(set(values)) == 20
    assert all(_is_nth_residue(keys, v) for v in values)


def test_randomness_source_with_pool_size_returns_a_pool(keys: KeyPair) -> None:
    source = randomness_source(keys.public_key, Randomness.SHORT_EXPONENT, pool_size=4, workers=0)
    assert isinstance(source, RandomnessPool) and source.mode is Randomness.SHORT_EXPONENT
    with pytest.raises(ValueError, match="pool_size"):
        randomness_source(keys.public_key, pool_size=-1)


def test_split_covers_every_index_once() -> None:
    for count in range(0, 12):
        for parts in range(1, 5):
            ranges = split(count, parts)
            assert [i for r in ranges for i in r] == list(range(count))
            assert len(ranges) <= parts and all(len(r) for r in ranges)


def test_process_executor_dot_equals_inline(keys: KeyPair, monkeypatch: pytest.MonkeyPatch) -> None:
    # Prepare: force the parallel path for a small product
    monkeypatch.setattr(executor_module, "PARALLEL_MIN_MULTIPLICATIONS", 1)
    pk = keys.public_key
    x = EncryptedVector.raw_encrypt(pk, np.arange(12).reshape(4, 3))
    mat = np.array([[secrets.randbelow(2**20) - 2**19 for _ in range(4)] for _ in range(7)])
    # Execute
    with LocalProcessExecutor(2) as pool:
        parallel = x.dot(mat, executor=pool)
    inline = x.dot(mat, executor=InlineExecutor())
    # Assert: the same ciphertexts, and they decrypt to M @ X
    assert parallel.ciphertexts == inline.ciphertexts
    n = pk.n
    got = [r if r < n // 2 else r - n for r in keys.private_key.raw_decrypt_vector(parallel)]
    assert got == (mat @ np.arange(12).reshape(4, 3)).ravel().tolist()


def test_closed_executor_refuses_work() -> None:
    pool = LocalProcessExecutor(1)
    pool.close()
    with pytest.raises(RuntimeError, match="closed"):
        pool.map(abs, [1])
    with pytest.raises(ValueError, match="at least one worker"):
        LocalProcessExecutor(0)


OWNER_MODES = pytest.mark.parametrize(
    "mode", [Randomness.OWNER_CRT, Randomness.OWNER_SHORT_EXPONENT], ids=lambda m: m.value
)


@OWNER_MODES
def test_owner_values_are_nth_residues_with_both_halves_random(
    keys: KeyPair, mode: Randomness
) -> None:
    # Prepare
    source = randomness_source(keys.public_key, mode, private_key=keys.private_key)
    p, q = keys.private_key.primes
    # Execute
    values = source.take(40)
    # Assert: encryptions of 0, pairwise distinct modulo p^2 and modulo q^2 (both CRT halves
    # fresh), and they decrypt ciphertexts correctly
    expected = OwnerCrtSource if mode is Randomness.OWNER_CRT else OwnerShortExponentSource
    assert isinstance(source, expected)
    assert all(_is_nth_residue(keys, v) for v in values)
    assert len({v % p**2 for v in values}) == len({v % q**2 for v in values}) == 40
    assert all(pow(v % p**2, p - 1, p**2) == 1 for v in values)  # order divides p - 1
    assert all(pow(v % q**2, q - 1, q**2) == 1 for v in values)
    enc = EncryptedVector.raw_encrypt(keys.public_key, [9], pool=source)
    assert keys.private_key.raw_decrypt_vector(enc) == [9]


def test_owner_short_exponent_halves_have_enough_bases(keys: KeyPair) -> None:
    # Each CRT half is within 2^-129 of uniform, so the pair is within 2^-128 (item 4)
    p, q = keys.private_key.primes
    tables = _owner_tables(p, q, DEFAULT_WINDOW)
    for prime, table in zip((p, q), tables, strict=True):
        assert len(table.bases) == many_base_rows(prime.bit_length(), DEFAULT_WINDOW, 129)
        assert table.exponent_bits >= prime.bit_length() + 2 * 129
        assert all(pow(b, prime - 1, prime**2) == 1 for b in table.bases)


@pytest.mark.parametrize(
    ("plan", "own"),
    [
        (Randomness.FULL, Randomness.OWNER_CRT),
        (Randomness.SHORT_EXPONENT, Randomness.OWNER_SHORT_EXPONENT),
    ],
)
def test_owner_never_hides_its_own_plaintexts_less_than_the_plan(
    plan: Randomness, own: Randomness
) -> None:
    assert owner_mode(plan) is own


@OWNER_MODES
def test_owner_modes_need_this_keys_private_key(keys: KeyPair, mode: Randomness) -> None:
    other = KeyPair.generate(512)
    with pytest.raises(ValueError, match="only the key's owner"):
        randomness_source(keys.public_key, mode)
    with pytest.raises(ValueError, match="only the key's owner"):
        RandomnessPool(keys.public_key, 4, 0, mode=mode, private_key=other.private_key)


@OWNER_MODES
def test_owner_pool_in_a_worker(keys: KeyPair, mode: Randomness) -> None:
    with RandomnessPool(keys.public_key, 4, 1, mode=mode, private_key=keys.private_key) as pool:
        values = pool.take(10)
    assert len(set(values)) == 10 and all(_is_nth_residue(keys, v) for v in values)
