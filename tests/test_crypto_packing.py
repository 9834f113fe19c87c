"""Slot packing: property tests against plain integer arithmetic, bounds and refusals."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vfl.crypto.encoding import OverflowDetected
from vfl.crypto.packing import SlotLayout


@st.composite
def combinations(draw: st.DrawFn) -> tuple[SlotLayout, list[np.ndarray], list[int]]:
    """A layout, 1..6 packed operands of one shape and non-negative scalars of weight <= T."""
    layout = SlotLayout(
        value_bits=draw(st.integers(1, 24)),
        max_terms=draw(st.integers(1, 300)),
        sigma=draw(st.integers(0, 40)),
        n_bits=draw(st.sampled_from([256, 512, 1024])),
    )
    rows, n_slots = draw(st.integers(1, 3)), draw(st.integers(0, 2 * layout.slots_per_int + 1))
    edge = layout.bias - 1
    value = st.one_of(st.integers(-edge, edge), st.sampled_from([-edge, edge, 0, 1, -1]))
    n_terms = draw(st.integers(1, min(6, layout.max_terms)))
    operands = [
        np.array(
            draw(st.lists(value, min_size=rows * n_slots, max_size=rows * n_slots)), object
        ).reshape(rows, n_slots)
        for _ in range(n_terms)
    ]
    budget = layout.max_terms
    scalars = []
    for _ in range(n_terms):
        c = draw(st.one_of(st.integers(0, budget), st.just(budget)))
        scalars.append(c)
        budget -= c
    return layout, operands, scalars


@given(case=combinations())
@settings(max_examples=200, deadline=None)
def test_linear_combination_of_packings_matches_integer_arithmetic(
    case: tuple[SlotLayout, list[np.ndarray], list[int]],
) -> None:
    # Prepare
    layout, operands, scalars = case
    n_slots = operands[0].shape[1]
    packed = [layout.pack(x) for x in operands]
    # Execute: sum_i c_i * pack(x_i), integer by integer, as Paillier does under encryption
    combined = [
        sum(c * p[j] for c, p in zip(scalars, packed, strict=True)) for j in range(len(packed[0]))
    ]
    result = layout.unpack(combined, n_slots, terms=sum(scalars))
    # Assert
    expected = sum(c * x for c, x in zip(scalars, operands, strict=True))
    assert result.shape == operands[0].shape
    assert (result == expected).all()
    assert all(0 <= p < 2 ** (layout.n_bits - 1) for p in combined)


def test_extreme_values_at_full_weight_do_not_carry() -> None:
    # Prepare
    layout = SlotLayout(value_bits=8, max_terms=16, sigma=4, n_bits=128)
    edge = layout.bias - 1
    row = np.array([[edge, -edge, edge, -edge, 0, 1, -1]], dtype=object)
    # Execute
    sums = [16 * p for p in layout.pack(row)]
    # Assert
    assert (layout.unpack(sums, 7, terms=16) == 16 * row).all()


def test_typical_layout_at_2048_bits() -> None:
    layout = SlotLayout(value_bits=32, max_terms=256, sigma=40, n_bits=2048)
    assert (layout.headroom_bits, layout.slot_bits, layout.slots_per_int) == (8, 81, 25)
    assert layout.ints_per_row(60) == 3


def test_layout_that_does_not_fit_is_refused_with_numbers() -> None:
    with pytest.raises(ValueError, match=r"81 bits .* 64-bit modulus \(at most 63 bits"):
        SlotLayout(value_bits=32, max_terms=256, sigma=40, n_bits=64)


@pytest.mark.parametrize("value", [2**20, -(2**20), 2**40])
def test_out_of_range_slot_is_refused(value: int) -> None:
    layout = SlotLayout(value_bits=12, max_terms=4, sigma=8, n_bits=256)
    with pytest.raises(OverflowDetected, match=r"row 0, column 1 .* 2\^20"):
        layout.pack(np.array([[0, value]], dtype=object))


def test_unpack_detects_digit_outside_reachable_band() -> None:
    layout = SlotLayout(value_bits=12, max_terms=4, sigma=8, n_bits=256)
    (packed,) = layout.pack(np.array([[5, -5]]))
    with pytest.raises(OverflowDetected, match="slot 0"):
        layout.unpack([packed - (5 + (1 << 20))], 2)  # slot 0 digit 0 is below the band


def test_unpack_detects_bits_above_the_last_slot() -> None:
    layout = SlotLayout(value_bits=12, max_terms=4, sigma=8, n_bits=256)
    (packed,) = layout.pack(np.array([[5, -5]]))
    with pytest.raises(OverflowDetected, match="above its 2 slots"):
        layout.unpack([packed + (1 << (2 * layout.slot_bits))], 2)


def test_unpack_refuses_weight_above_max_terms_and_ragged_input() -> None:
    layout = SlotLayout(value_bits=12, max_terms=4, sigma=8, n_bits=256)
    with pytest.raises(ValueError, match="max_terms=4"):
        layout.unpack([0], 1, terms=5)
    with pytest.raises(ValueError, match="do not form rows"):
        layout.unpack([0], 2 * layout.slots_per_int)


def test_pack_refuses_floats_and_1d() -> None:
    layout = SlotLayout(value_bits=12, max_terms=4, sigma=8, n_bits=256)
    with pytest.raises(TypeError, match="expected an integer"):
        layout.pack(np.array([[1.5]], dtype=object))
    with pytest.raises(ValueError, match="2-D"):
        layout.pack(np.array([1, 2]))
