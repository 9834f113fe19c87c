"""Write a synthetic dataset to disk: both parties' files, configs and ``ground_truth.json``.

The generative model itself lives in :mod:`vfl.data.synthetic`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from vfl.data import synthetic as model
from vfl.data.party_files import (
    EntityFile,
    FileFormat,
    PartyFiles,
    data_file_name,
    two_party_files,
    write_party_config,
    write_party_dir,
    write_table,
)
from vfl.data.synthetic import (
    BASE_LOG_PRICE,
    CATEGORIES,
    E_CATEGORIES,
    L_CATEGORIES,
    P_CATEGORIES,
    Catalogue,
    Coefficients,
    Latents,
    OracleReport,
    assign_groups,
    e_user_features,
    e_user_id,
    id_width,
    l_user_features,
    l_user_id,
    make_catalogue,
    oracle_ranking,
    p_user_features,
    p_user_id,
    sample_interactions,
    sample_latents,
)
from vfl.kinds import load_kind
from vfl.storage import atomic_write_json

# Training settings written into job.toml. Users buy ~10 items, too few to learn a per-user id
# embedding without overfitting; the behaviour and payment features carry the signal instead.
JOB_SETTINGS: dict[str, dict[str, object]] = {
    "model": {"user_id_embedding": False},
    # Steps of 32 users average the loss over ~1.5k rows, so W_B's SGD needs a large rate.
    "train": {"epochs": 30, "wb_learning_rate": 10.0},
}


@dataclass(frozen=True)
class SyntheticSummary:
    """Counts and output paths of one generated dataset."""

    n_union: int
    n_shared: int
    n_e_users: int
    n_p_users: int
    n_items: int
    n_interactions: int
    n_purchases: int
    oracle: OracleReport
    paths: dict[str, Path]


def _ground_truth(
    lat: Latents, cat: Catalogue, groups: dict[str, np.ndarray], coef: Coefficients
) -> dict[str, object]:
    """JSON-ready model description, coefficients and the latents of every user and item."""
    group = np.empty(len(lat.activity), dtype=object)
    for name, rows in groups.items():
        group[rows] = name
    width = id_width(len(group))
    users = {"z": lat.z, "theta": lat.theta, "price_affinity": lat.price_affinity}
    items = {"price_z": cat.price_z, "popularity": cat.popularity}
    return {
        "model": model.__doc__,
        "coefficients": asdict(coef),
        "categories": list(CATEGORIES),
        "e_categories": list(E_CATEGORIES),
        "p_categories": list(P_CATEGORIES),
        "base_log_price": list(BASE_LOG_PRICE),
        "users": {
            "id": [e_user_id(u, width) for u in range(len(group))],
            "group": group.tolist(),
            "activity": np.round(lat.activity, 5).tolist(),
            **{k: np.round(v, 5).tolist() for k, v in users.items()},
        },
        "items": {
            "id": cat.table["item_id"].tolist(),
            "category_index": cat.category.tolist(),
            **{k: np.round(v, 5).tolist() for k, v in items.items()},
        },
    }


def build_tables(
    rng: np.random.Generator,
    lat: Latents,
    cat: Catalogue,
    groups: dict[str, np.ndarray],
    coef: Coefficients,
) -> tuple[dict[str, pd.DataFrame], OracleReport]:
    """The four party tables keyed by stem, plus the oracle ranking report."""
    width = id_width(len(lat.activity))
    e_rows = np.union1d(groups["shared"], groups["e_only"])
    p_rows = rng.permutation(np.union1d(groups["shared"], groups["p_only"]))
    log = sample_interactions(rng, lat, cat, e_rows, coef)
    oracle = oracle_ranking(rng, lat, cat, log, coef)
    e_users = e_user_features(rng, lat, e_rows, coef)
    e_users.insert(0, "user_id", [e_user_id(u, width) for u in e_rows])
    p_users = p_user_features(rng, lat, p_rows, coef)
    p_users.insert(0, "user_id", [p_user_id(u, width) for u in p_rows])
    inter = pd.DataFrame(
        {
            "user_id": [e_user_id(u, width) for u in log["user"]],
            "item_id": cat.table["item_id"].to_numpy()[log["item"]],
            "timestamp": log["timestamp"],
            "purchased": log["purchased"],
        }
    )
    tables = {"e_users": e_users, "items": cat.table, "interactions": inter, "p_users": p_users}
    return tables, oracle


THIRD_PARTY = "logistics"  # the third organisation's name and kind (parties/logistics.py)


def write_third_party(
    out_dir: Path,
    lat: Latents,
    coef: Coefficients,
    *,
    seed: int,
    share: float,
    fmt: FileFormat,
) -> tuple[np.ndarray, dict[str, Path]]:
    """L's table of a random ``share`` of the union and ``l_party.toml``; L's union rows.

    L's draws come from a stream of its own (``[seed, 3]``), so E's and P's files are those
    of the two-party data of the same seed.
    """
    rng = np.random.default_rng([seed, 3])
    n = len(lat.activity)
    rows = rng.permutation(rng.choice(n, round(share * n), replace=False))
    table = l_user_features(rng, lat, rows, coef)
    table.insert(0, "user_id", [l_user_id(u, id_width(n)) for u in rows])
    schema = load_kind(THIRD_PARTY).users
    spec = EntityFile(
        data_file_name("l_users", fmt), schema.id_column, schema.numeric, schema.categorical
    )
    party = PartyFiles(name=THIRD_PARTY, role="passive", users=spec, kind=THIRD_PARTY)
    paths = {
        "l_users": write_table(
            table,
            out_dir / spec.path,
            fmt,
            features=[spec.id_column, *schema.numeric, *schema.categorical],
        ),
        "l_party": write_party_config(out_dir / "l_party.toml", party),
    }
    return np.sort(rows), paths


def generate_synthetic(
    out_dir: Path,
    *,
    users: int = 4000,
    items: int = 400,
    overlap: float = 0.8,
    seed: int = 7,
    fmt: FileFormat = FileFormat.CSV,
    coef: Coefficients | None = None,
    third_party: float | None = None,
) -> SyntheticSummary:
    """Generate the dataset into ``out_dir`` (created) and return counts, oracle and paths.

    ``users`` is the size of the union of both parties' customers, ``0 < overlap <= 1``.
    ``third_party``: also write a logistics partner knowing that share of the union
    (``l_users``, ``l_party.toml``; :func:`write_third_party`).

    Raises:
        ValueError: if a size, the overlap or the third party's share is out of range.
    """
    if users < 4 or items < 30 or not 0.0 < overlap <= 1.0:
        raise ValueError("need users >= 4, items >= 30 and 0 < overlap <= 1")
    if third_party is not None and not 0.0 < third_party <= 1.0:
        raise ValueError("the third party's share of the users must be in (0, 1]")
    coef, rng = coef or Coefficients(), np.random.default_rng(seed)
    lat, cat = sample_latents(rng, users, coef), make_catalogue(rng, items, coef)
    groups = assign_groups(rng, users, overlap)
    tables, oracle = build_tables(rng, lat, cat, groups, coef)
    kinds = (load_kind("ecommerce"), load_kind("payments"))
    active, passive = two_party_files(
        tables, fmt, names=("shop", "payments"), label_column="purchased", kinds=kinds
    )
    paths = write_party_dir(
        Path(out_dir),
        job="synthetic",
        seed=seed,
        active=active,
        passive=passive,
        tables=tables,
        fmt=fmt,
        settings=JOB_SETTINGS,
    )
    truth = {"seed": seed, "overlap": overlap, "oracle": asdict(oracle)}
    truth |= _ground_truth(lat, cat, groups, coef)
    if third_party is not None:
        l_rows, l_paths = write_third_party(
            Path(out_dir), lat, coef, seed=seed, share=third_party, fmt=fmt
        )
        paths |= l_paths
        truth["third_party"] = {
            "name": THIRD_PARTY,
            "share": third_party,
            "l_categories": list(L_CATEGORIES),
            "users": l_rows.tolist(),
        }
    paths["ground_truth"] = Path(out_dir) / "ground_truth.json"
    atomic_write_json(paths["ground_truth"], truth, indent=None)
    return SyntheticSummary(
        n_union=users,
        n_shared=len(groups["shared"]),
        n_e_users=len(tables["e_users"]),
        n_p_users=len(tables["p_users"]),
        n_items=items,
        n_interactions=len(tables["interactions"]),
        n_purchases=int(tables["interactions"]["purchased"].sum()),
        oracle=oracle,
        paths=paths,
    )
