"""Plaintext split learning over the in-memory channel.

* It trains exactly the network one process would train with the same weights and batches.
* Recorded traffic shows what each party saw: P only user positions and per-user gradients,
  E only per-user embeddings.
"""

from __future__ import annotations

import copy
import threading

import numpy as np
import pytest
import torch

from tests.helpers import tiny_training_inputs
from vfl.config.job import ModelConfig, TrainConfig
from vfl.errors import ProtocolError
from vfl.models.bottom import PassiveBottom
from vfl.protocol.endpoint import Endpoint
from vfl.protocol.messages import BackwardIns, BackwardRes, ForwardIns, ForwardRes, Shutdown
from vfl.protocol.plain_split import PassivePeer, PassivePlainServer
from vfl.protocol.serde import decode
from vfl.training.inputs import UserBatcher
from vfl.training.recommenders import SplitRecommender

CFG = ModelConfig(
    embedding_dim=4,
    passive_hidden=(8,),
    passive_out=3,
    active_hidden=(8,),
    interactive_out=6,
    top_hidden=(5,),
)
TRAIN = TrainConfig(learning_rate=0.01, users_per_step=4)


@pytest.fixture()
def setup():
    torch.manual_seed(0)
    al, split, inputs, p, e_ch, p_ch = tiny_training_inputs()
    bottom = PassiveBottom(p.n_numeric, p.cardinalities, CFG.passive_hidden, CFG.passive_out)
    server = PassivePlainServer(
        endpoint=Endpoint(p_ch, job_id="t", timeout=10),
        bottom=bottom,
        numeric=p.numeric,
        categorical=p.categorical,
        optimizer=torch.optim.Adam(bottom.parameters(), lr=0.01, weight_decay=TRAIN.weight_decay),
    )
    model = SplitRecommender(
        inputs,
        CFG,
        TRAIN,
        n_users=len(al),
        peer=PassivePeer(Endpoint(e_ch, job_id="t", timeout=10)),
    )
    batches = list(
        UserBatcher(split, users_per_step=4, negatives_per_positive=4).epoch(
            np.random.default_rng(1)
        )
    )
    return model, server, p, batches, e_ch, p_ch


def _reference_losses(model, bottom, p, batches):
    """Same network, one process, one autograd graph: Adam everywhere but SGD on W_B."""
    head, w_b, bottom = copy.deepcopy(model.head), copy.deepcopy(model.w_b), copy.deepcopy(bottom)
    adam = torch.optim.Adam(
        [*head.parameters(), *bottom.parameters()], lr=0.01, weight_decay=TRAIN.weight_decay
    )
    sgd = torch.optim.SGD(w_b.parameters(), lr=TRAIN.wb_learning_rate)
    losses = []
    for batch in batches:
        users = torch.as_tensor(batch.users)
        b = torch.tanh(bottom.net(bottom.encoder(p.numeric[users], p.categorical[users])))
        local = torch.as_tensor(batch.row_user)
        logits = head.logits(
            users[local], torch.as_tensor(batch.row_item), w_b(b[local]), train=True
        )
        loss = (
            torch.nn.functional.binary_cross_entropy_with_logits(
                logits, torch.as_tensor(batch.labels), reduction="none"
            )
            * torch.as_tensor(batch.row_weight)
        ).sum()
        adam.zero_grad()
        sgd.zero_grad()
        loss.backward()
        adam.step()
        sgd.step()
        losses.append(float(loss.detach()))
    return losses


def _run(model, server, batches):
    thread = threading.Thread(target=server.serve, daemon=True)
    thread.start()
    losses = [model.train_step(step, batch) for step, batch in enumerate(batches)]
    model.peer.shutdown(step=len(batches))
    thread.join(timeout=10)
    assert not thread.is_alive()
    return losses


def test_split_trains_the_same_network_as_one_process(setup) -> None:
    # Prepare
    model, server, p, batches, _, _ = setup
    expected = _reference_losses(model, server.bottom, p, batches)
    # Execute
    got = _run(model, server, batches)
    # Assert
    assert server.steps_done == len(batches)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    assert got[-1] < got[0]


def test_each_party_sees_only_its_share_of_the_traffic(setup) -> None:
    model, server, _, batches, e_ch, p_ch = setup
    _run(model, server, batches)
    to_p = [decode(d).message for d in e_ch.sent]
    to_e = [decode(d).message for d in p_ch.sent]
    assert {type(m) for m in to_p} == {ForwardIns, BackwardIns, Shutdown}
    assert {type(m) for m in to_e} == {ForwardRes, BackwardRes}
    fwd = [m for m in to_p if isinstance(m, ForwardIns)]
    bwd = [m for m in to_p if isinstance(m, BackwardIns)]
    for f, bw, batch in zip(fwd, bwd, batches, strict=True):
        np.testing.assert_array_equal(f.users, batch.users)  # P learns who, nothing per row
        assert bw.grads.shape == (len(batch.users), CFG.passive_out)
        assert len(batch.labels) > len(batch.users)  # rows exist, but never cross
    fwd_res = [m for m in to_e if isinstance(m, ForwardRes)]
    for res, batch in zip(fwd_res, batches, strict=True):
        assert res.embeddings.shape == (len(batch.users), CFG.passive_out)


def test_passive_rejects_backward_without_forward(setup) -> None:
    _, server, _, _, _, _ = setup
    with pytest.raises(ProtocolError, match="matching"):
        server.handle(BackwardIns(step=7, grads=np.zeros((2, CFG.passive_out), np.float32)))
    with pytest.raises(ProtocolError, match="user positions"):
        server.handle(ForwardIns(step=0, users=np.array([10_000]), train=True))
