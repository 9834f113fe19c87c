"""Encrypted split learning (secret-shared W_B, Paillier) over the in-memory channel.

* It trains the same model as the plaintext network with SGD on ``W_B`` (losses agree).
* Recorded traffic: only ciphertexts cross; what E decrypts of the weight update is masked.
"""

from __future__ import annotations

import copy
import threading

import numpy as np
import pytest
import torch

from tests.helpers import tiny_training_inputs
from vfl.config.job import ModelConfig, TrainConfig
from vfl.crypto.paillier import EncryptedVector, KeyPair
from vfl.models.bottom import PassiveBottom
from vfl.protocol.endpoint import Endpoint
from vfl.protocol.messages import ForwardIns, SecureBackwardIns, SecureBackwardRes, SetupIns
from vfl.protocol.secure_layer import (
    ActiveShare,
    Packer,
    PassiveShare,
    SecureScales,
    initial_half,
)
from vfl.protocol.secure_split import PassiveSecureServer, SecurePassivePeer
from vfl.protocol.serde import decode
from vfl.training.inputs import UserBatcher
from vfl.training.secure import SecureSplitRecommender

CFG = ModelConfig(
    embedding_dim=4,
    passive_hidden=(6,),
    passive_out=3,
    active_hidden=(6,),
    interactive_out=4,
    top_hidden=(4,),
)
TRAIN = TrainConfig(learning_rate=0.01, users_per_step=4)
WB_LR = 0.5
SCALES = SecureScales()
KEYS = {"E": KeyPair.generate(512), "P": KeyPair.generate(512)}


def _server(p, share, channel, *, timeout: float) -> PassiveSecureServer:  # type: ignore[no-untyped-def]
    """P's secure server over ``channel`` with a fresh bottom model."""
    bottom = PassiveBottom(p.n_numeric, p.cardinalities, CFG.passive_hidden, CFG.passive_out)
    return PassiveSecureServer(
        endpoint=Endpoint(channel, job_id="t", timeout=timeout),
        bottom=bottom,
        numeric=p.numeric,
        categorical=p.categorical,
        share=share,
        optimizer=torch.optim.Adam(bottom.parameters(), lr=0.01),
    )


@pytest.fixture()
def secure():
    torch.manual_seed(0)
    al, split, inputs, p, e_ch, p_ch = tiny_training_inputs()
    d, h = CFG.passive_out, CFG.interactive_out
    e_share = ActiveShare(KEYS["E"], initial_half(d, h, SCALES, np.random.default_rng(1)), SCALES)
    p_share = PassiveShare(KEYS["P"], initial_half(d, h, SCALES, np.random.default_rng(2)), SCALES)
    w0 = (e_share.u + p_share.v).astype(float) / 2.0**SCALES.w_bits
    server = _server(p, p_share, p_ch, timeout=20)
    bottom = server.bottom
    peer = SecurePassivePeer(Endpoint(e_ch, job_id="t", timeout=20), e_share)
    model = SecureSplitRecommender(
        inputs, CFG, TRAIN, n_users=len(al), peer=peer, wb_learning_rate=WB_LR
    )
    batches = list(
        UserBatcher(split, users_per_step=4, negatives_per_positive=2).epoch(
            np.random.default_rng(1)
        )
    )[:4]
    ref = {"head": copy.deepcopy(model.head), "bottom": copy.deepcopy(bottom), "w0": w0}
    return model, server, p, batches, ref, e_ch, p_ch, split


def _reference(ref, p, batches):
    """The plaintext network: same weights, Adam on both sides' own layers, SGD on W_B."""
    head, bottom = ref["head"], ref["bottom"]
    w_b = torch.tensor(ref["w0"], dtype=torch.float32, requires_grad=True)
    opt_e = torch.optim.Adam(head.parameters(), lr=0.01, weight_decay=TRAIN.weight_decay)
    opt_p = torch.optim.Adam(bottom.parameters(), lr=0.01)
    opt_w = torch.optim.SGD([w_b], lr=WB_LR)
    losses, grads = [], []
    for batch in batches:
        users = torch.as_tensor(batch.users)
        b = bottom(p.numeric[users], p.categorical[users])
        local = torch.as_tensor(batch.row_user)
        logits = head.logits(users[local], torch.as_tensor(batch.row_item), (b @ w_b)[local])
        loss = torch.nn.functional.binary_cross_entropy_with_logits(
            logits, torch.as_tensor(batch.labels)
        )
        for o in (opt_e, opt_p, opt_w):
            o.zero_grad()
        loss.backward()
        grads.append(w_b.grad.detach().clone())
        for o in (opt_e, opt_p, opt_w):
            o.step()
        losses.append(float(loss.detach()))
    return losses, w_b.detach().numpy(), grads


def _run(model, server, batches):
    thread = threading.Thread(target=server.serve, daemon=True)
    thread.start()
    model.peer.setup()
    losses = [model.train_step(step, batch) for step, batch in enumerate(batches)]
    probs = model.predict(99, batches[0].users, np.arange(6).reshape(1, 6).repeat(4, 0))
    model.peer.shutdown(step=100)
    thread.join(timeout=20)
    assert not thread.is_alive()
    return losses, probs


def test_encrypted_training_matches_the_plaintext_network(secure) -> None:
    # Prepare
    model, server, p, batches, ref, *_ = secure
    expected, w_expected, _ = _reference(ref, p, batches)
    # Execute
    got, probs = _run(model, server, batches)
    # Assert: same losses (fixed-point error ~1e-6), and U + V is the reference W_B.
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    w = (model.peer.share.u + server.share.v).astype(float) / 2.0**SCALES.w_bits
    np.testing.assert_allclose(w, w_expected, atol=1e-5)
    assert probs.shape == (4, 6) and np.all((probs > 0) & (probs < 1))


def test_only_ciphertexts_cross_and_e_sees_masked_updates(secure) -> None:
    model, server, p, batches, ref, e_ch, p_ch, _ = secure
    _, _, grads = _reference(ref, p, batches)
    _run(model, server, batches)
    pk_e, pk_p = KEYS["E"].public_key, KEYS["P"].public_key
    to_p = [decode(x).message for x in e_ch.sent]
    to_e = [decode(x).message for x in p_ch.sent]
    setup = next(m for m in to_p if isinstance(m, SetupIns))
    EncryptedVector.deserialise(setup.enc_u, pk_e)  # U only ever leaves E encrypted
    for m in to_p:
        if isinstance(m, SecureBackwardIns):
            EncryptedVector.deserialise(m.enc_g, pk_e)
            EncryptedVector.deserialise(m.enc_db, pk_p)
        elif isinstance(m, ForwardIns):
            assert m.users.ndim == 1  # P learns which users, nothing per row
    updates = [m for m in to_e if isinstance(m, SecureBackwardRes)]
    assert len(updates) == len(batches)
    for res, g in zip(updates, grads, strict=True):
        vec = EncryptedVector.deserialise(res.enc_ge, pk_e)
        packer = Packer.for_key(pk_e, SCALES)
        seen_by_e = packer.decrypt(KEYS["E"].private_key, vec, CFG.interactive_out)
        true_update = WB_LR * g.numpy().astype(float) * 2.0**SCALES.w_bits
        assert seen_by_e.shape == true_update.shape
        # every slot E decrypts is the update plus a mask at least 2^30 times larger
        assert np.abs(seen_by_e.astype(float)).min() > 2.0**30 * np.abs(true_update).max()
    # Neither share resembles W_B: both are dominated by the masks.
    w = (model.peer.share.u + server.share.v).astype(float)
    assert np.abs(model.peer.share.u.astype(float)).min() > 2.0**30 * np.abs(w).max()


def test_plaintext_requests_are_refused_in_secure_mode(secure) -> None:
    from vfl.errors import ProtocolError
    from vfl.protocol.messages import BackwardIns

    _, server, *_ = secure
    with pytest.raises(ProtocolError, match="secure mode"):
        server.handle(BackwardIns(step=0, grads=np.zeros((2, 3), np.float32)))


def test_mismatched_parameters_stop_both_sides_naming_the_field() -> None:
    # Prepare: P was configured with a weaker statistical parameter than E
    from vfl.errors import ParameterMismatch, ProtocolError

    _, _, _, p, e_ch, p_ch = tiny_training_inputs()
    d, h = CFG.passive_out, CFG.interactive_out
    e_share = ActiveShare(KEYS["E"], initial_half(d, h, SCALES, np.random.default_rng(1)), SCALES)
    weak = SecureScales(sigma=30)
    p_share = PassiveShare(KEYS["P"], initial_half(d, h, weak, np.random.default_rng(2)), weak)
    server = _server(p, p_share, p_ch, timeout=5)
    errors: list[BaseException] = []

    def serve() -> None:
        try:
            server.serve()
        except ParameterMismatch as exc:
            errors.append(exc)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    # Execute / Assert: E is told which field differs, with both values; P stops as well
    with pytest.raises(ProtocolError, match=r"sigma: P has 30, E has 40"):
        SecurePassivePeer(Endpoint(e_ch, job_id="t", timeout=5), e_share).setup()
    thread.join(timeout=5)
    assert not thread.is_alive() and errors and "sigma" in str(errors[0])
    # and no ciphertext of P's was ever sent
    assert all(b"VFLE" not in payload for payload in p_ch.sent)


def test_evaluation_asks_p_once_per_user_and_step(secure) -> None:
    # Prepare
    model, server, _, batches, _, e_ch, _, _ = secure
    thread = threading.Thread(target=server.serve, daemon=True)
    thread.start()
    model.peer.setup()
    users, items = batches[0].users, np.arange(6).reshape(1, 6).repeat(len(batches[0].users), 0)
    # Execute: validation and test score the same users at one step, then a new step
    first = model.predict(7, users, items)
    again = model.predict(7, users, items)
    model.predict(8, users, items)
    model.peer.shutdown(step=9)
    thread.join(timeout=20)
    # Assert: same scores, and P was asked for these users once per step only
    np.testing.assert_array_equal(first, again)
    evals = [
        m
        for m in (decode(x).message for x in e_ch.sent)
        if isinstance(m, ForwardIns) and not m.train
    ]
    assert [m.step for m in evals] == [7, 8]
