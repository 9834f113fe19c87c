"""What each party's shard holds, written at the end of its training run (see
:mod:`vfl.party.export` for the format, the digest exchange and the checks on loading)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from vfl.config.party import PartyConfig, Role
from vfl.config.plan import JobPlan
from vfl.party.common import in_id_order, load_alignment
from vfl.party.export import (
    ShardIdentity,
    alignment_bytes,
    export_shard,
    share_bytes,
    torch_bytes,
)
from vfl.protocol.endpoint import ByteChannel
from vfl.protocol.secure_split import PassiveSecureServer
from vfl.training.secure import SecureSplitRecommender


@dataclass(frozen=True)
class ShardExporter:
    """Writes this party's shard into ``out`` and exchanges digests with the peer."""

    channel: ByteChannel
    out: Path
    identity: ShardIdentity
    plan: JobPlan
    timeout: float

    def _common(self) -> dict[str, bytes]:
        """Files both shards have: the plan and this party's alignment (saved next to ``out``)."""
        # the PSI store keeps PSI order; training (and so the shard) uses the id order
        alignment = in_id_order(load_alignment(self.out.parent / "alignment.json"))
        return {
            "plan.json": self.plan.to_json().encode(),
            "alignment.json": alignment_bytes(alignment),
        }

    def active(self, model: SecureSplitRecommender) -> None:
        """E's shard: its head (towers, ``W_E``, bias, top model) and its share ``U``."""
        share = model.peer.share
        files = {
            **self._common(),
            "head.pt": torch_bytes(model.head),
            "share.json": share_bytes(share.u, share.scales.w_bits),
        }
        export_shard(self.channel, self.out, self.identity, files, timeout=self.timeout)

    def passive(self, server: PassiveSecureServer) -> None:
        """P's shard: its bottom model and its share ``V``."""
        share = server.share
        files = {
            **self._common(),
            "bottom.pt": torch_bytes(server.bottom),
            "share.json": share_bytes(share.v, share.scales.w_bits),
        }
        export_shard(self.channel, self.out, self.identity, files, timeout=self.timeout)


def shard_exporter(
    channel: ByteChannel, out: Path, cfg: PartyConfig, plan: JobPlan, *, timeout: float
) -> ShardExporter:
    """The exporter of party ``cfg`` for a run of ``plan``; the shard goes to ``out``."""
    peer = cfg.network.peer if cfg.network is not None else None
    identity = ShardIdentity(
        job=plan.job.name,
        plan=plan.fingerprint(),
        party=cfg.party.name,
        role="active" if cfg.role is Role.ACTIVE else "passive",
        peer=str(peer),
    )
    return ShardExporter(channel, out, identity, plan, timeout)
