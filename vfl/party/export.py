"""Model export: each party saves its own shard and a manifest naming its partner (SPEC §2.6).

* E's shard: ``head.pt`` (E's towers, ``W_E``, bias and top model), ``share.json`` (``U``),
  ``alignment.json`` (aligned position -> E's user row).
* P's shard: ``bottom.pt`` (P's bottom model), ``share.json`` (``V``), ``alignment.json``.

``share.json`` holds the integer share at the fixed-point scale ``2^w_bits``; ``W_B = (U + V)
/ 2^w_bits`` exists only when both shards are put together, which no party does.

No Paillier key is stored: each inference session generates fresh key pairs and exchanges the
public halves in the protocol's setup step, as training does, so no private key lies on disk
and a stolen shard reveals no past ciphertext.

Steps of an export (after training, sealed, phase ``export``):

1. Each party writes its parameter files atomically; its **shard digest** is the SHA-256 of
   the canonical JSON ``{file: sha256(file)}``.
2. E sends its ``ExportSummary`` (job, plan, party, shard); P checks job and plan and answers
   with its own (typed control messages through the protocol's serde, so the message
   recorder sees them).
3. Each writes ``manifest.json``: job, plan fingerprint, role, party, peer, the file digests,
   its own shard digest and the **peer's shard digest**, so each shard names its partner.
   P writes it *before* it answers, so E never holds a digest P has not recorded.
4. E, its manifest written, confirms the pair of digests (``ExportConfirmation``); P checks
   it names both shards.

The file bytes come from each party's ``export`` checkpoint, so an export interrupted at any
step is redone by both parties with byte-identical files (:mod:`vfl.party.exporting`).

Loading checks every file against the manifest; a shard is only used together with the shard
its manifest names (:func:`check_partner`): alone or with another partner it is refused.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vfl.errors import ProtocolError, ShardError
from vfl.party.common import LocalAlignment
from vfl.protocol.endpoint import ByteChannel
from vfl.protocol.messages import ExportConfirmation, ExportSummary, InferenceSummary
from vfl.protocol.serde import decode_control, encode_control
from vfl.storage import atomic_write_bytes, atomic_write_json, ensure_dir

FORMAT = 1
MANIFEST = "manifest.json"


@dataclass(frozen=True)
class ShardIdentity:
    """Whose shard this is and of which job."""

    job: str
    plan: str  # the job plan's fingerprint
    party: str
    role: str  # "active" or "passive"
    peer: str


def torch_bytes(module: torch.nn.Module) -> bytes:
    """A module's ``state_dict`` as ``torch.save`` bytes."""
    buf = io.BytesIO()
    torch.save(module.state_dict(), buf)
    return buf.getvalue()


def share_bytes(share: np.ndarray, w_bits: int) -> bytes:
    """An integer share (object or int array) as JSON of decimal strings."""
    arr = np.asarray(share, dtype=object)
    table = {
        "w_bits": w_bits,
        "shape": list(arr.shape),
        "values": [str(int(v)) for v in arr.ravel()],
    }
    return json.dumps(table).encode()


def alignment_bytes(alignment: LocalAlignment) -> bytes:
    """The aligned ids and this party's rows."""
    return json.dumps({"ids": alignment.ids.tolist(), "rows": alignment.rows.tolist()}).encode()


def shard_digest(files: dict[str, str]) -> str:
    """A shard's digest: SHA-256 of the canonical JSON ``{file: sha256(file)}``."""
    return hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()


def write_shard_files(out_dir: Path, files: dict[str, bytes]) -> dict[str, str]:
    """Step 1: write each parameter file atomically; return ``{file: sha256(file)}``.

    Raises:
        StorageError: the shard directory cannot be written.
    """
    ensure_dir(out_dir, private=True)  # a shard is a secret: 0600 files in a 0700 directory
    sums = {}
    for name, data in sorted(files.items()):
        atomic_write_bytes(out_dir / name, data, private=True)
        sums[name] = hashlib.sha256(data).hexdigest()
    return sums


def send_summary(channel: ByteChannel, identity: ShardIdentity, digest: str) -> None:
    """Step 2: this party's :class:`ExportSummary` (job, plan, party, shard) to the peer."""
    summary = ExportSummary(
        job=identity.job, plan=identity.plan, party=identity.party, shard=digest
    )
    channel.send(encode_control(summary, job_id=identity.job))


def receive_summary(channel: ByteChannel, identity: ShardIdentity, *, timeout: float) -> str:
    """Step 2: the peer's summary, which must be of the same job and plan; returns its digest.

    Raises:
        ShardError: the peer exported for another job or plan, or sent garbage.
        ChannelTimeout, ProtocolError: from the channel.
    """
    try:
        theirs = decode_control(channel.recv(timeout), ExportSummary)
    except ProtocolError as exc:
        raise ShardError(
            f"{identity.party}: malformed export summary from {identity.peer}: {exc}"
        ) from exc
    job, plan, shard = str(theirs.job), str(theirs.plan), str(theirs.shard)
    if (job, plan) != (identity.job, identity.plan):
        raise ShardError(
            f"{identity.party}: {identity.peer} exported job {job!r} plan {plan[:16]}, this party "
            f"job {identity.job!r} plan {identity.plan[:16]}; both must export the same job"
        )
    return shard


def write_manifest(
    out_dir: Path, identity: ShardIdentity, sums: dict[str, str], peer_digest: str
) -> Path:
    """Step 3: ``manifest.json`` naming this shard's files, its digest and its partner's."""
    manifest = {
        "format": FORMAT,
        "job": identity.job,
        "plan_fingerprint": identity.plan,
        "role": identity.role,
        "party": identity.party,
        "peer": identity.peer,
        "files": sums,
        "shard_sha256": shard_digest(sums),
        "peer_shard_sha256": peer_digest,
    }
    return atomic_write_json(out_dir / MANIFEST, manifest, private=True)


def send_confirmation(channel: ByteChannel, mine: str, theirs: str) -> None:
    """Step 4 at E: both manifests are written; E confirms the pair ``(E's, P's digest)``."""
    channel.send(encode_control(ExportConfirmation(exported=mine, partner=theirs)))


def await_confirmation(
    channel: ByteChannel, identity: ShardIdentity, mine: str, theirs: str, *, timeout: float
) -> None:
    """Step 4 at P: E's confirmation must name exactly this pair of shards.

    Raises:
        ShardError: E confirmed another pair (its manifest names another partner).
        ChannelTimeout, ProtocolError: from the channel.
    """
    try:
        got = decode_control(channel.recv(timeout), ExportConfirmation)
    except ProtocolError as exc:
        raise ShardError(
            f"{identity.party}: malformed export confirmation from {identity.peer}: {exc}"
        ) from exc
    pair = (str(got.exported), str(got.partner))
    if pair != (theirs, mine):
        raise ShardError(
            f"{identity.party}: {identity.peer} confirmed shards {pair[0][:16]} + {pair[1][:16]}, "
            f"this party exported {mine[:16]} with partner {theirs[:16]}. Fix: restart both "
            "parties with the same command; each re-exports from its export checkpoint"
        )


@dataclass(frozen=True)
class Shard:
    """A loaded, verified shard directory."""

    path: Path
    manifest: dict[str, Any]

    @property
    def digest(self) -> str:
        """This shard's digest (over its parameter files)."""
        return str(self.manifest["shard_sha256"])

    @property
    def partner(self) -> str:
        """The digest of the partner shard this one was exported with."""
        return str(self.manifest["peer_shard_sha256"])

    def state_dict(self, name: str) -> dict[str, torch.Tensor]:
        """A ``torch.save`` file of the shard (tensors only)."""
        state: dict[str, torch.Tensor] = torch.load(self.path / name, weights_only=True)
        return state

    def share(self) -> tuple[np.ndarray, int]:
        """The integer share (object array) and its scale bits."""
        table = json.loads((self.path / "share.json").read_text())
        values = np.array([int(v) for v in table["values"]], dtype=object)
        return values.reshape(tuple(table["shape"])), int(table["w_bits"])

    def alignment(self) -> LocalAlignment:
        """The aligned ids and this party's rows."""
        table = json.loads((self.path / "alignment.json").read_text())
        return LocalAlignment(ids=np.array(table["ids"]), rows=np.asarray(table["rows"], np.int64))

    def summary(self) -> InferenceSummary:
        """What a party tells its peer at the start of an inference session."""
        m = self.manifest
        return InferenceSummary(
            job=str(m["job"]),
            plan=str(m["plan_fingerprint"]),
            party=str(m["party"]),
            shard=self.digest,
            partner=self.partner,
        )


def load_shard(path: Path, role: str) -> Shard:
    """Read and verify a shard directory exported by ``role``.

    Raises:
        ShardError: no manifest, another role, an unknown format, or a file missing or changed.
    """
    manifest_file = path / MANIFEST
    if not manifest_file.is_file():
        raise ShardError(
            f"{manifest_file}: no shard manifest: {path} is not an exported model shard. Fix: "
            "pass the 'model' directory a finished training run wrote (vfl party --out DIR -> "
            "DIR/model)"
        )
    try:
        manifest = json.loads(manifest_file.read_text())
        files = dict(manifest["files"])
    except (ValueError, KeyError, TypeError) as exc:
        raise ShardError(f"{manifest_file}: unreadable manifest. Fix: export again") from exc
    if manifest.get("format") != FORMAT or manifest.get("role") != role:
        raise ShardError(
            f"{manifest_file}: a {manifest.get('role')} shard of format {manifest.get('format')}, "
            f"expected a {role} shard of format {FORMAT}. Fix: pass this party's own shard"
        )
    for name, digest in files.items():
        f = path / name
        if not f.is_file() or hashlib.sha256(f.read_bytes()).hexdigest() != digest:
            raise ShardError(
                f"{f}: missing or changed since export (its SHA-256 is not the manifest's). "
                "Fix: restore the shard directory as exported"
            )
    if shard_digest(files) != manifest.get("shard_sha256"):
        raise ShardError(
            f"{manifest_file}: shard digest does not match its files. Fix: export again"
        )
    return Shard(path=path, manifest=manifest)


def check_partner(mine: Shard, theirs: InferenceSummary, *, where: str) -> None:
    """Refuse to use ``mine`` unless ``theirs`` is the partner shard it was exported with.

    Raises:
        ShardError: another job or plan, or a shard that is not the named partner.
    """
    m = mine.summary()
    if (theirs.job, theirs.plan) != (m.job, m.plan):
        raise ShardError(
            f"{mine.path / MANIFEST}: {where} serves a shard of job {theirs.job!r}, this "
            f"one is of job {m.job!r} (plan {m.plan[:16]}). Fix: load the two shards "
            "exported by the same training run"
        )
    if theirs.shard != m.partner or theirs.partner != m.shard:
        raise ShardError(
            f"{mine.path / MANIFEST}: {where}'s shard {str(theirs.shard)[:16]} is not the "
            f"partner this shard was exported with ({m.partner[:16]}). A shard works only "
            "with its own partner. Fix: load the two shards exported by the same training run"
        )


def load_pair(active: Path, passive: Path | None) -> tuple[Shard, Shard]:
    """Both shards of one export, each checked against the other's manifest.

    Raises:
        ShardError: the passive shard is missing, or the two are not partners.
    """
    e = load_shard(active, "active")
    if passive is None or not (passive / MANIFEST).is_file():
        raise ShardError(
            f"{active / MANIFEST}: E's shard alone cannot score anything: W_B = U + V needs the "
            f"partner shard {e.partner[:16]} of party {e.manifest['peer']}"
            + ("" if passive is None else f", not found in {passive}")
            + ". Fix: run joint inference with the partner serving its shard (vfl serve)"
        )
    p = load_shard(passive, "passive")
    check_partner(e, p.summary(), where=f"{passive}")
    check_partner(p, e.summary(), where=f"{active}")
    return e, p
