"""Network configs for E with two passive parties: E lists both as ``[[network.partners]]``
(each with its pinned key and schema), each passive party names E alone, and the coordinator
names E as the active party."""

from __future__ import annotations

from pathlib import Path

from vfl.cli.netconfig import NetworkLayout, write_network_configs
from vfl.config.coordinator import load_coordinator_config
from vfl.config.party import load_party_config
from vfl.data.synthetic_writer import generate_synthetic
from vfl.party.handshake import schema_fingerprint
from vfl.transport.certs import generate_dev_pki
from vfl.transport.sealing import write_box_keys


def test_e_lists_each_partner_and_each_partner_names_e_only(tmp_path: Path) -> None:
    # Prepare: the three organisations' configs
    data = tmp_path / "data"
    generate_synthetic(data, users=60, items=40, seed=1, third_party=0.5)
    files = {
        n: data / f"{k}_party.toml"
        for n, k in (("shop", "e"), ("payments", "p"), ("logistics", "l"))
    }
    names = ("shop", "payments", "logistics")
    generate_dev_pki(tmp_path / "certs", parties=list(names))
    for name in names:
        write_box_keys(tmp_path / "certs", name)
    layout = NetworkLayout(tmp_path / "certs", names)
    # Execute
    written = write_network_configs(layout, files)
    # Assert: E's partners, with their pinned keys and schemas
    e = load_party_config(written["shop"])
    assert e.network is not None and e.network.peer is None
    partners = {p.name: p for p in e.network.partners}
    assert list(partners) == ["payments", "logistics"]
    for name in partners:
        assert partners[name].box_public.name == f"{name}.box.pub"
        assert partners[name].schema_sha256 == schema_fingerprint(load_party_config(files[name]))
    # ... each passive party knows E only; no file of one partner names the other
    for me, other in (("payments", "logistics"), ("logistics", "payments")):
        cfg = load_party_config(written[me])
        assert cfg.network is not None and cfg.network.peer == "shop" and not cfg.network.partners
        assert other not in written[me].read_text()
        assert other not in (tmp_path / "certs" / f"{me}.network.toml").read_text()
    coordinator = load_coordinator_config(written["coordinator"]).coordinator
    assert coordinator.active == "shop"
    assert list(coordinator.parties) == ["shop", "payments", "logistics"]
