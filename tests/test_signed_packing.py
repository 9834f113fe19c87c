"""Signed packing against plain integer arithmetic."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vfl.crypto.encoding import OverflowDetected
from vfl.crypto.paillier import EncryptedVector, KeyPair
from vfl.crypto.signed_packing import pack, pack_rows, slots_per_plaintext, unpack, unpack_rows

W = 48
slot = st.integers(min_value=-(2 ** (W - 1)) + 1, max_value=2 ** (W - 1) - 1)
KEY = KeyPair.generate(512)


@given(st.lists(slot, min_size=1, max_size=8), st.lists(slot, min_size=1, max_size=8))
@settings(max_examples=200, deadline=None)
def test_sum_of_packings_is_packing_of_sums(xs: list[int], ys: list[int]) -> None:
    n = min(len(xs), len(ys))
    xs, ys = xs[:n], ys[:n]
    total = [a + b for a, b in zip(xs, ys, strict=True)]
    if any(abs(t) >= 2 ** (W - 1) for t in total):
        return  # outside the declared band: the caller's bounds exclude it
    assert unpack(pack(xs, W) + pack(ys, W), W, n) == total


@given(st.lists(st.integers(-(2**20), 2**20), min_size=1, max_size=6), st.integers(-(2**20), 2**20))
@settings(max_examples=200, deadline=None)
def test_signed_scalar_multiplies_every_slot(xs: list[int], c: int) -> None:
    assert unpack(c * pack(xs, W), W, len(xs)) == [c * x for x in xs]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.lists(st.integers(-(2**30), 2**30), min_size=5, max_size=5), min_size=1, max_size=3
    ),
    st.lists(st.integers(-(2**15), 2**15), min_size=1, max_size=3),
)
def test_encrypted_matrix_product_on_packed_rows(rows: list[list[int]], coeffs: list[int]) -> None:
    # Prepare: x (r x 5) packed 3 slots per plaintext, c (1 x r) signed
    r = min(len(rows), len(coeffs))
    x = np.array(rows[:r], dtype=object)
    c = np.array([coeffs[:r]], dtype=object)
    k = slots_per_plaintext(KEY.public_key.n_bits, 100)
    enc = EncryptedVector.raw_encrypt(KEY.public_key, pack_rows(x, 100, k))
    # Execute: c · [[pack(x)]] decrypts to pack(c · x)
    out = enc.dot(c)
    n = KEY.public_key.n
    ints = [v if v < n // 2 else v - n for v in KEY.private_key.raw_decrypt_vector(out)]
    got = unpack_rows(np.array([ints], dtype=object), 100, k, 5)
    # Assert
    assert got.tolist() == np.dot(c, x).tolist()


def test_top_slot_overflow_is_detected() -> None:
    with pytest.raises(OverflowDetected):
        unpack(pack([1, 2, 2 ** (W - 1) + 3], W), W, 3)


def test_slots_per_plaintext_leaves_margin() -> None:
    assert slots_per_plaintext(2048, 144) == 14
    with pytest.raises(ValueError):
        slots_per_plaintext(100, 144)
