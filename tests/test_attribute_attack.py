"""E's attribute-inference attack on ``z_B`` and what P's embedding noise does to it.

The attack (:mod:`vfl.evaluation.attribute_attack`) is checked on data with a known answer,
then run on what E actually decrypts from P's layer (plaintext mode of the same protocol,
which draws the same noise as the encrypted one) with and without the protection.
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.secure_helpers import settings
from vfl.evaluation.attribute_attack import Attribute, AttributeKind, attribute_inference
from vfl.protocol.options import Mode
from vfl.protocol.secure_layer import ActiveShare, PassiveShare, initial_factor, initial_rotation

N, D = 1000, 8


def _population(seed: int = 0) -> tuple[np.ndarray, list[Attribute], np.ndarray]:
    """P's features (age-like number, 2-class code), P's embedding b, E's weak own feature."""
    rng = np.random.default_rng(seed)
    age = rng.normal(0.0, 1.0, N)
    gender = rng.integers(0, 2, N)
    other = rng.normal(0.0, 1.0, (N, D - 2))
    feats = np.column_stack([age, 2.0 * gender - 1.0, other])
    q, _ = np.linalg.qr(rng.normal(0.0, 1.0, (D, D)))  # a well-conditioned mixing
    b = np.tanh(0.3 * feats @ q)
    own = (age + rng.normal(0.0, 2.0, N))[:, None]  # E's own, weakly age-related feature
    attrs = [
        Attribute("age", AttributeKind.NUMERIC, age),
        Attribute("gender", AttributeKind.CATEGORICAL, gender),
    ]
    return b, attrs, own


def test_attack_on_a_linear_image_of_the_attributes() -> None:
    b, attrs, own = _population()
    w = np.random.default_rng(1).normal(0.0, 0.3, (D, D))  # unknown full-rank W_B
    report = attribute_inference(own, b @ w, attrs, known=100, seed=0)
    age, gender = report.score("age"), report.score("gender")
    assert report.known == 100 and report.n_test == N - 100
    # E's own feature explains ~20% of age; z_B nearly all of it; gender from z_B only
    assert 0.1 < age.own < 0.35 and age.with_zb > 0.95 and age.excess > 0.6
    assert abs(gender.own - gender.chance) < 0.06 and gender.with_zb > 0.95
    # z_B independent of P's features adds nothing
    noise = np.random.default_rng(2).normal(0.0, 1.0, (N, D))
    blind = attribute_inference(own, noise, attrs, known=100, seed=0)
    assert abs(blind.score("age").excess) < 0.1 and abs(blind.score("gender").excess) < 0.08
    assert set(report.as_dict()["scores"]) == {"age", "gender"}  # type: ignore[arg-type]


def test_attack_refuses_bad_input_by_name() -> None:
    b, attrs, own = _population()
    with pytest.raises(ValueError, match="same 1000 users"):
        attribute_inference(own[:10], b, attrs)
    with pytest.raises(ValueError, match="known = 999"):
        attribute_inference(own, b, attrs, known=999)
    bad = b.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="z_B: values must be finite"):
        attribute_inference(own, bad, attrs)
    with pytest.raises(KeyError, match="attacked"):
        attribute_inference(own, b, attrs).score("zip")


def _decrypted_zb(b: np.ndarray, noise: float) -> np.ndarray:
    """What E decodes from P's forward payload for every user (plaintext mode of the layer)."""
    s = settings(Mode.PLAINTEXT, embedding_noise=noise)
    rng = np.random.default_rng(5)
    zeros = np.zeros((D, D), dtype=object)
    q, g = initial_rotation(D, s.scales, rng), initial_factor(D, D, s.scales, rng)
    e = ActiveShare(u=zeros, rotation=q, settings=s, keys=None, allow_plaintext=True)
    p = PassiveShare(v=zeros, factor=g, settings=s, keys=None, allow_plaintext=True, noise_seed=9)
    e.set_peer(b"", scheme=s.scheme), p.set_peer(b"", scheme=s.scheme)
    e.accept_init(p.init_reply(e.init_payload()))  # the setup exchange
    payload, _ = p.forward_payload(b, e.u_payload(), train=False, step=3, users=np.arange(N))
    return e.decode_zb(payload, N)


def test_embedding_noise_cuts_what_e_infers_from_z_b() -> None:
    b, attrs, own = _population()
    clean = attribute_inference(own, _decrypted_zb(b, 0.0), attrs, known=100, seed=0)
    noisy = attribute_inference(own, _decrypted_zb(b, 1.0), attrs, known=100, seed=0)
    for name in ("age", "gender"):
        assert noisy.score(name).excess < 0.6 * clean.score(name).excess, name
