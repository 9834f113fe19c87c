"""Fixed-point encoding into Z_n: round trips, the sum/product invariants, overflow detection."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vfl.crypto.encoding import FixedPoint, OverflowDetected, as_int_array
from vfl.errors import VflError

N = 2**521 - 1  # a Mersenne prime: any large odd modulus serves the encoding
CODEC = FixedPoint(N, frac_bits=16, bound=2.0**20)
REALS = st.floats(min_value=-(2.0**20), max_value=2.0**20, allow_nan=False)


def test_round_trip_within_half_resolution() -> None:
    # Prepare
    values = np.array([0.0, 1.0, -1.0, 3.14159, -(2.0**20), 2.0**20, 1e-6, -123.456])
    # Execute
    decoded = CODEC.raw_decode(CODEC.raw_encode(values))
    # Assert
    np.testing.assert_allclose(decoded, values, rtol=0, atol=2.0**-17)


def test_negatives_are_residues_near_n() -> None:
    assert CODEC.raw_encode(np.array([-1.0, 1.0])) == [N - 2**16, 2**16]


def test_encode_keeps_shape_and_raw_encode_flattens_in_c_order() -> None:
    values = np.array([[1.0, 2.0], [3.0, -4.0]])
    assert CODEC.encode(values).shape == (2, 2)
    assert CODEC.raw_decode(CODEC.raw_encode(values)).tolist() == [1.0, 2.0, 3.0, -4.0]


@given(a=REALS, b=REALS)
@settings(max_examples=200, deadline=None)
def test_decode_of_sum_is_sum(a: float, b: float) -> None:
    ea, eb = CODEC.raw_encode(np.array([a, b]))
    (total,) = CODEC.raw_decode([(ea + eb) % N])
    assert abs(total - (a + b)) <= 2.0**-16


@given(a=REALS, b=REALS)
@settings(max_examples=200, deadline=None)
def test_decode_of_product_at_power_two_within_stated_error(a: float, b: float) -> None:
    # Prepare
    ea, eb = CODEC.raw_encode(np.array([a, b]))
    bound = (abs(a) + abs(b)) * 2.0**-17 + 2.0**-34
    # Execute
    (product,) = CODEC.raw_decode([ea * eb % N], scale_power=2)
    # Assert (plus float64 rounding of a result up to 2^40)
    assert abs(product - a * b) <= bound + abs(a * b) * 2.0**-52


def test_value_above_bound_raises_overflow_naming_the_bound() -> None:
    with pytest.raises(OverflowDetected, match=r"\|x\| <= 1048576"):
        CODEC.raw_encode(np.array([0.0, -(2.0**20) - 1.0]))


def test_nan_and_inf_are_refused() -> None:
    with pytest.raises(ValueError, match="NaN/inf"):
        CODEC.encode(np.array([1.0, np.nan, np.inf]))


def test_wrapped_result_in_middle_third_is_detected() -> None:
    with pytest.raises(OverflowDetected, match="overflowed"):
        CODEC.raw_decode([N // 2])


def test_residue_outside_ring_is_refused() -> None:
    with pytest.raises(ValueError, match=r"\[0, n\)"):
        CODEC.raw_lift([N])


def test_band_edges_decode() -> None:
    limit = N // 3
    assert CODEC.raw_lift([limit, N - limit]) == [limit, -limit]


@pytest.mark.parametrize(
    ("modulus", "frac_bits", "bound", "message"),
    [
        (2**61 - 1, 16, 2.0**20, "too small"),
        (N, 16, 2.0**50, "does not fit"),
        (N, -1, 1.0, "frac_bits"),
        (N, 16, float("inf"), "positive and finite"),
    ],
)
def test_bad_codec_parameters_are_refused(
    modulus: int, frac_bits: int, bound: float, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        FixedPoint(modulus, frac_bits=frac_bits, bound=bound)


def test_overflow_is_a_named_vfl_error() -> None:
    assert issubclass(OverflowDetected, VflError)
    assert issubclass(OverflowDetected, ArithmeticError)


def test_as_int_array_never_truncates_floats() -> None:
    assert as_int_array(np.array([2**70, -3], dtype=object)).tolist() == [2**70, -3]
    assert as_int_array(5, (2, 2)).tolist() == [[5, 5], [5, 5]]
    with pytest.raises(TypeError, match="float"):
        as_int_array(np.array([1, 1.5], dtype=object))
    with pytest.raises(TypeError, match="float64"):
        as_int_array(np.array([1.0]))
    with pytest.raises(ValueError, match="does not match"):
        as_int_array(np.zeros((2, 3), dtype=np.int64), (3, 2))
