"""The initial shares of ``W_B`` (issue 14, item 7): nothing either party holds before the first
``z_B`` is correlated with ``W_B(0)``.

Each draw runs the real setup exchange under 512-bit Paillier keys (E's ``[[Qᵀ]]_E``, P's
``[[W_B(0)ᵀ - Mᵀ]]_E``) and compares what each party holds with ``W_B(0) = Q·G``. The same
statistics on the earlier scheme (each party drew half of the variance) show the leak the
tests would catch.
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.secure_helpers import TEST_FLOOR, keys, settings
from vfl.crypto.encoding import quantise
from vfl.errors import ProtocolError
from vfl.protocol.fixed_point import SecureScales
from vfl.protocol.initial_shares import initial_weight
from vfl.protocol.options import Mode
from vfl.protocol.secure_layer import ActiveShare, PassiveShare, initial_factor, initial_rotation

D = H = 4  # square W_B, as in the issue: z_B is then an invertible image of b
DRAWS = 150
S = 2.0 ** SecureScales().w_bits


def _pair(seed: int, mode: Mode = Mode.ENCRYPTED) -> tuple[ActiveShare, PassiveShare]:
    s = settings(mode)
    plain = mode is Mode.PLAINTEXT
    rng_e, rng_p = np.random.default_rng([seed, 1]), np.random.default_rng([seed, 2])
    zeros = np.zeros((D, H), dtype=object)
    e = ActiveShare(
        u=zeros,
        rotation=initial_rotation(D, s.scales, rng_e),
        settings=s,
        keys=None if plain else keys("E"),
        allow_plaintext=plain,
        floor=TEST_FLOOR,
    )
    p = PassiveShare(
        v=zeros,
        factor=initial_factor(D, H, s.scales, rng_p),
        settings=s,
        keys=None if plain else keys("P"),
        allow_plaintext=plain,
        floor=TEST_FLOOR,
    )
    e.set_peer(p.own.key_bytes(), scheme=s.scheme)
    p.set_peer(e.own.key_bytes(), scheme=s.scheme)
    return e, p


def _draws() -> dict[str, np.ndarray]:
    """Per draw: W_B(0), E's Q and U0, P's G and V0 (floats at the weight scale)."""
    out: dict[str, list[np.ndarray]] = {k: [] for k in ("w", "q", "u", "g", "v")}
    for seed in range(DRAWS):
        e, p = _pair(seed)
        q, g = e.rotation, p.factor
        assert q is not None and g is not None
        e.accept_init(p.init_reply(e.init_payload()))  # the setup round trip
        w = initial_weight(q, g, e.scales)
        assert ((e.u + p.v) == (q @ g)).all()  # the shares sum to Q·G exactly
        out["w"].append(w)
        out["q"].append(q.astype(float) / 2.0**e.scales.init_bits)
        out["g"].append(g.astype(float) / 2.0 ** (e.scales.w_bits - e.scales.init_bits))
        out["u"].append(e.u.astype(float) / S)
        out["v"].append(p.v.astype(float) / S)
        e.close(), p.close()
    return {k: np.array(v) for k, v in out.items()}


@pytest.fixture(scope="module")
def draws() -> dict[str, np.ndarray]:
    return _draws()


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(np.ravel(a), np.ravel(b))[0, 1])


def _old_halves(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The earlier scheme: each party's own Xavier half, half the variance each."""
    std = np.sqrt(2.0 / (D + H)) / np.sqrt(2.0)
    rng = np.random.default_rng(seed)
    return rng.normal(0.0, std, (D, H)), rng.normal(0.0, std, (D, H))


def test_no_share_is_correlated_with_the_initial_weight(draws) -> None:
    w = draws["w"]
    # W_B(0) is Xavier-normal: mean 0, variance 2/(d+h)
    assert abs(w.mean()) < 0.03 and abs(w.var() - 2.0 / (D + H)) < 0.05
    # neither share, nor E's Q, nor P's G is correlated with W_B(0), entry by entry
    assert abs(_corr(draws["u"], w)) < 0.1
    assert abs(_corr(draws["v"], w)) < 0.1
    assert abs(_corr(draws["g"], w)) < 0.1
    q_row0 = draws["q"][:, :, :1].repeat(H, axis=2)  # Q_i0 against W_ij
    assert abs(_corr(q_row0, w)) < 0.1
    # each share is a mask 2^sigma times larger than |W_B(0)|
    assert np.abs(draws["u"]).min() > 2.0**30 * np.abs(w).max()
    # the detector would catch the earlier scheme: each half explains half the variance
    halves = [_old_halves(seed) for seed in range(DRAWS)]
    old_u, old_w = np.array([a for a, _ in halves]), np.array([a + b for a, b in halves])
    assert _corr(old_u, old_w) > 0.6


def _estimate(z: np.ndarray, guess: np.ndarray) -> np.ndarray:
    """E's regularised least-squares ``b`` from ``z = b·W`` taking ``W ≈ guess`` (ridge with
    ``λ = tr(guess·guessᵀ)/d``: the rest of ``W`` as noise of the same size)."""
    gram = guess @ guess.T
    return z @ guess.T @ np.linalg.inv(gram + np.trace(gram) / D * np.eye(D))


def test_e_cannot_estimate_b_from_the_first_z_b(draws) -> None:
    # E's least-squares estimate of a batch's b from z_B = b·W_B(0), using what it holds
    rng = np.random.default_rng(7)
    new, old = [], []
    for i, (w, u) in enumerate(zip(draws["w"], draws["u"], strict=True)):
        b = rng.uniform(-1.0, 1.0, (32, D))
        z = b @ w
        new.append(_corr(_estimate(z, u), b))  # from U0
        new.append(_corr(_estimate(z, draws["q"][i]), b))  # from Q
        half, other = _old_halves(i)
        old.append(_corr(_estimate(b @ (half + other), half), b))
    # no better than chance now; the earlier scheme gave correlation around 0.6
    assert abs(np.mean(new)) < 0.05
    assert np.mean(old) > 0.5


def test_plaintext_mode_starts_from_the_same_weight() -> None:
    enc_e, enc_p = _pair(3)
    plain_e, plain_p = _pair(3, Mode.PLAINTEXT)
    for e, p in ((enc_e, enc_p), (plain_e, plain_p)):
        e.accept_init(p.init_reply(e.init_payload()))
    assert ((enc_e.u + enc_p.v) == (plain_e.u + plain_p.v)).all()
    assert (plain_p.v == 0).all()  # plaintext mode: no masks


def test_fresh_and_resumed_sides_do_not_mix() -> None:
    # E starts afresh while P resumes its V: P refuses
    e, p = _pair(1)
    p.factor = None
    with pytest.raises(ProtocolError, match="E starts afresh"):
        p.init_reply(e.init_payload())
    # P sends no share to a fresh E: E refuses
    e, p = _pair(2)
    with pytest.raises(ProtocolError, match="P sent no initial share"):
        e.accept_init(b"")
    # P never serves a forward before its initial share exists
    b = quantise(np.zeros((2, D)), 0, 1.0, "b").astype(float)
    with pytest.raises(ProtocolError, match="before the initial shares"):
        p.forward_payload(b, e.u_payload(), train=False)
