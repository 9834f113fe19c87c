"""Party and job config loading: happy paths and one test per ConfigError case."""

from __future__ import annotations

from pathlib import Path

import pytest

from vfl.config.job import (
    EvalConfig,
    JobConfig,
    ModelConfig,
    TrainConfig,
    load_job_config,
    load_job_parties,
)
from vfl.config.party import Case, FileFormat, Role, load_party_config
from vfl.errors import ConfigError

PASSIVE = """
[party]
name = "pay"
role = "passive"

[users]
path = "users.csv"
id_column = "user_id"
numeric = ["spend"]
categorical = ["card"]
"""

ACTIVE = """
[party]
name = "shop"
role = "active"

[ids]
case = "lower"

[users]
path = "data/users.csv"
id_column = "user_id"
numeric = ["views"]

[items]
path = "data/items.parquet"
id_column = "item_id"
categorical = ["category"]

[interactions]
path = "data/log.txt"
format = "csv"
user_column = "user_id"
item_column = "item_id"
time_column = "ts"
label_column = "purchased"
"""


def _write(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` (creating parents) and return the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def _passive(tmp_path: Path, text: str = PASSIVE) -> Path:
    """A passive config plus its (empty) users file."""
    _write(tmp_path / "users.csv", "user_id,spend,card\n")
    return _write(tmp_path / "p.toml", text)


def _active(tmp_path: Path, text: str = ACTIVE) -> Path:
    """An active config in ``tmp_path/conf`` whose data lives in ``tmp_path/conf/data``."""
    for name in ("users.csv", "items.parquet", "log.txt"):
        _write(tmp_path / "conf" / "data" / name, "x\n")
    return _write(tmp_path / "conf" / "e.toml", text)


def _check(err: pytest.ExceptionInfo[ConfigError], file: Path, key: str) -> str:
    """Assert the error names ``file`` and ``key`` and gives a fix; return the message."""
    message = str(err.value)
    assert err.value.file == str(file)
    assert err.value.key == key
    assert str(file) in message
    assert f"'{key}'" in message
    assert "Fix:" in message
    return message


# -- happy paths ----------------------------------------------------------------------------


def test_passive_config_resolves_paths_and_defaults(tmp_path: Path) -> None:
    # Prepare
    path = _passive(tmp_path)

    # Execute
    cfg = load_party_config(path)

    # Assert
    assert cfg.role is Role.PASSIVE
    assert cfg.users.path == (tmp_path / "users.csv").resolve()
    assert cfg.users.path.is_absolute()
    assert cfg.users.file_format is FileFormat.CSV
    assert cfg.users.numeric == ("spend",) and cfg.users.categorical == ("card",)
    assert cfg.ids.strip is True and cfg.ids.case is Case.KEEP
    assert cfg.items is None and cfg.interactions is None


def test_active_config_paths_relative_to_config_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prepare: run from elsewhere so cwd-relative resolution would fail
    _active(tmp_path)
    monkeypatch.chdir(tmp_path)

    # Execute
    cfg = load_party_config(Path("conf") / "e.toml")

    # Assert
    data = (tmp_path / "conf" / "data").resolve()
    assert cfg.role is Role.ACTIVE
    assert cfg.users.path == data / "users.csv"
    assert cfg.items is not None and cfg.items.file_format is FileFormat.PARQUET
    assert cfg.interactions is not None
    assert cfg.interactions.path == data / "log.txt"
    assert cfg.interactions.file_format is FileFormat.CSV
    assert cfg.interactions.columns == ("user_id", "item_id", "ts", "purchased")
    assert cfg.ids.case is Case.LOWER


def test_id_rule_normalises() -> None:
    from vfl.config.party import IdRule

    assert IdRule(case=Case.UPPER).normalise(" ab ") == "AB"
    assert IdRule(strip=False, case=Case.LOWER).normalise(" AB ") == " ab "
    assert IdRule().normalise(" Ab ") == "Ab"


def test_config_is_frozen(tmp_path: Path) -> None:
    cfg = load_party_config(_passive(tmp_path))
    with pytest.raises(ValueError):
        cfg.users.id_column = "other"  # type: ignore[misc]


def test_almost_empty_job_gets_defaults(tmp_path: Path) -> None:
    # Prepare
    _passive(tmp_path)
    job_file = _write(tmp_path / "job.toml", '[parties]\nactive = "p.toml"\npassive = "p.toml"\n')

    # Execute
    job = load_job_config(job_file)

    # Assert
    assert job.parties.active == (tmp_path / "p.toml").resolve()
    assert job.model == ModelConfig()
    assert job.train == TrainConfig() and job.eval == EvalConfig()
    assert job.model.passive_out == 16 and job.model.top_hidden == (32,)
    assert job.model.interactive_out == 16 and job.train.protocol.value == "encrypted"
    assert job.train.learning_rate == pytest.approx(0.003)


def test_job_values_override_defaults(tmp_path: Path) -> None:
    _passive(tmp_path)
    text = """
[job]
name = "pilot"
seed = 7
[parties]
active = "p.toml"
passive = "p.toml"
[model]
passive_hidden = [16, 8]
interactive_out = 4
[train]
epochs = 3
learning_rate = 1
[eval]
k = 5
"""
    job = load_job_config(_write(tmp_path / "job.toml", text))
    assert isinstance(job, JobConfig)
    assert job.job.name == "pilot" and job.job.seed == 7
    assert job.model.passive_hidden == (16, 8) and job.model.interactive_out == 4
    assert job.train.epochs == 3 and job.train.learning_rate == 1.0
    assert job.eval.k == 5 and job.eval.test_negatives == 99


def test_load_job_parties_checks_roles(tmp_path: Path) -> None:
    # Prepare: the passive config sits in the active slot
    passive = _passive(tmp_path)
    active = _active(tmp_path)
    good = _write(tmp_path / "good.toml", f'[parties]\nactive = "{active}"\npassive = "p.toml"\n')
    bad = _write(tmp_path / "bad.toml", '[parties]\nactive = "p.toml"\npassive = "p.toml"\n')

    # Execute
    e_cfg, p_cfg = load_job_parties(load_job_config(good), good)
    with pytest.raises(ConfigError) as err:
        load_job_parties(load_job_config(bad), bad)

    # Assert
    assert e_cfg.role is Role.ACTIVE and p_cfg.role is Role.PASSIVE
    assert str(passive.resolve()) in _check(err, bad, "parties.active")


# -- errors ---------------------------------------------------------------------------------


def test_invalid_toml_names_line(tmp_path: Path) -> None:
    path = _write(tmp_path / "p.toml", '[party]\nname = "x"\nrole = active\n')
    with pytest.raises(ConfigError) as err:
        load_party_config(path)
    assert "line 3" in _check(err, path, "<toml syntax>")


def test_missing_config_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as err:
        load_job_config(path)
    assert "not found" in _check(err, path, "<file>")


def test_non_utf8_config_file(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_bytes(b'[party]\nname = "\xff\xfe"\n')
    with pytest.raises(ConfigError) as err:
        load_party_config(path)
    _check(err, path, "<file>")


def test_unknown_key_suggests_closest(tmp_path: Path) -> None:
    path = _passive(tmp_path, PASSIVE.replace("numeric =", "nmeric ="))
    with pytest.raises(ConfigError) as err:
        load_party_config(path)
    message = _check(err, path, "users.nmeric")
    assert "unknown key; did you mean 'numeric'?" in message


def test_unknown_section(tmp_path: Path) -> None:
    path = _passive(tmp_path, PASSIVE + "\n[trian]\nepochs = 3\n")
    with pytest.raises(ConfigError) as err:
        load_party_config(path)
    assert "unknown key" in _check(err, path, "trian")


def test_unknown_job_key(tmp_path: Path) -> None:
    _passive(tmp_path)
    text = '[parties]\nactive = "p.toml"\npassive = "p.toml"\n[train]\nepoch = 3\n'
    path = _write(tmp_path / "job.toml", text)
    with pytest.raises(ConfigError) as err:
        load_job_config(path)
    assert "did you mean 'epochs'?" in _check(err, path, "train.epoch")


@pytest.mark.parametrize(
    ("extra", "key", "fragment"),
    [
        ('[train]\nepochs = "ten"\n', "train.epochs", "expected an integer, got 'ten'"),
        ("[train]\nepochs = 0\n", "train.epochs", "greater than 0"),
        ("[train]\nlearning_rate = -0.1\n", "train.learning_rate", "greater than 0"),
        ('[model]\npassive_hidden = [32, "x"]\n', "model.passive_hidden[1]", "integer"),
        ('[model]\nuser_id_embedding = "maybe"\n', "model.user_id_embedding", "true or false"),
        ("[job]\nname = 3\n", "job.name", "string"),
    ],
)
def test_job_wrong_type(tmp_path: Path, extra: str, key: str, fragment: str) -> None:
    _passive(tmp_path)
    path = _write(
        tmp_path / "job.toml", f'[parties]\nactive = "p.toml"\npassive = "p.toml"\n{extra}'
    )
    with pytest.raises(ConfigError) as err:
        load_job_config(path)
    assert fragment in _check(err, path, key)


def test_wrong_role_value(tmp_path: Path) -> None:
    path = _passive(tmp_path, PASSIVE.replace('"passive"', '"pasive"'))
    with pytest.raises(ConfigError) as err:
        load_party_config(path)
    assert "'active' or 'passive'" in _check(err, path, "party.role")


def test_missing_required_key(tmp_path: Path) -> None:
    path = _passive(tmp_path, PASSIVE.replace('id_column = "user_id"\n', ""))
    with pytest.raises(ConfigError) as err:
        load_party_config(path)
    message = _check(err, path, "users.id_column")
    assert "missing required key" in message and "[users]" in message


def test_missing_required_section(tmp_path: Path) -> None:
    path = _write(tmp_path / "p.toml", '[party]\nname = "p"\nrole = "passive"\n')
    with pytest.raises(ConfigError) as err:
        load_party_config(path)
    assert "add a [users] section" in _check(err, path, "users")


def test_missing_parties_key(tmp_path: Path) -> None:
    _passive(tmp_path)
    path = _write(tmp_path / "job.toml", '[parties]\nactive = "p.toml"\n')
    with pytest.raises(ConfigError) as err:
        load_job_config(path)
    _check(err, path, "parties.passive")


def test_missing_data_file_names_absolute_path(tmp_path: Path) -> None:
    path = _write(tmp_path / "p.toml", PASSIVE)
    with pytest.raises(ConfigError) as err:
        load_party_config(path)
    message = _check(err, path, "users.path")
    assert str((tmp_path / "users.csv").resolve()) in message


def test_missing_party_file_in_job(tmp_path: Path) -> None:
    path = _write(tmp_path / "job.toml", '[parties]\nactive = "e.toml"\npassive = "e.toml"\n')
    with pytest.raises(ConfigError) as err:
        load_job_config(path)
    assert str((tmp_path / "e.toml").resolve()) in _check(err, path, "parties.active")


def test_items_on_passive_is_rejected(tmp_path: Path) -> None:
    text = PASSIVE + '\n[items]\npath = "users.csv"\nid_column = "item_id"\n'
    path = _passive(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_party_config(path)
    assert "passive" in _check(err, path, "items")


@pytest.mark.parametrize("section", ["items", "interactions"])
def test_active_needs_items_and_interactions(tmp_path: Path, section: str) -> None:
    start = ACTIVE.index(f"[{section}]")
    end = ACTIVE.find("\n[", start + 1)
    text = ACTIVE[:start] + (ACTIVE[end:] if end != -1 else "")
    path = _active(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_party_config(path)
    assert f"add an [{section}] section" in _check(err, path, section)


@pytest.mark.parametrize(
    ("old", "new", "key", "column"),
    [
        ('numeric = ["spend"]', 'numeric = ["spend", "spend"]', "users.numeric", "spend"),
        ('categorical = ["card"]', 'categorical = ["card", "spend"]', "users.categorical", "spend"),
        ('categorical = ["card"]', 'categorical = ["card", "card"]', "users.categorical", "card"),
    ],
)
def test_column_listed_twice(tmp_path: Path, old: str, new: str, key: str, column: str) -> None:
    path = _passive(tmp_path, PASSIVE.replace(old, new))
    with pytest.raises(ConfigError) as err:
        load_party_config(path)
    assert f"column '{column}'" in _check(err, path, key)


def test_interaction_column_used_twice(tmp_path: Path) -> None:
    path = _active(tmp_path, ACTIVE.replace('time_column = "ts"', 'time_column = "item_id"'))
    with pytest.raises(ConfigError) as err:
        load_party_config(path)
    assert "'item_id'" in _check(err, path, "interactions.time_column")


@pytest.mark.parametrize("field", ["numeric", "categorical"])
def test_id_column_listed_as_feature(tmp_path: Path, field: str) -> None:
    text = PASSIVE.replace(f'{field} = ["', f'{field} = ["user_id", "')
    path = _passive(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_party_config(path)
    assert "id column 'user_id'" in _check(err, path, f"users.{field}")


def test_unknown_suffix_needs_format(tmp_path: Path) -> None:
    path = _active(tmp_path, ACTIVE.replace('format = "csv"\n', ""))
    with pytest.raises(ConfigError) as err:
        load_party_config(path)
    assert "'.txt'" in _check(err, path, "interactions.format")


def test_many_problems_are_counted(tmp_path: Path) -> None:
    text = PASSIVE.replace("numeric =", "nmeric =").replace("categorical =", "catgorical =")
    path = _passive(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_party_config(path)
    assert "1 more problem" in str(err.value)


def test_job_protocol_mode_is_checked(tmp_path: Path) -> None:
    # Prepare: a typo in [train] protocol
    _passive(tmp_path)
    text = '[parties]\nactive = "p.toml"\npassive = "p.toml"\n[train]\nprotocol = "plain"\n'
    job_file = _write(tmp_path / "job.toml", text)
    # Execute / Assert: the error names the key and the accepted values
    with pytest.raises(ConfigError) as err:
        load_job_config(job_file)
    msg = _check(err, job_file, "train.protocol")
    assert "encrypted" in msg and "plaintext" in msg


def test_psi_section_selects_the_curve(tmp_path: Path) -> None:
    from vfl.config.job import PsiCurve

    _passive(tmp_path)
    head = '[parties]\nactive = "p.toml"\npassive = "p.toml"\n'
    job = load_job_config(_write(tmp_path / "job.toml", head))
    assert job.psi.curve is PsiCurve.X25519 and job.psi.workers is None
    text = head + '[psi]\ncurve = "ed25519"\nchunk_size = 512\nworkers = 1\n'
    job = load_job_config(_write(tmp_path / "job.toml", text))
    assert (job.psi.curve, job.psi.chunk_size, job.psi.workers) == (PsiCurve.ED25519, 512, 1)
    path = _write(tmp_path / "job.toml", head + '[psi]\ncurve = "p256"\n')
    with pytest.raises(ConfigError) as err:
        load_job_config(path)
    assert "x25519" in _check(err, path, "psi.curve")


def test_passive_learning_rate_defaults_to_e_s_and_sets_p_s_optimizer() -> None:
    import torch

    from vfl.training.recommenders import passive_optimizer

    bottom = torch.nn.Linear(3, 2)
    same = TrainConfig(learning_rate=0.01)
    own = TrainConfig(learning_rate=0.01, passive_learning_rate=3e-4)
    assert passive_optimizer(bottom, same).param_groups[0]["lr"] == 0.01
    assert passive_optimizer(bottom, own).param_groups[0]["lr"] == 3e-4
    with pytest.raises(ValueError, match="passive_learning_rate"):
        TrainConfig(passive_learning_rate=0.0)
