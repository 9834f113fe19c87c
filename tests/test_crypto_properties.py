"""Property tests of fixed-point encoding and headroom-checked packing against integer arithmetic.

Every packed test decrypts real Paillier ciphertexts (512-bit key) and compares with plain
Python integers; operands are placed at their bounds so that the headroom check must fire
exactly when the worst case overflows a slot.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from vfl.crypto.encoding import FixedPoint, HeadroomExceeded, OverflowDetected
from vfl.crypto.packed import PackedMatrix, PackingLayout, linear_combination
from vfl.crypto.paillier import KeyPair
from vfl.crypto.randomness import ShortExponentSource
from vfl.crypto.signed_packing import pack_rows, unpack_rows

EXAMPLES = settings(max_examples=200, deadline=None)
KEY = KeyPair.generate(512)
SOURCE = ShortExponentSource(KEY.public_key)
N = KEY.public_key.n


def _sign(x: int) -> int:
    return (x > 0) - (x < 0)


def _wrong_without_check(layout: PackingLayout, expected: np.ndarray) -> bool:
    """True if ``expected`` or ``-expected`` (operands negated, still within their symmetric
    bounds) would not survive packing and unpacking: a silent overflow the check prevents.

    Balanced digits also hold ``-2^(w-1)``, so for that one value only the negated operands
    overflow; bounds carry no sign, so the check must refuse both.
    """
    event("refused: the unchecked result would be wrong")
    w, k = layout.slot_bits, layout.slots
    for result in (expected, -expected):
        try:
            back = unpack_rows(pack_rows(result, w, k), w, k, result.shape[1])
        except OverflowDetected:
            return True
        if (back != result).any():
            return True
    return False


@st.composite
def operands(draw: st.DrawFn, count: int | None = None) -> tuple[PackingLayout, list, list, list]:
    """A layout, signed scalars, bounds and matrices with slot (0, 0) at ``sign(s_j) * b_j``."""
    layout = PackingLayout(draw(st.integers(12, 48)), 512)
    terms, k = count or draw(st.integers(1, 4)), layout.slots
    rows, cols = draw(st.integers(1, 2)), draw(st.sampled_from([1, 2, k - 1, k, k + 1, 2 * k + 1]))
    scalars = [draw(st.integers(-(2**12), 2**12)) for _ in range(terms)]
    cap = layout.capacity  # bounds near the capacity too, so overflow cases are common
    near = st.one_of(st.integers(1, cap), st.integers(cap // 4, cap), st.just(cap))
    bounds = [draw(near) for _ in range(terms)]
    matrices = []
    for s, b in zip(scalars, bounds, strict=True):
        cells = draw(st.lists(st.integers(-b, b), min_size=rows * cols, max_size=rows * cols))
        x = np.array(cells, dtype=object).reshape(rows, cols)
        x[0, 0] = (_sign(s) or 1) * b
        matrices.append(x)
    return layout, scalars, bounds, matrices


def _encrypt(layout: PackingLayout, x: np.ndarray, bound: int) -> PackedMatrix:
    return PackedMatrix.encrypt(KEY.public_key, layout, x, bound=bound, pool=SOURCE)


@given(a=st.floats(-(2.0**20), 2.0**20), frac_bits=st.integers(0, 30))
@EXAMPLES
def test_fixed_point_round_trip_within_half_resolution(a: float, frac_bits: int) -> None:
    codec = FixedPoint(N, frac_bits=frac_bits, bound=2.0**20)
    back = codec.raw_decode(codec.raw_encode([a]))[0]
    assert abs(back - a) <= 2.0 ** -(frac_bits + 1)


@given(values=st.lists(st.floats(-(2.0**10), 2.0**10), min_size=1, max_size=20))
@EXAMPLES
def test_fixed_point_sum_is_exact_sum_of_encodings(values: list[float]) -> None:
    codec = FixedPoint(N, frac_bits=16, bound=2.0**10)
    total = sum(codec.raw_encode(values)) % N
    expected = sum(int(v) for v in codec.encode(values))
    assert codec.raw_lift([total]) == [expected]
    assert abs(codec.raw_decode([total])[0] - sum(values)) <= len(values) * 2.0**-17


@given(excess=st.floats(1e-9, 1e6), negative=st.booleans())
@EXAMPLES
def test_fixed_point_refuses_values_outside_the_bound(excess: float, negative: bool) -> None:
    codec = FixedPoint(N, frac_bits=16, bound=2.0**10)
    value = (2.0**10) * (1 + excess) * (-1 if negative else 1)
    with pytest.raises(OverflowDetected, match="bound"):
        codec.encode([value])


@given(case=operands(count=2))
@EXAMPLES
def test_packed_add_matches_integers_and_refuses_exactly_on_overflow(case: tuple) -> None:
    # Prepare: both operands positive at slot (0, 0), so |sum| there is b_0 + b_1
    layout, _, bounds, (x, y) = case
    x[0, 0], y[0, 0] = bounds
    ex, ey = _encrypt(layout, x, bounds[0]), _encrypt(layout, y, bounds[1])
    expected = x + y
    # Execute / Assert
    if sum(bounds) > layout.capacity:
        with pytest.raises(HeadroomExceeded, match="add packed ciphertexts"):
            ex + ey
        assert _wrong_without_check(layout, expected)
    else:
        assert ((ex + ey).decrypt(KEY.private_key) == expected).all()


@given(case=operands(count=2))
@EXAMPLES
def test_packed_plus_plaintext_matches_integers(case: tuple) -> None:
    layout, _, bounds, (x, y) = case
    x[0, 0], y[0, 0] = -bounds[0], -bounds[1]
    ex = _encrypt(layout, x, bounds[0])
    if sum(bounds) > layout.capacity:
        with pytest.raises(HeadroomExceeded, match="plaintext"):
            ex + y
        assert _wrong_without_check(layout, x + y)
    else:
        assert ((ex + y).decrypt(KEY.private_key) == x + y).all()
        assert ((ex - (-y)).decrypt(KEY.private_key) == x + y).all()


@given(case=operands(count=1))
@EXAMPLES
def test_signed_scalar_product_matches_integers(case: tuple) -> None:
    layout, (s,), (b,), (x,) = case
    ex = _encrypt(layout, x, b)
    if abs(s) * b > layout.capacity:
        with pytest.raises(HeadroomExceeded, match=f"scalar {s}"):
            ex * s
        assert _wrong_without_check(layout, s * x)
    else:
        product = ex * s
        assert product.bound == abs(s) * b
        assert (product.decrypt(KEY.private_key) == s * x).all()


@given(case=operands())
@EXAMPLES
def test_linear_combination_matches_integers_and_refuses_exactly(case: tuple) -> None:
    # Prepare: slot (0, 0) of every operand has the sign of its scalar, so the worst case
    # sum_j |s_j| b_j is reached there
    layout, scalars, bounds, matrices = case
    packed = [_encrypt(layout, x, b) for x, b in zip(matrices, bounds, strict=True)]
    expected = sum(s * x for s, x in zip(scalars, matrices, strict=True))
    worst = sum(abs(s) * b for s, b in zip(scalars, bounds, strict=True))
    assert abs(expected[0, 0]) == worst
    # Execute / Assert
    if worst > layout.capacity:
        with pytest.raises(HeadroomExceeded, match="linear combination"):
            linear_combination(scalars, packed)
        assert _wrong_without_check(layout, expected)
    else:
        got = linear_combination(scalars, packed).decrypt(KEY.private_key)
        assert (got == expected).all()


@given(
    value_bits=st.integers(0, 40),
    scalar_bits=st.integers(0, 24),
    summands=st.integers(1, 6),
    sigma=st.integers(0, 60),
    data=st.data(),
)
@EXAMPLES
def test_layout_from_bounds_holds_any_masked_combination(
    value_bits: int, scalar_bits: int, summands: int, sigma: int, data: st.DataObject
) -> None:
    # Prepare: values, scalars and a mask at up to their declared bounds
    layout = PackingLayout.for_bounds(
        n_bits=512, value_bits=value_bits, summands=summands, scalar_bits=scalar_bits, sigma=sigma
    )
    vmax, smax = 2**value_bits - 1, 2**scalar_bits - 1
    result_bits = value_bits + scalar_bits + (summands - 1).bit_length()
    extreme = st.sampled_from([-vmax, vmax])
    value = st.one_of(extreme, st.integers(-vmax, vmax))
    xs = [np.array([[data.draw(value) for _ in range(3)]], object) for _ in range(summands)]
    scalars = [data.draw(st.sampled_from([-smax, smax])) for _ in range(summands)]
    mask_max = 2 ** (result_bits + sigma) - 1 if sigma else 0
    mask = np.array([[data.draw(st.sampled_from([-mask_max, mask_max])) for _ in range(3)]], object)
    # Execute: sum_j s_j [[x_j]] + R, never refused within the declared bounds
    packed = [_encrypt(layout, x, vmax) for x in xs]
    masked = linear_combination(scalars, packed) + mask
    # Assert
    expected = sum(s * x for s, x in zip(scalars, xs, strict=True)) + mask
    assert (masked.decrypt(KEY.private_key) == expected).all()


@given(case=operands(count=1), data=st.data())
@EXAMPLES
def test_plain_matrix_times_packed_matches_integer_matmul(case: tuple, data: st.DataObject) -> None:
    # Prepare: M (m x rows); X's slot (j, 0) gets the sign of the heaviest row of M
    layout, _, (b,), (x,) = case
    m = data.draw(st.integers(1, 3))
    entries = st.integers(-(2**10), 2**10)
    mat = np.array([[data.draw(entries) for _ in range(x.shape[0])] for _ in range(m)], object)
    heaviest = max(range(m), key=lambda i: sum(abs(a) for a in mat[i]))
    for j in range(x.shape[0]):
        x[j, 0] = (_sign(mat[heaviest, j]) or 1) * b
    worst = sum(abs(a) for a in mat[heaviest]) * b
    ex = _encrypt(layout, x, b)
    expected = np.dot(mat, x)
    # Execute / Assert
    if worst > layout.capacity:
        with pytest.raises(HeadroomExceeded, match="@ packed"):
            ex.matmul(mat)
        assert _wrong_without_check(layout, expected)
    else:
        assert (ex.matmul(mat).decrypt(KEY.private_key) == expected).all()


@given(case=operands(count=1), data=st.data())
@EXAMPLES
def test_per_group_row_sums_match_integers(case: tuple, data: st.DataObject) -> None:
    layout, _, (b,), (x,) = case
    rows = x.shape[0]
    x = np.vstack([x, x])  # up to 4 rows
    x[:, 0] = b
    groups = [data.draw(st.integers(0, 2)) for _ in range(2 * rows)]
    expected = np.zeros((3, x.shape[1]), dtype=object)
    for i, g in enumerate(groups):
        expected[g] += x[i]
    worst = max(groups.count(k) for k in range(3)) * b
    ex = _encrypt(layout, x, b)
    if worst > layout.capacity:
        with pytest.raises(HeadroomExceeded, match="aggregate"):
            ex.aggregate_rows(groups, 3)
        assert _wrong_without_check(layout, expected)
    else:
        got = ex.aggregate_rows(groups, 3).decrypt(KEY.private_key)
        assert (got == expected).all()


def test_packed_matrix_round_trips_the_wire_with_agreed_geometry() -> None:
    # Prepare
    layout = PackingLayout.for_bounds(n_bits=512, value_bits=20, summands=4, scalar_bits=8)
    x = np.array([[1, -2, 3], [-(2**20) + 1, 0, 2**20 - 1]], dtype=object)
    enc = PackedMatrix.encrypt(KEY.public_key, layout, x, bound=2**20 - 1)
    # Execute
    data = enc.serialise(pool=SOURCE)
    back = PackedMatrix.deserialise(data, KEY.public_key, layout, 3, 2**20 - 1)
    # Assert: same values, fresh ciphertexts
    assert (back.decrypt(KEY.private_key) == x).all()
    assert not set(back.cipher.ciphertexts) & set(enc.cipher.ciphertexts)
    with pytest.raises(ValueError, match="does not hold 40 packed"):
        PackedMatrix.deserialise(data, KEY.public_key, layout, 40, 1)
    with pytest.raises(HeadroomExceeded, match="packed matrix"):
        PackedMatrix.deserialise(data, KEY.public_key, layout, 3, layout.capacity + 1)


def test_packed_operations_refuse_mismatched_operands() -> None:
    layout = PackingLayout(40, 512)
    x = np.array([[1, 2]], dtype=object)
    enc = PackedMatrix.encrypt(KEY.public_key, layout, x)
    other_layout = PackedMatrix.encrypt(KEY.public_key, PackingLayout(41, 512), x)
    with pytest.raises(ValueError, match="cannot combine"):
        enc + other_layout
    with pytest.raises(ValueError, match="does not match"):
        enc + np.array([[1, 2, 3]], dtype=object)
    with pytest.raises(TypeError, match="integer"):
        enc * 1.5  # type: ignore[operator]
    with pytest.raises(HeadroomExceeded, match="declared bound 1"):
        PackedMatrix.encrypt(KEY.public_key, layout, x, bound=1)
    with pytest.raises(ValueError, match="group ids"):
        enc.aggregate_rows([3], 2)


def test_layout_from_bounds_width_and_slots_at_2048_bits() -> None:
    layout = PackingLayout.for_bounds(n_bits=2048, value_bits=61, summands=32, scalar_bits=21)
    assert (layout.slot_bits, layout.slots) == (61 + 21 + 5 + 40 + 2, 15)
    assert PackingLayout.for_bounds(n_bits=2048, value_bits=8, sigma=0).slot_bits == 10
