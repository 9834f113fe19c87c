"""Fixed-point encoding into Z_n: round trips, the sum/product invariants, overflow detection."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vfl.crypto.encoding import (
    OverflowDetected,
    as_int_array,
    dequantise,
    lift_signed,
    quantise,
)
from vfl.errors import VflError

N = 2**521 - 1  # a Mersenne prime: any large odd modulus serves the encoding
F, BOUND = 16, 2.0**20  # fractional bits and declared bound of the values below
REALS = st.floats(min_value=-BOUND, max_value=BOUND, allow_nan=False)


def _encode(values: np.ndarray) -> list[int]:
    """``Encode(a) mod n`` for each value, flattened in C order (what the owner encrypts)."""
    return [int(a) % N for a in quantise(values, F, BOUND, "x").ravel()]


def _decode(residues: list[int], *, scale_power: int = 1) -> np.ndarray:
    """``Decode_p`` of residues: lift, then divide by ``2^(p·f)``."""
    ints = np.array(lift_signed(residues, N), dtype=object)
    return dequantise(ints, scale_power * F, bound_bits=480, what="x")


def test_round_trip_within_half_resolution() -> None:
    # Prepare
    values = np.array([0.0, 1.0, -1.0, 3.14159, -BOUND, BOUND, 1e-6, -123.456])
    # Execute
    decoded = _decode(_encode(values))
    # Assert
    np.testing.assert_allclose(decoded, values, rtol=0, atol=2.0**-17)


def test_negatives_are_residues_near_n() -> None:
    assert _encode(np.array([-1.0, 1.0])) == [N - 2**16, 2**16]


def test_quantise_keeps_shape_and_python_ints() -> None:
    ints = quantise(np.array([[1.0, 2.0], [3.0, -4.0]]), 70, 8.0, "x")
    assert ints.shape == (2, 2) and ints[1, 1] == -(2**72)  # exact beyond int64
    assert _decode(_encode(np.array([[1.0, 2.0], [3.0, -4.0]]))).tolist() == [1.0, 2.0, 3.0, -4.0]


@given(a=REALS, b=REALS)
@settings(max_examples=200, deadline=None)
def test_decode_of_sum_is_sum(a: float, b: float) -> None:
    ea, eb = _encode(np.array([a, b]))
    (total,) = _decode([(ea + eb) % N])
    assert abs(total - (a + b)) <= 2.0**-16


@given(a=REALS, b=REALS)
@settings(max_examples=200, deadline=None)
def test_decode_of_product_at_power_two_within_stated_error(a: float, b: float) -> None:
    # Prepare
    ea, eb = _encode(np.array([a, b]))
    bound = (abs(a) + abs(b)) * 2.0**-17 + 2.0**-34
    # Execute
    (product,) = _decode([ea * eb % N], scale_power=2)
    # Assert (plus float64 rounding of a result up to 2^40)
    assert abs(product - a * b) <= bound + abs(a * b) * 2.0**-52


def test_value_above_bound_raises_overflow_naming_the_kind_and_bound() -> None:
    with pytest.raises(OverflowDetected, match=r"embedding b: .*bound 1048576"):
        quantise(np.array([0.0, -BOUND - 1.0]), F, BOUND, "embedding b")


def test_nan_and_inf_are_refused() -> None:
    with pytest.raises(OverflowDetected, match="bound"):
        quantise(np.array([1.0, np.nan]), F, BOUND, "x")
    with pytest.raises(OverflowDetected, match="bound"):
        quantise(np.array([1.0, np.inf]), F, BOUND, "x")


def test_decoded_value_at_its_declared_bound_is_refused() -> None:
    with pytest.raises(OverflowDetected, match=r"z_B: a decoded value reached 2\^4"):
        dequantise(np.array([16 << F], dtype=object), F, bound_bits=4, what="z_B")
    assert dequantise(np.array([(16 << F) - 1], dtype=object), F, bound_bits=4, what="z_B")[0] < 16


def test_wrapped_result_in_middle_third_is_detected() -> None:
    with pytest.raises(OverflowDetected, match="overflowed"):
        lift_signed([N // 2], N)


def test_residue_outside_ring_is_refused() -> None:
    with pytest.raises(ValueError, match=r"\[0, n\)"):
        lift_signed([N], N)


def test_band_edges_decode() -> None:
    limit = N // 3
    assert lift_signed([limit, N - limit], N) == [limit, -limit]


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
