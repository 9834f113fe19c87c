"""What the coordinator and the passive party learn from a real run, recorded where it arrives:
every heartbeat the coordinator receives and every reply it sends, over a real mutual-TLS gRPC
relay with both parties' real ``run_party`` (PSI, Paillier, export), and every byte relayed.

By default the coordinator learns E's phase and epoch number and P's phase, never a loss, a
metric or the intersection size; a heartbeat reply tells a party only the peer's phase, state
and age. Sessions have forward secrecy: both parties' pinned ``.box`` keys, stolen after the
run, open none of the session's relayed payloads.
"""

from __future__ import annotations

import io
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nacl.exceptions
import nacl.public
import pytest

from tests.test_processes import SEEDS, _prepare
from tests.timing import scaled
from vfl.config.coordinator import load_coordinator_config
from vfl.config.party import Published, load_party_config, read_network_pems
from vfl.errors import ConfigError
from vfl.evaluation.metrics import RankingMetrics
from vfl.party.publishing import Publisher
from vfl.party.runner import PartyRun, _dial, run_party
from vfl.training.loop import EpochRecord
from vfl.transport.framing import split_frame
from vfl.transport.grpc_relay import RelayServer, read_capture
from vfl.transport.grpc_status import fetch_status
from vfl.transport.sealing import read_key

PEMS = ("ca_pem", "cert_pem", "key_pem")
SECRET_KEYS = {"loss", "valid_ndcg", "auc", "hr@10", "ndcg@10", "logloss", "aligned_users"}


class RecordingRelay(RelayServer):
    """The real relay, keeping every heartbeat it receives and the reply it sends back."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.beats: list[tuple[str, dict[str, Any], dict[str, Any]]] = []
        self._lock = threading.Lock()

    def _heartbeat(self, request: bytes, context: Any) -> bytes:
        reply = super()._heartbeat(request, context)
        with self._lock:
            self.beats.append((self._caller(context), json.loads(request), json.loads(reply)))
        return reply

    def received_from(self, party: str) -> list[dict[str, Any]]:
        """The heartbeats ``party`` sent, in order."""
        return [beat for who, beat, _ in self.beats if who == party]

    def replies_to(self, party: str) -> list[dict[str, Any]]:
        """The heartbeat replies ``party`` received, in order."""
        return [reply for who, _, reply in self.beats if who == party]


def start_relay(coordinator_toml: Path, capture: io.BytesIO | None = None) -> RecordingRelay:
    """The coordinator of ``coordinator_toml``, in this process, listening on its port."""
    cfg = load_coordinator_config(coordinator_toml)
    section = cfg.coordinator
    ca, cert, key = cfg.read_pems()
    plan = cfg.read_plan(coordinator_toml)
    relay = RecordingRelay(
        section.bind,
        ca_pem=ca,
        cert_pem=cert,
        key_pem=key,
        allowed_parties=set(section.parties),
        job_id=section.job,
        plan=None if plan is None else plan.to_json(),
        capture=capture,
    )
    relay.start()
    return relay


@dataclass
class Run:
    """A finished run: its directory, the recording relay and its capture of relayed frames."""

    root: Path
    files: dict[str, Path]
    relay: RecordingRelay
    capture: bytes
    results: dict[str, Any] = field(default_factory=dict)


def run_both(root: Path, files: dict[str, Path], relay: RelayServer) -> dict[str, Any]:
    """E and P's ``run_party`` as two threads (as two processes would), to the end."""
    results: dict[str, Any] = {}

    def party(k: str) -> None:
        cfg = load_party_config(files[k])
        run = PartyRun(cfg, files[k], root / k, local_seed=SEEDS[k])
        try:
            results[k] = run_party(run, emit=lambda line: None)
        except BaseException as exc:  # reported below
            results[k] = exc

    threads = [threading.Thread(target=party, args=(k,), daemon=True) for k in ("p", "e")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=scaled(300))
        assert not t.is_alive(), "a party is still running"
    for k, value in results.items():
        assert not isinstance(value, BaseException), f"{k}: {value!r}"
    return results


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    """One complete run (512-bit keys, one epoch) through a recording in-process coordinator."""
    pilot = _prepare(tmp_path_factory.mktemp("learns"), epochs=1)
    capture = io.BytesIO()
    relay = start_relay(pilot.files["coordinator"], capture)
    try:
        results = run_both(pilot.root, pilot.files, relay)
    finally:
        relay.stop()
    yield Run(pilot.root, pilot.files, relay, capture.getvalue(), results)


def _keys_seen(beats: list[dict[str, Any]]) -> set[str]:
    return {k for beat in beats for k in beat["progress"]}


def test_coordinator_learns_phase_and_epoch_never_loss_metric_or_size(run: Run) -> None:
    # Prepare: every heartbeat the coordinator received
    from_e, from_p = run.relay.received_from("shop"), run.relay.received_from("payments")
    # Assert: the run worked and published progress, within the default [party] publish
    assert run.results["e"]["split_encrypted"]["auc"] > 0.5 and from_e and from_p
    assert _keys_seen(from_e) == {"epoch"}
    assert "train" in {b["phase"] for b in from_e} and from_e[-1]["phase"] == "export"
    assert from_e[-1]["state"] == "done" and from_e[-1]["progress"] == {"epoch": 1}
    # P publishes its phase and state, no count at all (not the intersection size)
    assert _keys_seen(from_p) == set() and from_p[-1]["state"] == "done"
    assert "train" in {b["phase"] for b in from_p}  # heartbeats sample the phases
    every = [key for _, beat, _ in run.relay.beats for key in beat["progress"]]
    assert not SECRET_KEYS & set(every)


def test_heartbeat_replies_give_a_party_only_the_peers_phase_and_state(run: Run) -> None:
    # Prepare: every reply P received (and E, for symmetry)
    replies = run.relay.replies_to("payments") + run.relay.replies_to("shop")
    assert run.relay.replies_to("payments")  # a short run on a fast machine sends few
    # Assert: age, phase and state of each party; no progress, loss, metric or size
    entries = [entry for reply in replies for entry in reply["parties"].values()]
    assert {key for entry in entries for key in entry} == {"age_s", "phase", "state"}
    assert not SECRET_KEYS & {key for entry in entries for key in entry}
    shop_phases = {r["parties"]["shop"]["phase"] for r in run.relay.replies_to("payments")}
    assert "train" in shop_phases  # the peer's phase does arrive


def _frames(run: Run) -> list[tuple[str, bytes]]:
    return [(h.sender, body) for h, body in map(split_frame, read_capture(run.capture))]


def _open(box: nacl.public.Box, body: bytes) -> tuple[dict[str, Any], bytes] | None:
    """``(header, payload)`` of an envelope ``box`` opens (with or without a kind prefix)."""
    for start in (0, 1, 17):
        try:
            plain = box.decrypt(body[start:])
        except nacl.exceptions.CryptoError:
            continue
        n = int.from_bytes(plain[:2], "big")
        return json.loads(plain[2 : 2 + n]), plain[2 + n :]
    return None


def test_stolen_box_keys_open_no_recorded_session_payload(run: Run) -> None:
    # Prepare: the coordinator's capture of the whole run; after it, both pinned private keys
    certs = run.root / "certs"
    private = {n: read_key(certs / f"{n}.box", "box key") for n in ("shop", "payments")}
    public = {n: read_key(certs / f"{n}.box.pub", "box key") for n in ("shop", "payments")}
    static = nacl.public.Box(
        nacl.public.PrivateKey(private["shop"]), nacl.public.PublicKey(public["payments"])
    )
    bodies = [body for _, body in _frames(run)]
    # Execute: the attacker opens what the pinned keys open: the session hellos, with their
    # ephemeral public keys; then tries every key it can form on everything else
    opened = {i: got for i, body in enumerate(bodies) if (got := _open(static, body))}
    hellos = {i for i, (header, _) in opened.items() if header["job"].endswith("/hello")}
    ephemeral = {bytes.fromhex(json.loads(opened[i][1]).get("eph", "")) for i in hellos} - {b""}
    boxes = [
        nacl.public.Box(nacl.public.PrivateKey(private[n]), nacl.public.PublicKey(eph))
        for n in private
        for eph in ephemeral
    ]
    rest = [body for i, body in enumerate(bodies) if i not in hellos]
    leaked = [i for i in opened if i not in hellos]
    leaked += [k for k, body in enumerate(rest) for box in boxes if _open(box, body)]
    # Assert: the session carried the whole job (the run worked) and not one payload opens
    assert leaked == []
    assert len(hellos) >= 2 and len(ephemeral) == 2
    assert len(rest) > 50 and sum(map(len, rest)) > 100_000


def test_what_e_opts_to_publish_reaches_the_coordinator_but_not_p(run: Run) -> None:
    # Prepare: E's config with every entry published, the same coordinator, E and P dialled
    e_cfg = load_party_config(run.files["e"])
    party = e_cfg.party.model_copy(update={"publish": tuple(Published)})
    e_cfg = e_cfg.model_copy(update={"party": party})
    p_cfg = load_party_config(run.files["p"])
    assert e_cfg.network is not None and p_cfg.network is not None
    relay = start_relay(run.files["coordinator"])
    e, p = _dial(e_cfg, e_cfg.network), _dial(p_cfg, p_cfg.network)
    metrics = RankingMetrics(hr=0.5, ndcg=0.25, auc=0.75, logloss=0.2, k=10)
    try:
        e.join(), p.join()
        publish = Publisher(e, e_cfg)
        publish.phase("train")
        publish.epoch(EpochRecord(3, 0.1234567, metrics, metrics, 1.0))
        # Execute
        publish.done({"split_encrypted": {"auc": 0.75, "hr@10": 0.5, "ndcg@10": 0.25}})
        p.start_heartbeat(interval_s=0.1)
        p.report(phase="train")
        at_c = relay.board.status()["shop"]
        views = {
            k: fetch_status(net.coordinator, **dict(zip(PEMS, read_network_pems(net), strict=True)))
            for k, net in (("e", e_cfg.network), ("p", p_cfg.network))
        }
        deadline = time.monotonic() + scaled(10)
        while not relay.replies_to("payments") and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        e.close(), p.close()
        relay.stop()
    # Assert: C shows what E chose to publish; P's reply still holds only phase and state
    assert at_c.phase == "train" and at_c.state.value == "done"
    assert at_c.progress == {
        "epoch": 3,
        "loss": 0.1235,
        "valid_ndcg": 0.25,
        "auc": 0.75,
        "hr@10": 0.5,
        "ndcg@10": 0.25,
    }
    reply = relay.replies_to("payments")[0]["parties"]["shop"]
    assert set(reply) == {"age_s", "phase", "state"} and reply["state"] == "done"
    # ``vfl status`` shows E its own progress, and P only E's epoch number
    assert views["e"].parties["shop"].progress == at_c.progress
    assert views["p"].parties["shop"].progress == {"epoch": 3}


def test_unknown_publish_entry_is_refused_naming_key_and_choices(tmp_path: Path) -> None:
    # Prepare
    (tmp_path / "users.csv").write_text("user_id\nu1\n")
    config = tmp_path / "e.toml"
    config.write_text(
        '[party]\nname = "payments"\nrole = "passive"\npublish = ["phase", "losss"]\n'
        '[users]\npath = "users.csv"\nid_column = "user_id"\n'
    )
    # Execute / Assert
    with pytest.raises(ConfigError) as err:
        load_party_config(config)
    text = str(err.value)
    assert "party.publish[1]" in text and "'losss'" in text and "'valid_ndcg'" in text
