"""Property tests of the fixed-point codec against integer arithmetic in ``Z_n``.

The slot packing the layer uses is tested in tests/test_signed_packing.py and, under real
encryption, in tests/test_crypto_paillier.py.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vfl.crypto.encoding import OverflowDetected, dequantise, lift_signed, quantise
from vfl.crypto.paillier import KeyPair

EXAMPLES = settings(max_examples=200, deadline=None)
N = KeyPair.generate(512).public_key.n


def _residues(values: list[float], bits: int, bound: float) -> list[int]:
    return [int(a) % N for a in quantise(np.array(values), bits, bound, "x").ravel()]


def _decode(residues: list[int], bits: int) -> np.ndarray:
    ints = np.array(lift_signed(residues, N), dtype=object)
    return dequantise(ints, bits, bound_bits=64, what="x")


@given(a=st.floats(-(2.0**20), 2.0**20), frac_bits=st.integers(0, 30))
@EXAMPLES
def test_fixed_point_round_trip_within_half_resolution(a: float, frac_bits: int) -> None:
    back = _decode(_residues([a], frac_bits, 2.0**20), frac_bits)[0]
    assert abs(back - a) <= 2.0 ** -(frac_bits + 1)


@given(values=st.lists(st.floats(-(2.0**10), 2.0**10), min_size=1, max_size=20))
@EXAMPLES
def test_fixed_point_sum_is_exact_sum_of_encodings(values: list[float]) -> None:
    total = sum(_residues(values, 16, 2.0**10)) % N
    expected = sum(int(v) for v in quantise(np.array(values), 16, 2.0**10, "x"))
    assert lift_signed([total], N) == [expected]
    assert abs(_decode([total], 16)[0] - sum(values)) <= len(values) * 2.0**-17


@given(excess=st.floats(1e-9, 1e6), negative=st.booleans())
@EXAMPLES
def test_fixed_point_refuses_values_outside_the_bound(excess: float, negative: bool) -> None:
    value = (2.0**10) * (1 + excess) * (-1 if negative else 1)
    with pytest.raises(OverflowDetected, match="bound"):
        quantise(np.array([value]), 16, 2.0**10, "x")
