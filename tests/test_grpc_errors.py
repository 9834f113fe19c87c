"""How a party reads the coordinator's gRPC status codes: which are retried, which stop it."""

from __future__ import annotations

import grpc
import pytest

from vfl.errors import ChannelTimeout, TransportError
from vfl.transport.grpc_errors import raise_unless_transient


class _Err(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


@pytest.mark.parametrize(
    "code",
    [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.CANCELLED],
)
def test_a_coordinator_going_away_is_retried_not_fatal(code: grpc.StatusCode) -> None:
    # A stopping coordinator cancels the calls in flight: the party retries until its deadline
    assert raise_unless_transient(_Err(code, "server shutting down"), name="p", target="t") is None


def test_a_tls_failure_is_not_retried() -> None:
    with pytest.raises(TransportError, match="TLS connection to the coordinator at t failed"):
        raise_unless_transient(
            _Err(grpc.StatusCode.UNAVAILABLE, "ssl handshake failed"), name="p", target="t"
        )


def test_a_deadline_is_a_channel_timeout_and_other_codes_are_named() -> None:
    with pytest.raises(ChannelTimeout, match="no answer from the coordinator at t"):
        raise_unless_transient(_Err(grpc.StatusCode.DEADLINE_EXCEEDED, ""), name="p", target="t")
    with pytest.raises(TransportError, match=r"refused the request \(INTERNAL: boom\)"):
        raise_unless_transient(_Err(grpc.StatusCode.INTERNAL, "boom"), name="p", target="t")
