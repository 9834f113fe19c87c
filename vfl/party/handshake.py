"""The first thing E and P say to each other: a sealed comparison of what they agreed on.

Each side builds the same dictionary of agreed parameters from the job plan C handed out and
its own config, and sends it with its SHA-256 fingerprint through the sealed channel (so the
coordinator cannot forge agreement):

1. ``plan.*``: every plan field (seed, model shapes, key size, the cipher suite
   ``plan.train.cipher``, learning rates, ...) and
   ``plan.fingerprint``, the SHA-256 of the canonical plan JSON;
2. ``precision.*``: the fixed-point scales and mask parameters of the secure layer;
3. ``ids.*``: the id normalisation rule (both sides must normalise alike for PSI);
4. ``party.role``: the sender's role, which must be the other one's opposite.

Besides, each side sends the SHA-256 of its own data schema (columns, types, id column, no
paths); a party that pinned ``network.peer_schema_sha256`` checks the peer's against it.
Equal fingerprints end the handshake; otherwise every differing field is listed with both
values and the job stops on both sides with :class:`~vfl.errors.ParameterMismatch`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

from vfl.config.party import LOCAL_ID_KEYS, PartyConfig, Role
from vfl.config.plan import JobPlan
from vfl.errors import ParameterMismatch, ProtocolError, field_differences
from vfl.faults import pause_point
from vfl.protocol.endpoint import ByteChannel
from vfl.protocol.messages import Hello
from vfl.protocol.secure_layer import SecureScales
from vfl.protocol.serde import Envelope, decode, encode


def agreed_fields(cfg: PartyConfig, plan: JobPlan) -> dict[str, Any]:
    """The parameters both parties must hold identically, by dotted name."""
    fields: dict[str, Any] = {f"plan.{k}": v for k, v in plan.fields().items()}
    fields["plan.fingerprint"] = plan.fingerprint()
    for key, value in dataclasses.asdict(SecureScales()).items():
        fields[f"precision.{key}"] = value
    for key, value in cfg.ids.model_dump(mode="json", exclude=LOCAL_ID_KEYS).items():
        fields[f"ids.{key}"] = value
    as_sent: dict[str, Any] = json.loads(json.dumps(fields))  # tuples -> lists, as the peer sees
    return as_sent


def schema_fingerprint(cfg: PartyConfig) -> str:
    """SHA-256 of this party's data schema: column names and roles, without file paths."""
    sections = {"ids": cfg.ids.model_dump(mode="json", exclude=LOCAL_ID_KEYS)}
    for name in ("users", "items", "interactions"):
        section = getattr(cfg, name)
        if section is not None:
            sections[name] = section.model_dump(mode="json", exclude={"path", "format"})
    canonical = json.dumps(sections, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def handshake(
    channel: ByteChannel,
    cfg: PartyConfig,
    plan: JobPlan,
    *,
    timeout: float,
    peer_schema: str | None = None,
) -> Hello:
    """Exchange and compare agreed parameters with the peer (typed :class:`Hello` messages
    through the protocol's serde); return the peer's hello.

    Raises:
        ParameterMismatch: a field differs (each named, with both values), the roles clash,
            or the peer's schema differs from the pinned ``peer_schema``.
        ProtocolError: the peer's message is not a hello.
    """
    mine = agreed_fields(cfg, plan)
    hello = Hello(
        party=cfg.party.name,
        role=cfg.role.value,
        fingerprint=_digest(mine),
        agreed=mine,
        schema_sha256=schema_fingerprint(cfg),
    )
    channel.send(encode(Envelope(job_id=plan.job.name, seq=0, message=hello)))
    pause_point("handshake.hello_sent")  # fault tests: killed between its hello and the peer's
    theirs = _parse_hello(channel.recv(timeout), channel.peer)
    problems = _differences(cfg.party.name, mine, channel.peer, theirs.agreed)
    if theirs.role == cfg.role.value:
        problems.append(
            f"party.role: {cfg.party.name} has '{cfg.role.value}', {channel.peer} has "
            f"'{theirs.role}' (one party must be active, the other passive)"
        )
    if peer_schema is not None and theirs.schema_sha256 != peer_schema:
        problems.append(
            f"schema of {channel.peer}: pinned network.peer_schema_sha256 is "
            f"{peer_schema[:16]}..., {channel.peer} has {str(theirs.schema_sha256)[:16]}..."
        )
    if problems:
        raise ParameterMismatch(
            f"{cfg.party.name}: handshake with '{channel.peer}' failed, the job stops: "
            + "; ".join(problems)
        )
    return theirs


def _digest(fields: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()


def _parse_hello(data: bytes, peer: str) -> Hello:
    try:
        hello = decode(data).message
    except ProtocolError as exc:
        raise ProtocolError(f"handshake message from '{peer}' is not a hello: {exc}") from exc
    if not isinstance(hello, Hello):
        raise ProtocolError(f"handshake message from '{peer}' is a {type(hello).__name__}")
    ok = (
        isinstance(hello.agreed, dict)
        and hello.role in {r.value for r in Role}
        and isinstance(hello.fingerprint, str)
    )
    if not ok:
        raise ProtocolError(f"handshake message from '{peer}' lacks its agreed parameters")
    return hello


def _differences(me: str, mine: dict[str, Any], peer: str, theirs: dict[str, Any]) -> list[str]:
    """One line per differing field, naming both values; nothing when the digests match."""
    if _digest(mine) == _digest(theirs):
        return []
    fields = [{k: v for k, v in side.items() if k != "plan.fingerprint"} for side in (mine, theirs)]
    out = field_differences(*fields, me=me, peer=peer)
    return out or [f"plan.fingerprint: {me} and {peer} hold different plans"]
