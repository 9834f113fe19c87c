"""Synthetic generator: determinism, overlap, id normalisation, NaN-free files, ground truth."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from vfl.cli.data_cmd import data_app
from vfl.data.party_files import FileFormat, read_table
from vfl.data.synthetic import CATEGORIES, E_CATEGORIES, P_CATEGORIES, Coefficients
from vfl.data.synthetic_writer import JOB_SETTINGS, generate_synthetic

N_USERS, N_ITEMS, OVERLAP = 600, 120, 0.7
DATA_FILES = ("e_users", "items", "interactions", "p_users")


def _normalise(ids: pd.Series) -> pd.Series:
    """The rule both generated configs declare: strip, then lower-case."""
    return ids.str.strip().str.lower()


@pytest.fixture(scope="module")
def gen(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One small dataset, its tables (P ids normalised) and ground truth."""
    out = tmp_path_factory.mktemp("synth")
    summary = generate_synthetic(out, users=N_USERS, items=N_ITEMS, overlap=OVERLAP, seed=3)
    tables = {s: read_table(out / f"{s}.csv", str_columns=["user_id"]) for s in DATA_FILES}
    truth = json.loads((out / "ground_truth.json").read_text())
    row = {uid: r for r, uid in enumerate(truth["users"]["id"])}
    return {"out": out, "summary": summary, "truth": truth, "row": row, **tables}


def _theta(gen: dict, ids: pd.Series) -> np.ndarray:
    """Ground-truth theta rows for normalised user ids."""
    return np.asarray(gen["truth"]["users"]["theta"])[[gen["row"][u] for u in ids]]


def _pi(gen: dict, ids: pd.Series) -> np.ndarray:
    """Ground-truth price affinity for normalised user ids."""
    return np.asarray(gen["truth"]["users"]["price_affinity"])[[gen["row"][u] for u in ids]]


def test_same_seed_same_bytes_other_seed_differs(tmp_path: Path) -> None:
    # Prepare / Execute
    for name, seed in (("a", 11), ("b", 11), ("c", 12)):
        generate_synthetic(tmp_path / name, users=200, items=60, overlap=0.8, seed=seed)
    # Assert
    for f in ("e_users.csv", "p_users.csv", "interactions.csv", "items.csv", "ground_truth.json"):
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f
    assert (tmp_path / "a/interactions.csv").read_bytes() != (
        tmp_path / "c/interactions.csv"
    ).read_bytes()


def test_overlap_fraction_and_groups(gen: dict) -> None:
    e_ids, p_ids = set(gen["e_users"]["user_id"]), set(_normalise(gen["p_users"]["user_id"]))
    shared = e_ids & p_ids
    assert len(shared) == round(OVERLAP * N_USERS) == gen["summary"].n_shared
    assert len(e_ids | p_ids) == N_USERS
    assert abs(len(e_ids - p_ids) - len(p_ids - e_ids)) <= 1
    groups = np.asarray(gen["truth"]["users"]["group"])
    truth_ids = np.asarray(gen["truth"]["users"]["id"])
    assert shared == set(truth_ids[groups == "shared"])


def test_p_ids_differ_raw_but_normalise_onto_e_ids(gen: dict) -> None:
    raw = gen["p_users"]["user_id"]
    assert not set(raw) & set(gen["e_users"]["user_id"])  # raw forms never match
    assert raw.str.startswith(" ").all() and (raw == raw.str.upper()).all()
    assert _normalise(raw).str.fullmatch(r"user\d{5}@example\.com").all()
    for kind in ("e_party", "p_party"):
        ids = tomllib.loads((gen["out"] / f"{kind}.toml").read_text())["ids"]
        assert ids == {"strip": True, "case": "lower"}


def test_no_nan_and_configs_name_existing_columns(gen: dict) -> None:
    for stem in DATA_FILES:
        assert not gen[stem].isna().any().any(), stem
    e_cfg = tomllib.loads((gen["out"] / "e_party.toml").read_text())
    p_cfg = tomllib.loads((gen["out"] / "p_party.toml").read_text())
    for cfg, stem in ((e_cfg, "e_users"), (p_cfg, "p_users")):
        cols = set(gen[stem].columns)
        assert set(cfg["users"]["numeric"]) | set(cfg["users"]["categorical"]) <= cols
    assert e_cfg["interactions"]["label_column"] == "purchased"
    assert "items" not in p_cfg and "interactions" not in p_cfg
    job = tomllib.loads((gen["out"] / "job.toml").read_text())
    assert job == {
        "job": {"name": "synthetic", "seed": 3},
        "parties": {"active": "e_party.toml", "passive": "p_party.toml"},
        **JOB_SETTINGS,
    }


def test_interaction_log_shape(gen: dict) -> None:
    log = gen["interactions"]
    assert set(log["purchased"]) == {0, 1}
    assert set(log["user_id"]) == set(gen["e_users"]["user_id"])  # E-only users interact too
    bought = log[log["purchased"] == 1].groupby("user_id").size()
    # n_min purchases each (>= 3: every user holds a validation and a test item), at most 20
    assert bought.min() == Coefficients().n_min >= 3 and bought.max() <= 20
    assert not log.duplicated(["user_id", "item_id"]).any()
    assert (log.groupby("user_id")["timestamp"].diff().dropna() >= 0).all()


def _purchases(gen: dict) -> pd.DataFrame:
    """Positive rows with the item's category index and standardised log price."""
    items = gen["items"].assign(cat=lambda d: d["category"].map(CATEGORIES.index))
    lp = np.log(items["price"])
    items["q"] = (lp - lp.mean()) / lp.std()
    pos = gen["interactions"].query("purchased == 1")
    return pos.merge(items[["item_id", "cat", "q"]], on="item_id")


def test_purchases_concentrate_in_preferred_categories(gen: dict) -> None:
    pos = _purchases(gen)
    top = _theta(gen, pos["user_id"]).argmax(axis=1)
    hits, n = int((top == pos["cat"].to_numpy()).sum()), len(pos)
    z = (hits - n / 8) / np.sqrt(n * (1 / 8) * (7 / 8))  # binomial test against uniform choice
    assert hits / n > 0.3 and z > 10


def test_purchased_price_follows_price_affinity(gen: dict) -> None:
    pos = _purchases(gen)
    per_user = pos.groupby("user_id")["q"].mean()
    assert np.corrcoef(per_user, _pi(gen, per_user.index))[0, 1] > 0.3


@pytest.mark.parametrize(
    ("stem", "prefix", "cats"),
    [
        ("e_users", "browse_share_", E_CATEGORIES),
        ("p_users", "spend_share_", P_CATEGORIES),
    ],
)
def test_category_shares_track_theta_on_own_half(gen: dict, stem: str, prefix: str, cats) -> None:
    users = gen[stem].assign(user_id=lambda d: _normalise(d["user_id"]))
    theta = _theta(gen, users["user_id"])
    for c in range(len(CATEGORIES)):
        col = f"{prefix}{CATEGORIES[c]}"
        assert (col in users.columns) == (c in cats)
        if c in cats:
            assert np.corrcoef(users[col], theta[:, c])[0, 1] > 0.6, col


def test_price_affinity_visible_at_p_not_at_e(gen: dict) -> None:
    p = gen["p_users"].assign(user_id=lambda d: _normalise(d["user_id"]))
    pi_p = _pi(gen, p["user_id"])
    assert np.corrcoef(np.log(p["avg_ticket"]), pi_p)[0, 1] > 0.8
    assert np.corrcoef(p["instalment_rate"], pi_p)[0, 1] > 0.5
    e = gen["e_users"].select_dtypes("number")
    pi_e = _pi(gen, gen["e_users"]["user_id"])
    assert max(abs(np.corrcoef(e[c], pi_e)[0, 1]) for c in e.columns) < 0.3


def test_oracle_gap_between_all_latents_and_e_only(gen: dict) -> None:
    hr, auc = gen["summary"].oracle.hr10, gen["summary"].oracle.auc
    assert hr["all"] - hr["e_only"] >= 0.05
    assert auc["all"] - auc["e_only"] >= 0.03
    assert hr["e_only"] > hr["popularity"] and hr["p_only"] > hr["popularity"]
    assert gen["truth"]["oracle"]["hr10"] == hr


def test_parquet_matches_csv(tmp_path: Path) -> None:
    generate_synthetic(tmp_path / "c", users=100, items=40, seed=5)
    generate_synthetic(tmp_path / "p", users=100, items=40, seed=5, fmt=FileFormat.PARQUET)
    for stem in DATA_FILES:
        csv = read_table(tmp_path / "c" / f"{stem}.csv", str_columns=["user_id"])
        pq = read_table(tmp_path / "p" / f"{stem}.parquet")
        pd.testing.assert_frame_equal(csv, pq, check_dtype=False)
    assert 'path = "items.parquet"' in (tmp_path / "p/e_party.toml").read_text()


def test_cli_synth_writes_files_and_rejects_bad_overlap(tmp_path: Path) -> None:
    runner = CliRunner()
    ok = runner.invoke(
        data_app, ["synth", "--out", str(tmp_path), "--users", "80", "--items", "40"]
    )
    assert ok.exit_code == 0, ok.output
    assert "80 customers" in ok.output and (tmp_path / "job.toml").is_file()
    bad = runner.invoke(data_app, ["synth", "--out", str(tmp_path), "--overlap", "1.5"])
    assert bad.exit_code != 0 and "--overlap" in str(bad.exception)


def test_sparse_histories_hold_a_median_of_three_purchases(tmp_path) -> None:  # type: ignore[no-untyped-def]
    # Execute: the same customers, sparse and default histories
    bought = {}
    for name, coef in (("sparse", Coefficients.sparse()), ("default", Coefficients())):
        generate_synthetic(tmp_path / name, users=600, items=200, coef=coef)
        log = pd.read_csv(tmp_path / name / "interactions.csv")
        bought[name] = log[log["purchased"] == 1].groupby("user_id").size()
    # Check: at least 3 each (a validation and a test item), a median of 3, fewer than default
    assert bought["sparse"].min() == 3 and bought["sparse"].median() == 3
    assert bought["default"].min() == 4 and bought["default"].median() >= 8
