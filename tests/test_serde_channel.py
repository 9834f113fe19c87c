"""Wire format, in-memory channel and the ordering checks of an endpoint."""

from __future__ import annotations

import numpy as np
import pytest

from vfl.errors import ChannelTimeout, ProtocolError
from vfl.protocol.endpoint import Endpoint
from vfl.protocol.messages import BackwardIns, ForwardIns, ForwardRes
from vfl.protocol.serde import Envelope, decode, encode
from vfl.transport.channel import InMemoryChannel


def test_round_trip_keeps_types_shapes_and_values() -> None:
    msg = ForwardRes(step=3, embeddings=np.arange(12, dtype=np.float32).reshape(4, 3))
    env = decode(encode(Envelope("job", 5, msg)))
    assert env.job_id == "job" and env.seq == 5
    assert isinstance(env.message, ForwardRes)
    np.testing.assert_array_equal(env.message.embeddings, msg.embeddings)
    assert env.message.embeddings.dtype == np.float32


@pytest.mark.parametrize("cut", [1, 10, -3])
def test_truncated_payload_is_rejected(cut: int) -> None:
    data = encode(Envelope("job", 0, ForwardIns(step=0, users=np.arange(5), train=True)))
    with pytest.raises(ProtocolError):
        decode(data[:cut])


def test_unsupported_dtype_is_rejected() -> None:
    data = encode(Envelope("job", 0, ForwardIns(step=0, users=np.arange(3), train=True)))
    with pytest.raises(ProtocolError, match="dtype"):
        decode(data.replace(b"<i8", b"|O8"))


def test_endpoint_rejects_replay_and_foreign_job() -> None:
    a, b = InMemoryChannel.pair("E", "P")
    a.sent = []
    sender, receiver = Endpoint(a, job_id="j1", timeout=1), Endpoint(b, job_id="j1", timeout=1)
    sender.send(BackwardIns(step=0, grads=np.zeros((2, 2), np.float32)))
    assert isinstance(receiver.recv_any(), BackwardIns)
    a.send(a.sent[0])  # replay the same bytes
    with pytest.raises(ProtocolError, match="sequence"):
        receiver.recv_any()
    other = Endpoint(a, job_id="j2", timeout=1)
    other.send(BackwardIns(step=0, grads=np.zeros((2, 2), np.float32)))
    with pytest.raises(ProtocolError, match="job"):
        receiver.recv_any()


def test_recv_times_out_naming_the_peer() -> None:
    a, _ = InMemoryChannel.pair("E", "P")
    with pytest.raises(ChannelTimeout, match="'P'"):
        a.recv(timeout=0.05)
