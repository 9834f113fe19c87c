"""How a party reads the coordinator's gRPC errors: retry, or stop with a named error and fix."""

from __future__ import annotations

from typing import Any

import grpc

from vfl.errors import ChannelTimeout, TransportError
from vfl.transport.dialling import AlreadyJoined

# CANCELLED: a coordinator that stops (SIGTERM, restart) cancels the calls in flight; the
# sender retries until its deadline (frames carry sequence numbers, so a resend is harmless)
_RETRYABLE = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.CANCELLED,
}
_TLS_HINTS = ("handshake", "ssl", "tls", "certificate", "tsi_")


def raise_unless_transient(err: Any, *, name: str, target: str) -> None:
    """Return if ``err`` is worth retrying; else raise the named error for it.

    Raises:
        AlreadyJoined: another process of this party is joined (ALREADY_EXISTS).
        ChannelTimeout: the RPC's deadline passed.
        TransportError: TLS, permission, job or any other refusal, with the fix.
    """
    code, details = err.code(), str(err.details() or "")
    if code in _RETRYABLE and not any(h in details.lower() for h in _TLS_HINTS):
        return
    if code == grpc.StatusCode.ALREADY_EXISTS:
        raise AlreadyJoined(details)
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        raise ChannelTimeout(f"{name}: no answer from the coordinator at {target} in time")
    if code == grpc.StatusCode.UNAVAILABLE:
        raise tls_error(details, name=name, target=target)
    if code == grpc.StatusCode.PERMISSION_DENIED and "serves job" in details:
        raise TransportError(
            f"party '{name}' refused by the coordinator at {target}: {details}. "
            "Fix: point network.coordinator at the coordinator of this job"
        ) from None
    if code in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED):
        raise TransportError(
            f"party '{name}' refused by the coordinator at {target}: {details}. "
            f"Fix: list '{name}' as a party of the job, or use the certificate issued "
            "for this party (its common name is the party name)"
        ) from None
    raise TransportError(
        f"party '{name}': coordinator at {target} refused the request ({code.name}: {details})"
    ) from None


def tls_error(details: str, *, name: str, target: str) -> TransportError:
    """The TLS failure to reach the coordinator, naming the files to fix."""
    return TransportError(
        f"party '{name}': TLS connection to the coordinator at {target} failed "
        f"({details}). Fix: use the certificate and key issued for '{name}' by the "
        "job's CA, and the CA file that signed the coordinator's certificate"
    )
