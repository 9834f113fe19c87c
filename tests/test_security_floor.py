"""Each party's own security floor: a plan below it is refused by name, before any key exists.

The coordinator hands out the plan but is trusted with no data, so neither party may take the
plan's word for its key size or re-randomisation: ``[party] min_key_bits`` (default 2048) and
``[party] allow_short_exponent`` (default false) in each party's own config decide.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.secure_helpers import BITS, CFG, keys, settings
from tests.test_processes import Pilot, _prepare
from tests.timing import scaled
from vfl.config.party import load_party_config
from vfl.data.party_files import dumps_toml
from vfl.errors import ConfigError, SecurityFloorError
from vfl.protocol.options import Mode, Randomness, SecurityFloor
from vfl.protocol.secure_layer import ActiveShare, PassiveShare


def _update(path: Path, section: str, values: dict[str, object]) -> None:
    table = tomllib.loads(path.read_text())
    table.setdefault(section, {}).update(values)
    path.write_text(dumps_toml(table))


@pytest.fixture()
def pilot(tmp_path: Path) -> Iterator[Pilot]:
    """A 512-bit job whose party configs both accept 512-bit keys (tests.helpers)."""
    run = _prepare(tmp_path, epochs=1)
    yield run
    for proc in run.procs.values():
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)


CASES = {
    # E's own config keeps the default floor of 2048 bits; the plan says 512
    "e-key": ("e", {"min_key_bits": 2048}, {}, ["train.key_bits = 512", "min_key_bits = 2048"]),
    "p-key": ("p", {"min_key_bits": 1024}, {}, ["train.key_bits = 512", "min_key_bits = 1024"]),
    # P accepts 512-bit keys but not short-exponent re-randomisation of what it receives
    "p-short": (
        "p",
        {},
        {"randomness": "short_exponent"},
        ["train.randomness = 'short_exponent'", "allow_short_exponent"],
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_party_process_refuses_a_plan_below_its_own_floor(pilot: Pilot, case: str) -> None:
    # Prepare: the coordinator's plan (job file) and one party's own floor
    k, floor, plan, words = CASES[case]
    _update(pilot.files[k], "party", floor)
    _update(pilot.files["job"], "train", plan)
    name = load_party_config(pilot.files[k]).party.name
    pilot.start_coordinator()
    # Execute: that party alone joins; it must stop at the plan, not wait for its peer
    pilot.start_party(k)
    code = pilot.wait_exit(k, scaled(60))
    # Assert: one clear line naming the party, the plan key, its own config key and the fix
    log = pilot.log(k)
    assert code == 2, log
    assert f"party '{name}' refuses the plan" in log and str(pilot.files[k]) in log
    assert all(w in log for w in words) and "Fix:" in log, log
    assert "Traceback" not in log
    # refused on receipt: nothing of the job (plan copy, PSI state, keys) was written
    work = pilot.root / k
    assert not work.exists() or not any(work.iterdir()), sorted(work.iterdir())


def test_the_layer_refuses_settings_below_the_floor_in_process() -> None:
    # Prepare: 512-bit test settings, and the parties' default floor (2048 bits, full only)
    d, h = CFG.passive_out, CFG.interactive_out
    u = np.zeros((d, h), dtype=object)  # any share: the floor is checked first
    # Execute / Assert: in-process construction (vfl compare, tests) checks the floor too
    with pytest.raises(SecurityFloorError, match=r"party 'E'.*key_bits = 512.*Fix:"):
        ActiveShare(u=u, settings=settings(), keys=keys("E"))
    short = settings(rerandomise=Randomness.SHORT_EXPONENT)
    with pytest.raises(SecurityFloorError, match=r"party 'P'.*short_exponent.*Fix:"):
        PassiveShare(v=u, settings=short, keys=keys("P"), floor=SecurityFloor(min_key_bits=BITS))
    # the same settings pass a floor that allows them; plaintext mode has its own consent
    ok = SecurityFloor(min_key_bits=BITS, allow_short_exponent=True)
    PassiveShare(v=u, settings=short, keys=keys("P"), floor=ok).close()
    SecurityFloor().check(mode=Mode.PLAINTEXT, key_bits=0, randomness=Randomness.FULL, party="E")


def test_the_floor_defaults_to_2048_bits_and_is_validated(tmp_path: Path) -> None:
    # Prepare
    users = tmp_path / "u.csv"
    users.write_text("user_id,x\na,1\n")
    base = '[party]\nname = "p"\nrole = "passive"\n{extra}'
    base += '[users]\npath = "u.csv"\nid_column = "user_id"\n'
    path = tmp_path / "p.toml"
    # Execute / Assert: secure defaults
    path.write_text(base.format(extra=""))
    party = load_party_config(path).party
    assert (party.min_key_bits, party.allow_short_exponent) == (2048, False)
    # a floor below 256 bits is not a floor: refused, naming the file and key
    path.write_text(base.format(extra="min_key_bits = 128\n"))
    with pytest.raises(ConfigError) as err:
        load_party_config(path)
    assert err.value.key == "party.min_key_bits" and str(path) in str(err.value)
