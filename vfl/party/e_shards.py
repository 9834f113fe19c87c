"""E's exported shards for serving: one per partner, in the model's order.

With one peer (``[network] peer``), ``--model`` is E's shard itself (``DIR/model``). With
``[[network.partners]]`` training exported one E shard per partner, each in
``<E's work dir>/partners/<name>/model/`` (its alignment with that partner and its share
``U_k``; the same head in every one), so ``--model`` is E's work directory (the ``--out``
of ``vfl party``) and the shards are taken in the order of ``[[network.partners]]``, the
order the head's ``a_k`` were trained in.
"""

from __future__ import annotations

from pathlib import Path

from vfl.config.party import PartyConfig
from vfl.errors import ShardError
from vfl.party.export import MANIFEST, Shard, load_shard


def partner_shard_dir(model: Path, partner: str) -> Path:
    """Where E's shard shared with ``partner`` lies under E's work directory ``model``."""
    return model / "partners" / partner / "model"


def load_active_shards(model: Path, cfg: PartyConfig) -> list[Shard]:
    """E's shards, one per peer of ``cfg`` in its order (one peer: ``model`` itself).

    Raises:
        ShardError: a partner's shard is missing or names another partner, or the shards
            are not of one export (another plan or head; names both).
    """
    net = cfg.network
    if net is None or not net.several:
        return [load_shard(model, "active")]
    shards = []
    for spec in net.peers():
        path = partner_shard_dir(model, spec.name)
        if not (path / MANIFEST).is_file():
            raise ShardError(
                f"{path / MANIFEST}: no shard shared with partner '{spec.name}'. Fix: pass E's "
                "work directory (the --out of `vfl party`, holding partners/<name>/model) as "
                "--model"
            )
        shard = load_shard(path, "active")
        if shard.manifest["peer"] != spec.name:
            raise ShardError(
                f"{path / MANIFEST}: shared with '{shard.manifest['peer']}', not with partner "
                f"'{spec.name}'"
            )
        shards.append(shard)
    _check_one_export(shards)
    return shards


def _check_one_export(shards: list[Shard]) -> None:
    """Every shard holds the same plan and head (one training run exported them).

    Raises:
        ShardError: names the shard that differs from the first.
    """
    first = shards[0]
    for other in shards[1:]:
        for key, what in (("plan_fingerprint", "plan"), ("job", "job")):
            if other.manifest[key] != first.manifest[key]:
                raise ShardError(
                    f"{other.path / MANIFEST}: another {what} than {first.path / MANIFEST} "
                    f"({str(other.manifest[key])[:16]} vs {str(first.manifest[key])[:16]}). "
                    "Fix: serve the shards of one training run"
                )
        if other.manifest["files"].get("head.pt") != first.manifest["files"].get("head.pt"):
            raise ShardError(
                f"{other.path / 'head.pt'}: another head than {first.path / 'head.pt'}. "
                "Fix: serve the shards of one training run"
            )
