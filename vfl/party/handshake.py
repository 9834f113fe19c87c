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
Both go as a typed :class:`~vfl.protocol.messages.Hello` through the protocol's serde
(:func:`~vfl.protocol.serde.encode_control`), so the message recorder sees it like any other
message. Equal fingerprints end the handshake; otherwise every differing field is listed with
both values, followed by the fix, and the job stops on both sides with
:class:`~vfl.errors.ParameterMismatch`.
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
from vfl.protocol.serde import decode_control, encode_control


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


PEER_SCHEMA_KEY = "network.peer_schema_sha256"
_Problem = tuple[str, str]  # (what differs, naming both values; how to fix it)

# The fix for a differing field, by the prefix of its dotted name.
_FIXES = {
    "plan.": "give both parties the same job plan (one coordinator `plan`, the same --job file)",
    "precision.": "run the same vfl version at both parties (the fixed-point scales are built in)",
    "ids.": "give both party configs the same [ids] rule (docs/configuration.md)",
    "party.role": 'set [party] role = "active" at E and role = "passive" at each partner',
}


def hello_of(cfg: PartyConfig, plan: JobPlan) -> Hello:
    """This party's hello: its agreed parameters, their digest, its role and schema digest."""
    agreed = agreed_fields(cfg, plan)
    return Hello(
        party=cfg.party.name,
        role=cfg.role.value,
        fingerprint=_digest(agreed),
        agreed=agreed,
        schema_sha256=schema_fingerprint(cfg),
    )


def handshake(
    channel: ByteChannel,
    cfg: PartyConfig,
    plan: JobPlan,
    *,
    timeout: float,
    peer_schema: str | None = None,
    pinned_as: str = PEER_SCHEMA_KEY,
) -> Hello:
    """Exchange and compare agreed parameters with the peer (typed :class:`Hello` messages
    through the protocol's serde); return the peer's hello.

    ``peer_schema`` is the peer's schema digest this party pinned, under the config key
    ``pinned_as`` (named in the error).

    Raises:
        ParameterMismatch: a field differs (each named, with both values, then the fix), the
            roles clash, or the peer's schema differs from the pinned ``peer_schema``.
        ProtocolError: the peer's message is not a hello.
    """
    mine = hello_of(cfg, plan)
    channel.send(encode_control(mine, job_id=plan.job.name))
    pause_point("handshake.hello_sent")  # fault tests: killed between its hello and the peer's
    peer = channel.peer
    theirs = _parse_hello(channel.recv(timeout), peer)
    problems = _differences(mine, theirs, peer) + _role_clash(mine, theirs, peer)
    if peer_schema is not None and theirs.schema_sha256 != peer_schema:
        problems.append(_schema_problem(peer, theirs.schema_sha256, peer_schema, pinned_as))
    if problems:
        raise ParameterMismatch(
            f"{cfg.party.name}: handshake with '{peer}' failed, the job stops: "
            + "; ".join(line for line, _ in problems)
            + ". Fix: "
            + "; ".join(dict.fromkeys(fix for _, fix in problems))
        )
    return theirs


def _digest(fields: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()


def _parse_hello(data: bytes, peer: str) -> Hello:
    """The peer's hello, checked for the fields the comparison reads.

    Raises:
        ProtocolError: not a hello (malformed, another message type), or without its
            agreed parameters; names the peer.
    """
    try:
        hello = decode_control(data, Hello)
    except ProtocolError as exc:
        raise ProtocolError(f"handshake message from '{peer}' is not a hello: {exc}") from exc
    ok = (
        isinstance(hello.agreed, dict)
        and hello.role in {r.value for r in Role}
        and isinstance(hello.fingerprint, str)
        and isinstance(hello.schema_sha256, str)
    )
    if not ok:
        raise ProtocolError(f"handshake message from '{peer}' lacks its agreed parameters")
    return hello


def _differences(mine: Hello, theirs: Hello, peer: str) -> list[_Problem]:
    """One problem per differing agreed field, naming both values; none when the digests
    match."""
    if _digest(mine.agreed) == _digest(theirs.agreed):
        return []
    sides = [{k: v for k, v in h.agreed.items() if k != "plan.fingerprint"} for h in (mine, theirs)]
    lines = field_differences(*sides, me=mine.party, peer=peer)
    if not lines:
        lines = [f"plan.fingerprint: {mine.party} and {peer} hold different plans"]
    return [(line, _fix_of(line)) for line in lines]


def _fix_of(line: str) -> str:
    """The fix for a differing field (by its prefix; a field of no known section: the plan's)."""
    return next((f for prefix, f in _FIXES.items() if line.startswith(prefix)), _FIXES["plan."])


def _role_clash(mine: Hello, theirs: Hello, peer: str) -> list[_Problem]:
    if theirs.role != mine.role:
        return []
    line = (
        f"party.role: {mine.party} has '{mine.role}', {peer} has '{theirs.role}' "
        "(one party must be active, the other passive)"
    )
    return [(line, _FIXES["party.role"])]


def _schema_problem(peer: str, theirs: str, pinned: str, pinned_as: str) -> _Problem:
    line = f"schema of {peer}: pinned {pinned_as} is {pinned[:16]}..., {peer} has {theirs[:16]}..."
    fix = (
        f"give {peer} the data schema that was pinned, or, if its schema changed on purpose, "
        f'set {pinned_as} to "{theirs}"'
    )
    return line, fix
