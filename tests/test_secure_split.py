"""The secret-shared interactive layer over the in-memory channel (512-bit keys, tiny data).

* Same model: 200 encrypted steps give the plaintext network's losses step by step within
  the fixed-point bound, with SGD momentum and weight decay on the shares; ``U + V`` is the
  plaintext ``W_B``.
* Plaintext mode: same messages, no encryption, no masks; refused unless both configs allow it.
* Setup refuses mismatched parameters naming the field.
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.helpers import tiny_training_inputs
from tests.secure_helpers import CFG, build_pair, reference_run, refused_setup, settings
from vfl.crypto.randomness import owner_mode
from vfl.errors import PlaintextRefused, ProtocolError
from vfl.protocol.fixed_point import SecureScales
from vfl.protocol.messages import BackwardIns, SecureForwardIns, SecureForwardRes
from vfl.protocol.options import Mode, Randomness
from vfl.protocol.share_optim import ShareSgdConfig

MOMENTUM = ShareSgdConfig(lr=0.5, momentum=0.9, weight_decay=1e-3)
# Fixed-point bound on |Δloss| per step (docs/protocol.md): b is rounded to
# 2^-21, so |Δz_B| <= (d·max|W_B| + 1)·2^-21 < 3e-6 here; everything else is exact or below
# 2^-36. Over 200 steps the difference stays within float32 noise of that bound.
LOSS_TOL = 1e-5


def test_encrypted_training_matches_the_plaintext_network_over_200_steps() -> None:
    # Prepare
    pair = build_pair(tiny_training_inputs(), e_settings=settings(sgd=MOMENTUM))
    batches = pair.batches(200)
    expected = reference_run(pair, batches, MOMENTUM)
    # Execute
    pair.start()
    got = [pair.model.train_step(step, batch) for step, batch in enumerate(batches)]
    probs = pair.model.predict(999, batches[0].users, np.arange(6).reshape(1, 6).repeat(4, 0))
    pair.stop()
    # Assert: step-by-step losses within the fixed-point bound, U + V is the plaintext W_B
    assert len(got) == 200
    np.testing.assert_allclose(got, expected["loss"], rtol=0, atol=LOSS_TOL)
    np.testing.assert_allclose(pair.w_b(), expected["final_w_b"], atol=1e-5)
    assert pair.model.peer.share.sgd.buffer is not None  # momentum was kept as shares
    assert expected["loss"][-1] < expected["loss"][0]
    assert probs.shape == (4, 6) and np.all((probs > 0) & (probs < 1))


def test_plaintext_mode_has_the_same_messages_and_the_same_losses() -> None:
    # Prepare: the same job, once encrypted and once in plaintext mode (both configs allow it)
    runs = {}
    for mode in (Mode.ENCRYPTED, Mode.PLAINTEXT):
        pair = build_pair(
            tiny_training_inputs(), e_settings=settings(mode, MOMENTUM), allow=(True, True)
        )
        batches = pair.batches(12)
        # Execute
        pair.start()
        losses = [pair.model.train_step(step, batch) for step, batch in enumerate(batches)]
        pair.stop()
        runs[mode] = (losses, pair)
    # Assert: identical message types in identical order, equal losses, no ciphertext in
    # plaintext mode and no mask (E's gradient share is the gradient itself)
    enc, plain = runs[Mode.ENCRYPTED][1], runs[Mode.PLAINTEXT][1]
    for a, b in ((enc.e_rec, plain.e_rec), (enc.p_rec, plain.p_rec)):
        assert [type(m) for m in a.received] == [type(m) for m in b.received]
    np.testing.assert_allclose(runs[Mode.ENCRYPTED][0], runs[Mode.PLAINTEXT][0], atol=1e-9)
    payloads = [m.enc_zb for m in plain.e_rec.of_type(SecureForwardRes)]
    assert all(p.startswith(b"VFLP") for p in payloads)
    assert all(b"VFLE" not in p for p in payloads)
    assert np.abs(plain.model.peer.share.u.astype(float)).max() < 2.0**60


def test_plaintext_mode_is_refused_unless_both_parties_allow_it() -> None:
    # E's own config does not allow it: refused before anything is sent, naming E and the key
    with pytest.raises(PlaintextRefused, match=r"party 'E'.*\[party\] allow_plaintext = true"):
        build_pair(tiny_training_inputs(), e_settings=settings(Mode.PLAINTEXT), allow=(False, True))
    # P's config does not allow it: P refuses at setup, E is told why, and P stops
    pair = build_pair(
        tiny_training_inputs(),
        e_settings=settings(Mode.PLAINTEXT),
        p_settings=settings(Mode.ENCRYPTED),
        allow=(True, False),
        timeout=5,
    )
    at_e, at_p = refused_setup(pair)
    assert "party 'P' refuses the plaintext protocol" in str(at_e)
    assert isinstance(at_p[0], PlaintextRefused) and "allow_plaintext" in str(at_p[0])


def test_plaintext_mode_is_never_the_default() -> None:
    from vfl.config.job import TrainConfig
    from vfl.protocol.secure_layer import LayerSettings

    assert TrainConfig().protocol is Mode.ENCRYPTED
    assert LayerSettings().mode is Mode.ENCRYPTED


def test_mismatched_parameters_stop_both_sides_naming_the_field() -> None:
    # Prepare: P was configured with a weaker statistical parameter than E
    pair = build_pair(
        tiny_training_inputs(),
        e_settings=settings(),
        p_settings=settings(scales=SecureScales(sigma=30)),
        timeout=5,
    )
    # Execute
    at_e, at_p = refused_setup(pair)
    # Assert: E is told which field differs, with both values; P stops as well
    assert "sigma: P has 30, E has 40" in str(at_e)
    assert at_p and "sigma" in str(at_p[0])
    assert not pair.e_rec.of_type(SecureForwardRes)  # no ciphertext of P's was ever sent


def test_plain_split_requests_are_refused() -> None:
    pair = build_pair(tiny_training_inputs(), e_settings=settings())
    with pytest.raises(ProtocolError, match="does not accept BackwardIns"):
        pair.server.handle(BackwardIns(step=0, grads=np.zeros((2, 3), np.float32)))
    with pytest.raises(ProtocolError, match="before setup"):
        pair.server.handle(SecureForwardIns(step=0, users=np.array([0]), train=True, enc_u=b""))


def test_evaluation_asks_p_once_per_user_and_step() -> None:
    # Prepare
    pair = build_pair(tiny_training_inputs(), e_settings=settings())
    pair.start()
    users = pair.batches(1)[0].users
    items = np.arange(6).reshape(1, 6).repeat(len(users), 0)
    # Execute: validation and test score the same users at one step, then a new step
    first = pair.model.predict(7, users, items)
    again = pair.model.predict(7, users, items)
    pair.model.predict(8, users, items)
    pair.stop()
    # Assert: same scores, and P was asked for these users once per step only
    np.testing.assert_array_equal(first, again)
    evals = [m for m in pair.p_rec.of_type(SecureForwardIns) if not m.train]
    assert [m.step for m in evals] == [7, 8]
    assert evals[0].enc_u and not evals[1].enc_u  # [[U]] is resent only when U changed


@pytest.mark.parametrize("rerandomise", [Randomness.FULL, Randomness.SHORT_EXPONENT])
def test_background_randomness_pools_give_the_same_model(rerandomise: Randomness) -> None:
    # Prepare: r^n precomputed by worker processes (owner CRT for own encryptions)
    pair = build_pair(
        tiny_training_inputs(),
        e_settings=settings(sgd=MOMENTUM, precompute=True, rerandomise=rerandomise),
    )
    batches = pair.batches(6)
    expected = reference_run(pair, batches, MOMENTUM)
    # Execute
    pair.start()
    got = [pair.model.train_step(step, batch) for step, batch in enumerate(batches)]
    pair.stop()
    # Assert: the same model; each side's own encryptions drew owner_mode(plan), its
    # re-randomisations under the peer's key the plan's mode
    np.testing.assert_allclose(got, expected["loss"], rtol=0, atol=LOSS_TOL)
    assert CFG.passive_out == pair.server.share.v.shape[0]
    for side in (pair.model.peer.share, pair.server.share):
        own_key = side.own.public_key  # type: ignore[attr-defined]
        modes = {pool.public_key == own_key: pool.mode for pool in side._pools}
        assert modes == {True: owner_mode(rerandomise), False: rerandomise}


@pytest.mark.parametrize("mode", [Randomness.OWNER_CRT, Randomness.OWNER_SHORT_EXPONENT])
def test_owner_modes_cannot_rerandomise_for_the_other_party(mode: Randomness) -> None:
    with pytest.raises(ValueError, match=mode.value):
        settings(rerandomise=mode)


def test_share_sgd_sums_to_torch_sgd_with_momentum_and_weight_decay() -> None:
    # Prepare: W = U + V at scale 2^56, gradients split into a masked share and its mask
    import torch

    from vfl.crypto.encoding import quantise
    from vfl.protocol.fixed_point import uniform_mask
    from vfl.protocol.share_optim import ShareSgd

    scales, rng = SecureScales(), np.random.default_rng(5)
    cfg = ShareSgdConfig(lr=0.3, momentum=0.9, weight_decay=0.01)
    w0 = rng.normal(0, 0.3, (3, 4))
    u = quantise(w0, scales.w_bits, 64.0, "w") - uniform_mask((3, 4), 100)
    v = quantise(w0, scales.w_bits, 64.0, "w") - u
    e_opt, p_opt = ShareSgd(cfg), ShareSgd(cfg)
    w = torch.tensor(w0, dtype=torch.float64, requires_grad=True)
    ref = torch.optim.SGD([w], lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    # Execute: 100 steps
    for _ in range(100):
        g = rng.normal(0, 0.1, (3, 4))
        big_g, mask = quantise(g, scales.w_bits, 64.0, "g"), uniform_mask((3, 4), 110)
        u, v = e_opt.step(u, big_g - mask), p_opt.step(v, mask)
        w.grad = torch.tensor(g)
        ref.step()
    # Assert: the shares sum to torch's weights (to the fixed-point resolution)
    np.testing.assert_allclose((u + v).astype(float) / 2.0**scales.w_bits, w.detach(), atol=1e-12)
    assert np.abs(u.astype(float)).min() > 2.0**90  # each share alone is noise
