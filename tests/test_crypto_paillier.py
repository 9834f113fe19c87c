"""Paillier layer at 512-bit keys: homomorphic identities, fresh randomness, refusals, pool."""

from __future__ import annotations

import secrets

import numpy as np
import pytest

from vfl.crypto.encoding import dequantise, lift_signed, quantise
from vfl.crypto.paillier import EncryptedVector, KeyMismatchError, KeyPair, PublicKey
from vfl.crypto.pool import RandomnessPool
from vfl.crypto.signed_packing import pack_rows, unpack_rows
from vfl.errors import VflError


@pytest.fixture(scope="module")
def keys() -> KeyPair:
    return KeyPair.generate(512)


@pytest.fixture(scope="module")
def other_keys() -> KeyPair:
    return KeyPair.generate(512)


F = 16  # fractional bits of the values below


def _encode(values: np.ndarray) -> np.ndarray:
    return quantise(values, F, 2.0**20, "test values")


def _lift(keys: KeyPair, vector: EncryptedVector) -> list[int]:
    return lift_signed(keys.private_key.raw_decrypt_vector(vector), keys.public_key.n)


def _decrypt(keys: KeyPair, vector: EncryptedVector, *, scale_power: int = 1) -> np.ndarray:
    ints = np.array(_lift(keys, vector), dtype=object)
    values = dequantise(ints, scale_power * F, bound_bits=100, what="test result")
    return values.reshape(vector.shape)


def test_raw_encrypt_matches_textbook_formula(keys: KeyPair) -> None:
    # Prepare: c = g^m * r^n mod n^2 with g = n + 1 (Paillier 1999, scheme 1)
    pk = keys.public_key
    m, r = secrets.randbelow(pk.n), secrets.randbelow(pk.n - 1) + 1
    r_pow_n = pow(r, pk.n, pk.nsquare)
    # Execute
    c = pk.raw_encrypt(m, r_pow_n=r_pow_n)
    # Assert
    assert c == pow(pk.n + 1, m, pk.nsquare) * r_pow_n % pk.nsquare
    assert keys.private_key.raw_decrypt(c) == m


@pytest.mark.parametrize("m", [0, 1, 2**100, -1])
def test_round_trip_at_ring_edges(keys: KeyPair, m: int) -> None:
    m %= keys.public_key.n
    assert keys.private_key.raw_decrypt(keys.public_key.raw_encrypt(m)) == m


def test_same_plaintext_twice_gives_different_ciphertexts(keys: KeyPair) -> None:
    pk = keys.public_key
    c1, c2 = pk.raw_encrypt(42), pk.raw_encrypt(42)
    assert c1 != c2
    assert 1 + pk.n * 42 not in (c1, c2)  # never the unrandomised g^m


def test_raw_identities(keys: KeyPair) -> None:
    # Prepare
    pk, sk = keys.public_key, keys.private_key
    a, b = 1234567, 7654321
    ca, cb = pk.raw_encrypt(a), pk.raw_encrypt(b)
    # Execute / Assert
    assert sk.raw_decrypt(pk.raw_add(ca, cb)) == a + b
    assert sk.raw_decrypt(pk.raw_add_plain(ca, -a)) == 0
    assert sk.raw_decrypt(pk.raw_mul_scalar(ca, 2**40 - 1)) == a * (2**40 - 1)
    assert sk.raw_decrypt(pk.raw_mul_scalar(ca, -3)) == (-3 * a) % pk.n
    rerandomised = pk.rerandomise(ca)
    assert rerandomised != ca
    assert sk.raw_decrypt(rerandomised) == a


def test_out_of_range_inputs_are_refused(keys: KeyPair) -> None:
    pk = keys.public_key
    with pytest.raises(ValueError, match=r"\[0, n\)"):
        pk.raw_encrypt(pk.n)
    with pytest.raises(ValueError, match="r_pow_n"):
        pk.raw_encrypt(1, r_pow_n=0)
    with pytest.raises(ValueError, match="ciphertext"):
        keys.private_key.raw_decrypt(pk.nsquare)
    with pytest.raises(ValueError, match="even and >= 256"):
        KeyPair.generate(255)


def test_vector_add_scalar_and_sub_with_negative_values(keys: KeyPair) -> None:
    # Prepare
    a, b = np.array([[1.5, -2.25], [0.0, -7.0]]), np.array([[-0.5, 3.0], [2.0, 1.0]])
    ea = EncryptedVector.raw_encrypt(keys.public_key, _encode(a))
    eb = EncryptedVector.raw_encrypt(keys.public_key, _encode(b))
    k = np.array([[3, -2], [0, 5]])
    # Execute
    total, diff, plain = ea + eb, ea - eb, ea + _encode(b)
    scaled, negated = ea * k, -ea
    # Assert
    np.testing.assert_allclose(_decrypt(keys, total), a + b)
    np.testing.assert_allclose(_decrypt(keys, diff), a - b)
    np.testing.assert_allclose(_decrypt(keys, plain), a + b)
    np.testing.assert_allclose(_decrypt(keys, scaled), a * k)
    np.testing.assert_allclose(_decrypt(keys, negated), -a)
    np.testing.assert_allclose(_decrypt(keys, 2 * ea), 2 * a)


def test_dot_matches_numpy(keys: KeyPair) -> None:
    # Prepare: b (m x d) plaintext, U (d x h) encrypted, small signed ints with zeros
    rng = np.random.default_rng(0)
    b = rng.integers(-50, 50, size=(4, 3))
    b[0, 1] = 0
    u = rng.integers(-1000, 1000, size=(3, 2))
    eu = EncryptedVector.raw_encrypt(keys.public_key, u)
    # Execute
    product, via_operator, column = (
        eu.dot(b),
        b @ eu,
        b @ EncryptedVector.raw_encrypt(keys.public_key, u[:, 0]),
    )
    # Assert
    assert product.shape == (4, 2)
    assert np.array_equal(np.array(_lift(keys, product)).reshape(4, 2), b @ u)
    assert np.array_equal(np.array(_lift(keys, via_operator)).reshape(4, 2), b @ u)
    assert column.shape == (4,)
    assert _lift(keys, column) == (b @ u[:, 0]).tolist()


def test_fixed_point_product_decodes_at_power_two(keys: KeyPair) -> None:
    b, u = np.array([[0.5, -1.25]]), np.array([[2.0, -0.1], [0.75, 3.0]])
    eu = EncryptedVector.raw_encrypt(keys.public_key, _encode(u))
    z = _decrypt(keys, _encode(b) @ eu, scale_power=2)
    np.testing.assert_allclose(z, b @ u, atol=2 * 3.0 * 2.0**-17)


def test_transpose(keys: KeyPair) -> None:
    u = np.arange(6).reshape(2, 3)
    eu = EncryptedVector.raw_encrypt(keys.public_key, u)
    np.testing.assert_array_equal(_decrypt(keys, eu.T) * 2**16, u.T)


@pytest.mark.parametrize("evaluate", [bool, float, int])
def test_evaluating_an_encrypted_value_is_refused(keys: KeyPair, evaluate: type) -> None:
    vector = EncryptedVector.raw_encrypt(keys.public_key, [1])
    with pytest.raises(TypeError, match="cannot evaluate an encrypted value"):
        evaluate(vector)


def test_encrypted_times_encrypted_is_refused(keys: KeyPair) -> None:
    vector = EncryptedVector.raw_encrypt(keys.public_key, [[1, 2], [3, 4]])
    for product in (lambda: vector * vector, lambda: vector.dot(vector), lambda: vector @ vector):
        with pytest.raises(TypeError, match="encrypted"):
            product()
    with pytest.raises(TypeError, match="plaintext integers"):
        vector * np.array([[0.5, 1.0], [1.0, 1.0]])


def test_key_mismatch(keys: KeyPair, other_keys: KeyPair) -> None:
    mine = EncryptedVector.raw_encrypt(keys.public_key, [1, 2])
    theirs = EncryptedVector.raw_encrypt(other_keys.public_key, [1, 2])
    with pytest.raises(KeyMismatchError, match="different Paillier keys"):
        mine + theirs
    with pytest.raises(KeyMismatchError):
        other_keys.private_key.raw_decrypt_vector(mine)
    with pytest.raises(KeyMismatchError, match="another Paillier key"):
        EncryptedVector.deserialise(mine.serialise(), other_keys.public_key)
    assert issubclass(KeyMismatchError, VflError) and issubclass(KeyMismatchError, ValueError)


def test_serialise_rerandomises_by_default(keys: KeyPair) -> None:
    # Prepare
    pk = keys.public_key
    vector = EncryptedVector.raw_encrypt(pk, [[5, -6, 7]])
    # Execute
    plain_bytes = vector.serialise(rerandomise=False)
    first, second = vector.serialise(), vector.serialise()
    # Assert
    assert len({plain_bytes, first, second}) == 3
    decrypt = keys.private_key.raw_decrypt_vector
    for data in (plain_bytes, first, second):
        restored = EncryptedVector.deserialise(data, pk)
        assert restored.shape == (1, 3)
        assert decrypt(restored) == decrypt(vector)
    assert EncryptedVector.deserialise(plain_bytes, pk).ciphertexts == vector.ciphertexts


def test_malformed_payloads_are_refused(keys: KeyPair) -> None:
    pk = keys.public_key
    data = EncryptedVector.raw_encrypt(pk, [1, 2]).serialise()
    for bad in (b"", b"XXXX" + data[4:], data[:-1], data + b"\x00"):
        with pytest.raises(ValueError):
            EncryptedVector.deserialise(bad, pk)
    width = (pk.nsquare.bit_length() + 7) // 8
    zeroed = data[:-width] + bytes(width)
    with pytest.raises(ValueError, match=r"outside \(0, n\^2\)"):
        EncryptedVector.deserialise(zeroed, pk)


def test_public_key_bytes_round_trip(keys: KeyPair) -> None:
    pk = keys.public_key
    assert PublicKey.from_bytes(pk.to_bytes()) == pk
    assert "p=" not in repr(keys.private_key)
    with pytest.raises(ValueError, match="odd"):
        PublicKey.from_bytes(b"\x10" * 16)


def test_packed_slots_survive_encrypted_add_and_scalar(keys: KeyPair) -> None:
    # Prepare
    w, k = 127, 3  # the layer's slot width; 3 slots of 127 bits fit a 512-bit plaintext
    x = np.array([[3, -4, 2**59, -(2**59), 0, 7, 9]], dtype=object)
    y = np.array([[-1, 1, 5, 6, -(2**60) + 1, 0, 0]], dtype=object)
    ex = EncryptedVector.raw_encrypt(keys.public_key, pack_rows(x, w, k))
    ey = EncryptedVector.raw_encrypt(keys.public_key, pack_rows(y, w, k))
    # Execute: 3 * pack(x) + pack(y) + 4 * pack(y)
    combined = ex * 3 + ey + ey * 4
    # Assert
    lifted = np.array(_lift(keys, combined), dtype=object).reshape(combined.shape)
    assert (unpack_rows(lifted, w, k, 7) == 3 * x + 5 * y).all()


@pytest.mark.parametrize("workers", [0, 1])
def test_pool_never_hands_out_a_value_twice(keys: KeyPair, workers: int) -> None:
    # Prepare
    pk = keys.public_key
    with RandomnessPool(pk, size=8, workers=workers, timeout=30) as pool:
        # Execute: more than the stock size, in several takes
        values = pool.take(5) + pool.take(12) + pool.take(0) + pool.take(3)
        vector = EncryptedVector.raw_encrypt(pk, [1, 2, 3], pool=pool)
    # Assert
    assert len(values) == 20 and len(set(values)) == 20
    assert all(0 < v < pk.nsquare for v in values)
    assert keys.private_key.raw_decrypt_vector(vector) == [1, 2, 3]


def test_pool_of_another_key_is_refused(keys: KeyPair, other_keys: KeyPair) -> None:
    pool = RandomnessPool(other_keys.public_key, size=1, workers=0)
    with pytest.raises(KeyMismatchError):
        EncryptedVector.raw_encrypt(keys.public_key, [1], pool=pool)


def test_pool_timeout_names_the_pool(keys: KeyPair) -> None:
    with (
        RandomnessPool(keys.public_key, size=2, workers=1, timeout=0.05) as pool,
        pytest.raises(TimeoutError, match=r"RandomnessPool\(n_bits=512"),
    ):
        pool.take(100_000)


def test_bad_pool_parameters_are_refused(keys: KeyPair) -> None:
    with pytest.raises(ValueError, match="size >= 1"):
        RandomnessPool(keys.public_key, size=0, workers=0)
