"""``vfl status``: ask the coordinator over the parties' own mutual TLS what its board shows.

One unary call to ``/vfl.Relay/Status`` (:mod:`vfl.transport.grpc_relay`), presenting a
party's certificate, answered with the job id and every party's phase, state and seconds
since its last heartbeat, with the asking party's own published progress and the others'
epoch number only (:meth:`vfl.transport.board.JobBoard.encode_view`: never the other
party's loss or metrics). The call
never counts as a heartbeat, so asking does not make a vanished party look alive.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import grpc

from vfl.errors import FrameError, TransportError
from vfl.transport.board import PartyStatus, decode_status
from vfl.transport.grpc_relay import GRPC_OPTIONS, STATUS_METHOD


@dataclass(frozen=True)
class JobStatus:
    """What the coordinator at ``target`` reported for its job."""

    target: str
    job: str
    parties: dict[str, PartyStatus]

    def connected(self, lost_after_s: float) -> list[str]:
        """Parties heard from within ``lost_after_s`` seconds."""
        return [
            name
            for name, s in self.parties.items()
            if s.age_s is not None and s.age_s <= lost_after_s
        ]


def fetch_status(
    target: str, *, ca_pem: bytes, cert_pem: bytes, key_pem: bytes, timeout_s: float = 5.0
) -> JobStatus:
    """The coordinator's board, or a :class:`TransportError` saying why it cannot be read.

    Raises:
        TransportError: nothing answers at ``target`` within ``timeout_s``, the TLS handshake
            or the certificate is refused, or the answer is malformed; the message names the
            address and the fix.
    """
    creds = grpc.ssl_channel_credentials(
        root_certificates=ca_pem, private_key=key_pem, certificate_chain=cert_pem
    )
    with grpc.secure_channel(target, creds, options=GRPC_OPTIONS) as channel:
        call: Any = channel.unary_unary(STATUS_METHOD)
        try:
            reply: bytes = call(b"", timeout=timeout_s)
        except grpc.RpcError as exc:
            raise _unreachable(target, exc, timeout_s) from None
    try:
        fields = json.loads(reply.decode())
        return JobStatus(target, str(fields["job"]), decode_status(reply))
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, FrameError) as exc:
        raise TransportError(
            f"coordinator at {target} answered the status request with something else "
            f"({exc}). Fix: check that [network] coordinator names a vfl coordinator"
        ) from None


def _unreachable(target: str, exc: grpc.RpcError, timeout_s: float) -> TransportError:
    """A one-line explanation of a failed status call."""
    code = exc.code() if isinstance(exc, grpc.Call) else None
    detail = exc.details() if isinstance(exc, grpc.Call) else str(exc)
    if code is grpc.StatusCode.PERMISSION_DENIED:
        return TransportError(
            f"coordinator at {target} refused this certificate: {detail}. Fix: use the "
            "config of a party of the job (its [network] cert is checked by name)"
        )
    if code is grpc.StatusCode.UNIMPLEMENTED:
        return TransportError(
            f"coordinator at {target} has no status service. Fix: upgrade vfl there"
        )
    return TransportError(
        f"coordinator at {target} is unreachable (no answer within {timeout_s:g} s: "
        f"{detail}). Fix: check that 'vfl coordinator' runs there, that [network] coordinator "
        "names its address and port, and that no firewall blocks the port"
    )
