"""``configs/three-hosts``: each host's files load with only that organisation's own files."""

from __future__ import annotations

import shutil
import tomllib
from pathlib import Path

import pytest

from vfl.config.coordinator import load_coordinator_config
from vfl.config.party import load_party_config
from vfl.config.plan import load_plan_file
from vfl.data.synthetic_writer import generate_synthetic
from vfl.transport.box_keys import fingerprint, pin_peer_key, write_box_key_pair
from vfl.transport.pki import create_request, init_ca, sign_request

EXAMPLES = Path(__file__).resolve().parents[1] / "configs" / "three-hosts"
HOSTS = {"c": ("coordinator.toml", "job.toml"), "e": ("e_party.toml",), "p": ("p_party.toml",)}
OWN_DATA = {"e": ("e_users.csv", "items.csv", "interactions.csv"), "p": ("p_users.csv",)}
NAMES = {"c": "coordinator", "e": "shop", "p": "payments"}


@pytest.fixture(scope="module")
def hosts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Three host directories, each with its example files, own data and own keys only."""
    root = tmp_path_factory.mktemp("examples")
    generate_synthetic(root / "stage", users=60, items=40, seed=3)
    ca = init_ca(root / "ca")
    dirs = {}
    for host, files in HOSTS.items():
        d = dirs[host] = root / host
        d.mkdir()
        for name in files + OWN_DATA.get(host, ()):
            shutil.copy(EXAMPLES / name if name.endswith(".toml") else root / "stage" / name, d)
        hosts = ("10.213.0.1",) if host == "c" else ()
        request = create_request(d / "keys", NAMES[host], hosts=hosts)
        sign_request(root / "ca", request.request, party=NAMES[host])
        shutil.copy(ca.cert, d / "keys" / "ca.pem")
        if host != "c":
            write_box_key_pair(d / "keys", NAMES[host])
    for me, peer in (("e", "p"), ("p", "e")):
        public = dirs[peer] / "keys" / f"{NAMES[peer]}.box.pub"
        digest = fingerprint(public.read_bytes())
        pin_peer_key(public, name=NAMES[peer], expected=digest, out_dir=dirs[me] / "keys")
    return dirs


def test_each_host_loads_its_configs_from_its_own_files(hosts: dict[str, Path]) -> None:
    coordinator = load_coordinator_config(hosts["c"] / "coordinator.toml").coordinator
    plan = load_plan_file(hosts["c"] / "job.toml")
    assert coordinator.job == plan.job.name and coordinator.parties == ("shop", "payments")
    for host in ("e", "p"):
        cfg = load_party_config(hosts[host] / f"{host}_party.toml")
        assert cfg.party.name == NAMES[host] and cfg.network is not None
        assert cfg.network.coordinator == coordinator.bind
        for path in (cfg.network.ca, cfg.network.cert, cfg.network.key, cfg.network.box_key):
            assert path is not None and hosts[host] in path.parents


def test_no_party_config_names_the_partners_files() -> None:
    for me, peer in (("e", "p"), ("p", "e")):
        text = (EXAMPLES / f"{me}_party.toml").read_text()
        table = tomllib.loads(text)
        assert ".." not in text  # everything it names lies in its own directory
        assert not any(name in text for name in OWN_DATA[peer])
        assert f"{NAMES[peer]}.key" not in text and f'{NAMES[peer]}.box"' not in text
        assert table["network"]["peer_box_public"] == f"keys/{NAMES[peer]}.box.pub"
    assert "parties" not in tomllib.loads((EXAMPLES / "job.toml").read_text())
