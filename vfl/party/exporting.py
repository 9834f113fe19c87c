"""Each party's shard: what it holds, when it is checkpointed, and how an export resumes
(see :mod:`vfl.party.export` for the format, the digest exchange and the checks on loading).

Checkpoints of the export (``<work dir>/checkpoints``):

* ``export`` 0 -- the trained state *and the shard's file bytes* (blobs
  ``shard/<peer>/<file>``: E holds one shard per partner, P one for E),
  saved before E sends ``Shutdown`` (E) or once it is read (P). Every later step of the export
  writes these bytes, so a redone export produces byte-identical files and digests.
* ``export`` 1 (:data:`EXPORTED`) -- the shard and its manifest are written and the pair of
  digests is confirmed (E: before it sends the confirmation; P: once it has read it). A
  party holding it has finished the job: it re-writes its shard from the checkpoints if the
  files went missing or changed, and never needs its peer again.

Resuming inside the export (``vfl.party.runner``): both parties at ``export`` 0 or later
redo steps 1-4 from their ``export`` 0 checkpoints. P may lose E's confirmation (P killed
while E finished and left, or C restarted and dropped it): P then finishes on its own only
if the coordinator reports E done *and* P's manifest, written before P answered, verifies
against its ``export`` 0 bytes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from vfl.checkpoint import Checkpoint, CheckpointStore
from vfl.config.party import PartyConfig, Role
from vfl.config.plan import JobPlan
from vfl.errors import CheckpointError, ShardError
from vfl.faults import pause_point
from vfl.party.common import in_id_order, load_alignment
from vfl.party.export import (
    MANIFEST,
    ShardIdentity,
    alignment_bytes,
    await_confirmation,
    load_shard,
    receive_summary,
    send_confirmation,
    send_summary,
    shard_digest,
    share_bytes,
    torch_bytes,
    write_manifest,
    write_shard_files,
)
from vfl.phases import Phase
from vfl.protocol.endpoint import ByteChannel
from vfl.protocol.secure_split import PassiveSecureServer
from vfl.training.secure import FederatedRecommender

EXPORTED = 1  # step of the ``export`` checkpoint that marks a finished, confirmed export
_BLOB = "shard/"


def shard_blobs(files: dict[str, bytes], peer: str) -> dict[str, bytes]:
    """The files of the shard shared with ``peer`` as checkpoint blobs (``shard/<peer>/``)."""
    return {f"{_BLOB}{peer}/{name}": data for name, data in files.items()}


def shard_files(ckpt: Checkpoint, peer: str) -> dict[str, bytes]:
    """The files of the shard shared with ``peer`` saved in an ``export`` 0 checkpoint.

    Raises:
        CheckpointError: the checkpoint holds no such shard (written by an older vfl).
    """
    prefix = f"{_BLOB}{peer}/"
    files = {k[len(prefix) :]: v for k, v in ckpt.blobs.items() if k.startswith(prefix)}
    if not files:
        raise CheckpointError(
            f"export checkpoint of {ckpt.party} holds no shard shared with '{peer}' (an older "
            "format, or another partner). Fix: restart the parties with fresh work directories"
        )
    return files


def mark_exported(store: CheckpointStore, mine: str, theirs: str) -> None:
    """``export`` 1: this shard (digest ``mine``) and its partner ``theirs`` are confirmed."""
    store.save(Phase.EXPORT, EXPORTED, meta={"shard": mine, "partner": theirs})


def is_exported(store: CheckpointStore) -> bool:
    """Whether this party holds the mark of a finished, confirmed export."""
    return (Phase.EXPORT, EXPORTED) in store.positions()


@dataclass(frozen=True)
class ShardExporter:
    """Writes this party's shard into ``out``, exchanges digests with the peer, and marks the
    export done in ``store``. ``starting`` runs first (the caller's phase switch)."""

    channel: ByteChannel
    out: Path
    identity: ShardIdentity
    plan: JobPlan
    timeout: float
    store: CheckpointStore | None = None
    starting: Callable[[], None] = field(default=lambda: None)

    def _common(self) -> dict[str, bytes]:
        """Files both shards have: the plan and this party's alignment (saved next to ``out``)."""
        # the PSI store keeps PSI order; training (and so the shard) uses the id order
        alignment = in_id_order(load_alignment(self.out.parent / "alignment.json"))
        return {
            "plan.json": self.plan.to_json().encode(),
            "alignment.json": alignment_bytes(alignment),
        }

    def active_files(self, model: FederatedRecommender) -> dict[str, bytes]:
        """E's shard: its head (towers, ``W_E``, bias, top model) and its share ``U``."""
        share = next(p for p in model.partners if p.name == self.identity.peer).peer.share
        return {
            **self._common(),
            "head.pt": torch_bytes(model.head),
            "share.json": share_bytes(share.u, share.scales.w_bits),
        }

    def passive_files(self, server: PassiveSecureServer) -> dict[str, bytes]:
        """P's shard: its bottom model and its share ``V``."""
        share = server.share
        return {
            **self._common(),
            "bottom.pt": torch_bytes(server.bottom),
            "share.json": share_bytes(share.v, share.scales.w_bits),
        }

    def exchange(self, files: dict[str, bytes]) -> Path:
        """Steps 1-4 of :mod:`vfl.party.export` for ``files``; returns the manifest's path.

        Raises:
            ShardError: the peer exported another job or plan, or confirmed another pair.
            StorageError: the shard cannot be written.
            ChannelTimeout, ProtocolError: from the channel.
        """
        self.starting()
        pause_point("export.start")
        sums = write_shard_files(self.out, files)
        mine, me = shard_digest(sums), self.identity
        if me.role == "active":
            send_summary(self.channel, me, mine)
            pause_point("export.summary_sent")
            theirs = receive_summary(self.channel, me, timeout=self.timeout)
            manifest = write_manifest(self.out, me, sums, theirs)
            self._mark(mine, theirs)
            pause_point("export.marked")
            send_confirmation(self.channel, mine, theirs)
            return manifest
        theirs = receive_summary(self.channel, me, timeout=self.timeout)
        manifest = write_manifest(self.out, me, sums, theirs)
        pause_point("export.manifest_written")
        send_summary(self.channel, me, mine)
        await_confirmation(self.channel, me, mine, theirs, timeout=self.timeout)
        pause_point("export.confirmed")
        self._mark(mine, theirs)
        return manifest

    def _mark(self, mine: str, theirs: str) -> None:
        if self.store is not None:
            mark_exported(self.store, mine, theirs)


def restore_shard(
    store: CheckpointStore,
    out: Path,
    identity: ShardIdentity,
    *,
    marks: CheckpointStore | None = None,
) -> bool:
    """A finished party's shard, re-written from its checkpoints if missing or changed.

    ``marks`` holds the ``export`` 1 mark of this shard (E with several partners keeps one
    per partner); by default ``store``. Returns True if files were written.

    Raises:
        CheckpointError: the ``export`` checkpoints are missing or unreadable.
    """
    marker = (marks or store).load(Phase.EXPORT, EXPORTED).meta
    try:
        if load_shard(out, identity.role).digest == marker["shard"]:
            return False
    except ShardError:
        pass  # missing or changed: written again below
    sums = write_shard_files(out, shard_files(store.load(Phase.EXPORT, 0), identity.peer))
    write_manifest(out, identity, sums, str(marker["partner"]))
    return True


def confirm_from_manifest(store: CheckpointStore, out: Path, identity: ShardIdentity) -> None:
    """P lost E's confirmation but the coordinator reports E done: finish on P's manifest.

    E is done only after it read P's summary, which P sends after writing its manifest; so the
    manifest, if it verifies against P's ``export`` 0 bytes, names the partner E confirmed.

    Raises:
        ShardError: no valid manifest of this export (the peer cannot have finished with it).
    """
    files = shard_files(store.load(Phase.EXPORT, 0), identity.peer)
    sums = write_shard_files(out, files)
    try:
        shard = load_shard(out, identity.role)
    except ShardError as exc:
        raise ShardError(
            f"{out / MANIFEST}: {identity.peer} reports the job done, but this party holds no "
            "manifest of the export. Fix: restart both parties in fresh work directories"
        ) from exc
    if shard.digest != shard_digest(sums):
        raise ShardError(
            f"{out / MANIFEST}: names shard {shard.digest[:16]}, but the export checkpoint holds "
            f"{shard_digest(sums)[:16]}. Fix: restart both parties in fresh work directories"
        )
    mark_exported(store, shard.digest, shard.partner)


def shard_identity(cfg: PartyConfig, plan: JobPlan, peer: str | None = None) -> ShardIdentity:
    """Whose shard party ``cfg`` exports for ``plan``, shared with ``peer`` (by default the
    ``[network] peer``)."""
    if peer is None:
        peer = cfg.network.peer if cfg.network is not None else None
    return ShardIdentity(
        job=plan.job.name,
        plan=plan.fingerprint(),
        party=cfg.party.name,
        role="active" if cfg.role is Role.ACTIVE else "passive",
        peer=str(peer),
    )


def shard_exporter(
    channel: ByteChannel,
    out: Path,
    cfg: PartyConfig,
    plan: JobPlan,
    *,
    timeout: float,
    store: CheckpointStore | None = None,
) -> ShardExporter:
    """The exporter of party ``cfg`` for a run of ``plan`` with the peer of ``channel``;
    the shard goes to ``out``."""
    identity = shard_identity(cfg, plan, channel.peer)
    return ShardExporter(channel, out, identity, plan, timeout, store)
