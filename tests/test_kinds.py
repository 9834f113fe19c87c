"""``parties/``: one definition per kind of organisation, chosen by name in the party config."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from vfl.config.job import load_job_config, load_job_parties
from vfl.config.party import PartyConfig, kind_names, load_party_config
from vfl.data.loading import load_party_data, standardise
from vfl.data.synthetic_writer import generate_synthetic
from vfl.errors import ConfigError
from vfl.kinds import BottomInputs, load_kind, party_kind
from vfl.models.bottom import ActiveBottom, PassiveBottom
from vfl.training.inputs import TableTensors
from vfl.training.recommenders import ActiveHead, ActiveInputs

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("kinds") / "data"
    generate_synthetic(out, users=60, items=40, seed=2)
    return out


def _configs(data: Path) -> tuple[PartyConfig, PartyConfig]:
    return load_job_parties(load_job_config(data / "job.toml"), data / "job.toml")


def _with_party_line(data: Path, name: str, old: str, new: str) -> Path:
    path = data / name
    copy = data / f"edited_{name}"
    copy.write_text(path.read_text().replace(old, new))
    return copy


def test_the_two_kinds_are_the_files_of_parties() -> None:
    assert kind_names() == ("ecommerce", "logistics", "payments")
    assert [load_kind(n).name for n in kind_names()] == ["ecommerce", "logistics", "payments"]


def test_generated_configs_name_their_kind_and_declare_its_schema(data: Path) -> None:
    # Prepare / Execute: the synthetic generator wrote the configs from the kinds' schemas
    e_cfg, p_cfg = _configs(data)
    # Assert: columns, their types and their order are the kind's, and the config names it
    for cfg, kind in ((e_cfg, load_kind("ecommerce")), (p_cfg, load_kind("payments"))):
        assert cfg.party.kind == kind.name and kind.role is cfg.role
        assert cfg.users.id_column == kind.users.id_column
        assert (cfg.users.numeric, cfg.users.categorical) == (
            kind.users.numeric,
            kind.users.categorical,
        )
    ecommerce = load_kind("ecommerce").items
    assert ecommerce is not None and e_cfg.items is not None
    assert (e_cfg.items.numeric, e_cfg.items.categorical) == (
        ecommerce.numeric,
        ecommerce.categorical,
    )


def test_a_config_without_kind_gets_its_roles_default(data: Path) -> None:
    path = _with_party_line(data, "p_party.toml", 'kind = "payments"\n', "")
    cfg = load_party_config(path)
    assert cfg.party.kind is None and party_kind(cfg).name == "payments"


def test_an_unknown_kind_is_refused_at_load_naming_the_key_and_the_kinds(data: Path) -> None:
    path = _with_party_line(data, "p_party.toml", 'kind = "payments"', 'kind = "logistic"')
    with pytest.raises(ConfigError) as err:
        load_party_config(path)
    message = str(err.value)
    assert err.value.key == "party.kind" and str(path) in message
    assert "no kind 'logistic'" in message and "ecommerce, logistics, payments" in message
    assert "parties/logistic.py" in message


def test_a_kind_of_the_other_role_is_refused_before_any_data_is_used(data: Path) -> None:
    path = _with_party_line(data, "p_party.toml", 'kind = "payments"', 'kind = "ecommerce"')
    cfg = load_party_config(path)
    with pytest.raises(ConfigError, match=r"party.kind.*'ecommerce' is for the active role"):
        load_party_data(cfg)


def test_each_party_builds_the_bottom_model_and_transform_its_kind_names(data: Path) -> None:
    # Prepare
    e_cfg, p_cfg = _configs(data)
    e_data, p_data = load_party_data(e_cfg), load_party_data(p_cfg)
    assert (e_data.kind, p_data.kind) == ("ecommerce", "payments")
    model = load_job_config(data / "job.toml").model
    # Execute
    users = TableTensors.from_table(e_data.users)
    head = ActiveHead(
        ActiveInputs(users, TableTensors.from_table(e_data.items), kind=e_data.kind),
        model,
        n_users=len(e_data.users.ids),
    )
    p_bottom = load_kind(p_data.kind).bottom(
        BottomInputs(TableTensors.from_table(p_data.users)), model
    )
    # Assert: E's towers and P's tanh MLP, and z-scored numeric features on both sides
    assert isinstance(head.bottom, ActiveBottom) and isinstance(p_bottom, PassiveBottom)
    assert p_bottom.out_dim == model.passive_out
    assert load_kind("payments").numeric is standardise
    for table in (e_data.users, p_data.users):
        assert abs(float(table.numeric.mean(axis=0).max())) < 1e-4


def test_the_library_reaches_parties_only_through_vfl_kinds() -> None:
    importers = []
    for path in (ROOT / "vfl").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            if any(n == "parties" or n.startswith("parties.") for n in names):
                importers.append(str(path.relative_to(ROOT)))
    assert not importers  # vfl/kinds.py loads the one module a config names, by importlib
    kinds = (ROOT / "vfl" / "kinds.py").read_text()
    assert 'importlib.import_module(f"{KINDS_PACKAGE}.' in kinds
