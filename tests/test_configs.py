"""``configs/synthetic`` and ``configs/movielens``: ready-to-run, loaded by the real loaders,
and the same job and parties as the configs ``vfl pilot`` writes for its encrypted run."""

from __future__ import annotations

import importlib.util
import shutil
import tomllib
from pathlib import Path

import pytest

from vfl.cli.pilot_cmd import Dataset, _prepare_data, pilot_train, write_run_configs
from vfl.config.coordinator import load_coordinator_config
from vfl.config.job import load_job_config, load_job_parties
from vfl.config.party import PartyConfig
from vfl.config.plan import load_plan_file
from vfl.transport.certs import generate_dev_pki
from vfl.transport.sealing import write_box_keys

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
DATASETS = [
    pytest.param(Dataset.SYNTHETIC, "synthetic", id="synthetic"),
    pytest.param(
        Dataset.MOVIELENS,
        "movielens",
        id="movielens",
        marks=pytest.mark.skipif(
            importlib.util.find_spec("recbole") is None, reason="recbole is not installed"
        ),
    ),
]


def _ready(tmp_path: Path, dataset: Dataset, folder: str) -> Path:
    """A copy of the folder with its data and keys made as its README says."""
    where = tmp_path / folder
    shutil.copytree(CONFIGS / folder, where)
    _prepare_data(dataset, where / "data", 200)  # vfl data synth / vfl data movielens
    names = tomllib.loads((where / "coordinator.toml").read_text())["coordinator"]["parties"]
    generate_dev_pki(where / "certs", parties=names)  # what `vfl certs --out certs` writes
    for name in names:
        write_box_keys(where / "certs", name)
    return where


def _schema(cfg: PartyConfig) -> dict[str, object]:
    """What a party config says apart from where its files are."""
    out: dict[str, object] = {"party": cfg.party, "ids": cfg.ids}
    for name in ("users", "items", "interactions"):
        section = getattr(cfg, name)
        out[name] = None if section is None else section.model_dump(exclude={"path"})
    return out


@pytest.mark.parametrize(("dataset", "folder"), DATASETS)
def test_the_folder_loads_with_the_real_loaders(
    tmp_path: Path, dataset: Dataset, folder: str
) -> None:
    # Prepare
    where = _ready(tmp_path, dataset, folder)
    # Execute
    coordinator = load_coordinator_config(where / "coordinator.toml").coordinator
    plan = load_plan_file(where / "job.toml")
    e_cfg, p_cfg = load_job_parties(load_job_config(where / "job.toml"), where / "job.toml")
    # Assert: one job, two parties that name each other, all dialling the coordinator
    assert coordinator.job == plan.job.name and coordinator.plan == where / "job.toml"
    assert coordinator.parties == (e_cfg.party.name, p_cfg.party.name)
    for me, peer in ((e_cfg, p_cfg), (p_cfg, e_cfg)):
        assert me.network is not None and me.network.coordinator == coordinator.bind
        assert me.network.peer == peer.party.name and me.party.kind is not None
        assert me.network.box_key is not None and where / "certs" in me.network.box_key.parents
    assert plan.train.key_bits == 2048 and plan.train.protocol.value == "encrypted"


@pytest.mark.parametrize(("dataset", "folder"), DATASETS)
def test_the_folder_holds_what_the_pilot_writes_for_its_encrypted_run(
    tmp_path: Path, dataset: Dataset, folder: str
) -> None:
    # Prepare: the pilot's own files, with its defaults
    ours = _ready(tmp_path, dataset, folder)
    pilot = tmp_path / "pilot"
    _prepare_data(dataset, pilot / "data", 200)
    # Execute
    files = write_run_configs(pilot, pilot_train(dataset), plaintext=False)["encrypted"]
    # Assert: the same plan, and parties that differ only in paths, port and kind
    assert load_plan_file(files.job) == load_plan_file(ours / "job.toml")
    coordinator = load_coordinator_config(files.coordinator).coordinator
    written_coordinator = load_coordinator_config(ours / "coordinator.toml").coordinator
    assert (coordinator.job, coordinator.parties) == (
        written_coordinator.job,
        written_coordinator.parties,
    )
    theirs = load_job_parties(load_job_config(files.job), files.job)
    mine = load_job_parties(load_job_config(ours / "job.toml"), ours / "job.toml")
    for generated, written in zip(theirs, mine, strict=True):
        kind = written.party.kind
        assert generated.party.kind in (kind, None)  # MovieLens' generated configs leave it out
        same = _schema(written)
        same["party"] = written.party.model_copy(update={"kind": generated.party.kind})
        assert _schema(generated) == same
