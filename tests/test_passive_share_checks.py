"""P checks a backward message completely before it changes any state (issue 14, item 12).

A malformed, foreign or over-bound ``[[dL/db]]`` must be refused with P's share ``V``, its
share of the momentum buffer and its pending forward exactly as they were, so that E can
still send the correct backward for the same step and training continues as if the bad
message had never arrived.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import numpy as np
import pytest

from tests.helpers import tiny_training_inputs
from tests.secure_helpers import Pair, build_pair, keys, settings
from vfl.errors import ProtocolError
from vfl.protocol.ciphers import PaillierCipher
from vfl.protocol.fixed_point import SecureScales
from vfl.protocol.messages import SecureBackwardIns, SecureBackwardRes
from vfl.protocol.share_optim import ShareSgdConfig

SGD = ShareSgdConfig(lr=0.5, momentum=0.9, weight_decay=1e-3)


def _over_bound(pair: Pair, m: int, d: int) -> bytes:
    """A well-formed ``[[dL/db]]_P`` whose decoded entries are ``2^value_bits``: too large."""
    share = pair.model.peer.share
    s = share.scales
    huge = np.full((m, d), 1 << (s.db_bits + s.value_bits), dtype=object)
    peer = share._peer()
    return peer.dump(peer.encrypt(huge), fresh=True)


def _truncated(pair: Pair, m: int, d: int) -> bytes:
    good = _over_bound(pair, m, d)
    return good[: len(good) // 2]


def _wrong_shape(pair: Pair, m: int, d: int) -> bytes:
    peer = pair.model.peer.share._peer()
    return peer.dump(peer.encrypt(np.zeros((m + 1, d), dtype=object)), fresh=True)


def _foreign_key(pair: Pair, m: int, d: int) -> bytes:
    other = PaillierCipher(keys("someone else").public_key, SecureScales())
    return other.dump(other.encrypt(np.zeros((m, d), dtype=object)), fresh=True)


BAD: dict[str, Callable[[Pair, int, int], bytes]] = {
    "over-bound": _over_bound,
    "truncated": _truncated,
    "wrong-shape": _wrong_shape,
    "foreign-key": _foreign_key,
}


@pytest.mark.parametrize("kind", sorted(BAD))
def test_a_bad_embedding_gradient_leaves_p_unchanged(kind: str) -> None:
    # Prepare: two real steps (so the momentum buffer is set), then a training forward
    pair = build_pair(tiny_training_inputs(), e_settings=settings(sgd=SGD), timeout=30)
    batches = pair.batches(4)
    pair.start()
    for step in range(2):
        pair.model.train_step(step, batches[step])
    peer, server = pair.model.peer, pair.server
    users = batches[2].users
    peer.forward(2, users, train=True)
    delta = np.random.default_rng(0).normal(0.0, 0.1, (len(users), 4))
    enc_g, enc_db = peer.share.backward_payload(delta)
    v_before = server.share.v.copy()
    buffer_before = copy.deepcopy(server.share.sgd.buffer)
    steps_before = server.share.sgd.steps
    bottom_before = copy.deepcopy(server.bottom.state_dict())
    # Execute: E sends the bad embedding gradient
    bad = BAD[kind](pair, len(users), 3)
    peer.endpoint.send(SecureBackwardIns(step=2, enc_g=enc_g, enc_db=bad))
    with pytest.raises(ProtocolError, match=r"rejected step 2: .*(dL/db|key|shape|bound)"):
        peer.endpoint.recv(SecureBackwardRes)
    # Assert: nothing of P's changed ...
    assert (server.share.v == v_before).all()
    assert buffer_before is not None and (server.share.sgd.buffer == buffer_before).all()
    assert server.share.sgd.steps == steps_before
    for name, tensor in server.bottom.state_dict().items():
        assert (tensor == bottom_before[name]).all(), name
    # ... and the correct backward of the same step is still accepted
    peer.endpoint.send(SecureBackwardIns(step=2, enc_g=enc_g, enc_db=enc_db))
    res = peer.endpoint.recv(SecureBackwardRes)
    peer.share.apply_update(res.enc_ge)
    assert not (server.share.v == v_before).all()
    pair.model.train_step(3, batches[3])
    pair.stop()
