"""Serving and batch inference with two partners, through real processes: coordinator, E, P
(payments) and L (logistics) train and export over gRPC + mutual TLS with 512-bit keys, then
``vfl serve`` at P and L answer E's refreshes, ``vfl infer`` and E's HTTPS service score.

Checked: the scores equal those of the exported model put together in this test only
(``W_Bk = U_k + V_k`` of each partner, ``a_k`` for a partner that does not know the user) for
users known to both partners, to one only and to none; each passive party was asked about
all of its own aligned users and nothing else, over its own link; and a partner that
vanishes fails the next refresh with its name while E keeps serving its cache."""

from __future__ import annotations

import json
import signal
import ssl
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import torch

from tests.proc_helpers import Proc, free_port
from tests.timing import scaled
from vfl.cli.pilot_cmd import Dataset, pilot_train, write_run_configs
from vfl.cli.pilot_runs import RunFiles
from vfl.config.party import load_party_config
from vfl.config.plan import JobPlan
from vfl.data.formats import dumps_toml
from vfl.data.loading import load_party_data
from vfl.data.synthetic_writer import generate_synthetic
from vfl.data.tables import ActiveData, PassiveData
from vfl.kinds import BottomInputs, load_kind
from vfl.party.export import load_pair
from vfl.party.recommend import universe_head, user_universe
from vfl.training.inputs import TableTensors
from vfl.transport.certs import generate_dev_pki
from vfl.transport.framing import split_frame
from vfl.transport.grpc_relay import read_capture

TOKEN = "test-token-0123456789abcdef"
PARTNERS = {"payments": "p", "logistics": "l"}  # partner name -> short name (dir, config)
SEEDS = {"e": 11, "p": 22, "l": 33}
CHOSEN = [0, 7, 19]  # the items scored for each user in vfl infer's pairs


@dataclass
class Job:
    """The finished three-party job, its serving processes and an HTTPS client of E's API."""

    root: Path
    files: RunFiles
    procs: dict[str, Proc]
    client: httpx.Client | None = None

    def start(self, k: str, *args: str) -> Proc:
        self.procs[k] = Proc(*args, cwd=self.root, env={"OMP_NUM_THREADS": "1"})
        return self.procs[k]

    def coordinator(self) -> None:
        self.start("coordinator", "coordinator", "--config", str(self.files.coordinator))
        self.procs["coordinator"].wait_line("listening on", scaled(30))

    def frames_to(self, party: str) -> int:
        """Frames the coordinator relayed to ``party`` since serving began (its capture)."""
        data = (self.root / "relay.capture").read_bytes()
        return sum(split_frame(f)[0].recipient == party for f in read_capture(data))

    def stop_all(self) -> None:
        for proc in self.procs.values():
            proc.kill_group()


def _train(root: Path) -> Job:
    """Data with a third organisation, configs as ``vfl pilot --parties 3`` writes them
    (without P's embedding noise, so that scores can be compared exactly), one epoch of
    encrypted training to the export."""
    generate_synthetic(root / "data", users=120, items=150, overlap=0.7, seed=3, third_party=0.5)
    train = pilot_train(Dataset.SYNTHETIC, epochs=1, patience=1, key_bits=512, users_per_step=16)
    files = write_run_configs(root, train, plaintext=False, parties=3)["encrypted"]
    table = tomllib.loads(files.job.read_text())
    table["privacy"]["embedding_noise"] = 0.0
    files.job.write_text(dumps_toml(table))
    job = Job(root, files, {})
    job.coordinator()
    for k in ("p", "l", "e"):
        args = ("party", "--config", str(files.parties[k]), "--out", str(root / k))
        job.start(k, *args, "--local-seed", str(SEEDS[k]))
    for k in ("p", "l", "e"):
        code = job.procs[k].wait(scaled(600))
        assert code == 0, job.procs[k].text[-3000:]
    job.procs["coordinator"].signal(signal.SIGTERM)
    job.procs["coordinator"].wait(scaled(30))
    return job


def _serving_section(job: Job) -> None:
    """E's ``[serving]`` (HTTPS cert from a dev PKI, token file); the coordinator's capture."""
    pki = job.root / "https"
    generate_dev_pki(pki, parties=["caller"], services=["shop"])
    token = job.root / "token.txt"
    token.write_text(TOKEN + "\n")
    port = free_port()
    e_cfg = job.files.e
    e_cfg.write_text(
        e_cfg.read_text()
        + f'\n[serving]\nlisten = "127.0.0.1:{port}"\ntls_cert = "{pki / "shop-https.pem"}"\n'
        f'tls_key = "{pki / "shop-https.key"}"\ntoken_file = "{token}"\n'
    )
    coordinator = job.files.coordinator
    coordinator.write_text(coordinator.read_text() + 'capture = "../relay.capture"\n')


def _wait_ready(job: Job, timeout: float) -> None:
    """Until E's service has finished its own refresh at start."""
    assert job.client is not None
    deadline = time.monotonic() + scaled(timeout)
    last: object = None
    while time.monotonic() < deadline:
        try:
            last = job.client.get("/healthz").json()
            if isinstance(last, dict) and last["refreshes"]["ok"] >= 1:
                return
        except httpx.TransportError as exc:
            last = exc
        if job.procs["es"].popen.poll() is not None:
            break
        time.sleep(0.2)
    pytest.fail(f"E's service never refreshed ({last}):\n{job.procs['es'].text[-3000:]}")


@pytest.fixture(scope="module")
def job(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Job]:
    """Train and export; then P's and L's ``vfl serve``, one ``vfl infer --pairs`` at E (with
    no cache yet: one refresh with each partner) and E's HTTPS service (a refresh at start)."""
    root = tmp_path_factory.mktemp("serve3")
    trained = _train(root)
    try:
        _serving_section(trained)
        trained.coordinator()
        for k in PARTNERS.values():
            config, model = str(trained.files.parties[k]), str(root / k / "model")
            trained.start(f"{k}s", "serve", "--config", config, "--model", model)
        yield trained
    finally:
        trained.stop_all()


def _pairs_csv(job: Job, reference: Reference) -> Path:
    """Items 0, 7 and 19 for one user of each group."""
    csv = job.root / "pairs.csv"
    rows = [(u, reference.item_ids[j]) for u in reference.groups().values() for j in CHOSEN]
    csv.write_text("user_id,item_id\n" + "".join(f"{u},{i}\n" for u, i in rows))
    return csv


@pytest.fixture(scope="module")
def inferred(job: Job, reference: Reference) -> list[dict[str, Any]]:
    """``vfl infer --pairs`` at E's work directory; its answer's rows."""
    answer = job.root / "answer.json"
    args = ("--model", str(job.root / "e"), "--pairs", str(_pairs_csv(job, reference)))
    infer = job.start("ei", "infer", "--config", str(job.files.e), *args, "--out", str(answer))
    assert infer.wait(scaled(300)) == 0, infer.text[-3000:]
    rows: list[dict[str, Any]] = json.loads(answer.read_text())["pairs"]
    return rows


@pytest.fixture(scope="module")
def service(job: Job, inferred: list[dict[str, Any]]) -> httpx.Client:
    """E's HTTPS service (after ``vfl infer``: one process of E at a time), refreshed once."""
    listen = tomllib.loads(job.files.e.read_text())["serving"]["listen"]
    job.start("es", "serve", "--config", str(job.files.e), "--model", str(job.root / "e"))
    tls = ssl.create_default_context(cafile=str(job.root / "https" / "ca.pem"))
    job.client = httpx.Client(
        base_url=f"https://{listen}",
        verify=tls,
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=scaled(60),
    )
    _wait_ready(job, 180)
    return job.client


class Reference:
    """The exported model put together in this test only: per partner ``W_Bk = (U_k + V_k)
    / 2^w`` and ``z_Bk = b_k·W_Bk`` of every user it knows; E's head and ``a_k``."""

    def __init__(self, job: Job) -> None:
        self.e_data = load_party_data(load_party_config(job.files.e))
        assert isinstance(self.e_data, ActiveData)
        self.pairs = {
            name: load_pair(job.root / "e" / "partners" / name / "model", job.root / k / "model")
            for name, k in PARTNERS.items()
        }
        e_shards = [e for e, _ in self.pairs.values()]
        self.plan = JobPlan.from_json((e_shards[0].path / "plan.json").read_text(), "plan.json")
        self.head = universe_head(e_shards, self.e_data, self.plan)
        self.universe = user_universe(e_shards, self.e_data)
        self.z = {name: self._z_b(job, name) for name in PARTNERS}
        self.item_ids = [str(i) for i in self.e_data.items.ids.tolist()]

    def _z_b(self, job: Job, name: str) -> torch.Tensor:
        e, p = self.pairs[name]
        data = load_party_data(load_party_config(job.files.parties[PARTNERS[name]]))
        assert isinstance(data, PassiveData)
        (u, w_bits), (v, _) = e.share(), p.share()
        w_b = torch.tensor(((u + v).astype(float) / 2.0**w_bits).astype(np.float32))
        rows = TableTensors.from_table(data.users, p.alignment().rows)
        bottom = load_kind(data.kind).bottom(BottomInputs(rows), self.plan.model)
        bottom.load_state_dict(p.state_dict("bottom.pt"))
        bottom.eval()
        with torch.no_grad():
            z: torch.Tensor = bottom(rows.numeric, rows.categorical) @ w_b
        return z

    def known_to(self, user: str) -> list[str]:
        pos = self.universe.ids.tolist().index(user)
        return [n for n, at in zip(PARTNERS, self.universe.positions, strict=True) if at[pos] >= 0]

    def probs(self, user: str) -> np.ndarray:
        """Every catalogue item's probability for ``user``."""
        pos = self.universe.ids.tolist().index(user)
        assert self.head.partners is not None
        total = torch.zeros(self.head.partners.absent.shape[1])
        for k, (name, at) in enumerate(zip(PARTNERS, self.universe.positions, strict=True)):
            total = total + (
                self.z[name][int(at[pos])] if at[pos] >= 0 else self.head.partners.absent[k]
            )
        items = torch.arange(len(self.item_ids))
        rows = torch.full((len(items),), pos, dtype=torch.int64)
        with torch.no_grad():
            logits = self.head.logits(rows, items, total.detach().expand(len(items), -1))
        return torch.sigmoid(logits).numpy()

    def groups(self) -> dict[str, str]:
        """One user per group: known to both, to payments only, to logistics only, to none."""
        known = np.stack(self.universe.positions) >= 0
        pick = {
            "both": known[0] & known[1],
            "payments": known[0] & ~known[1],
            "logistics": ~known[0] & known[1],
            "none": ~known[0] & ~known[1],
        }
        out = {}
        for group, mask in pick.items():
            assert mask.any(), f"no user known to {group}"
            out[group] = str(self.universe.ids[np.flatnonzero(mask)[0]])
        return out


@pytest.fixture(scope="module")
def reference(job: Job) -> Reference:
    return Reference(job)


def test_vfl_infer_scores_every_group_like_the_exported_model(
    job: Job, reference: Reference, inferred: list[dict[str, Any]]
) -> None:
    # Execute: (the fixture) E's batch inference with no cache: one refresh with each partner
    users = reference.groups()
    # Assert: the reference's scores, each path and the contributing partners named
    for n, (group, user) in enumerate(users.items()):
        want = reference.probs(user)[CHOSEN]
        mine = inferred[3 * n : 3 * n + 3]
        assert {r["user"] for r in mine} == {user}
        np.testing.assert_allclose([r["score"] for r in mine], want, atol=1e-4, err_msg=group)
        assert {r["path"] for r in mine} == {"e_only" if group == "none" else "vfl"}
        assert mine[0]["partners"] == reference.known_to(user)
    for name in PARTNERS:  # one cache per partner, next to E's shard for it
        assert (job.root / "e" / "partners" / name / "serving" / "zb.npy").is_file()


def test_the_service_serves_every_group_like_the_exported_model(
    service: httpx.Client, reference: Reference
) -> None:
    for group, user in reference.groups().items():
        # Prepare
        probs = reference.probs(user)
        want = [reference.item_ids[i] for i in np.lexsort((np.arange(len(probs)), -probs))[:10]]
        pairs = [{"user": user, "item": reference.item_ids[j]} for j in (3, 11)]
        # Execute
        got = service.get("/recommend", params={"user": user, "k": 10, "exclude_seen": "false"})
        scored = service.post("/score", json={"pairs": pairs})
        # Assert: the reference's top 10 and scores, the path and the partners named
        assert got.status_code == 200, got.text
        body = got.json()
        assert [r["item"] for r in body["top_k"]] == want, group
        for row in body["top_k"]:
            assert row["score"] == pytest.approx(
                float(probs[reference.item_ids.index(row["item"])]), abs=1e-4
            )
        assert body["path"] == ("e_only" if group == "none" else "vfl")
        assert body["partners"] == reference.known_to(user)
        assert scored.status_code == 200, scored.text
        np.testing.assert_allclose(
            [r["score"] for r in scored.json()["pairs"]], probs[[3, 11]], atol=1e-4
        )


def test_each_partner_was_asked_about_its_own_aligned_users_only(
    job: Job, reference: Reference, service: httpx.Client
) -> None:
    # Prepare: each partner's intersection with E, as E and the partner recorded it
    for name, k in PARTNERS.items():
        own = json.loads((job.root / k / "alignment.json").read_text())["ids"]
        e_side = reference.pairs[name][0].alignment()
        n = len(own)
        assert n == len(e_side) < len(reference.universe)
        # Assert: each refresh (vfl infer's and the service's) asked about all n, nothing else
        log = job.procs[f"{k}s"].text
        answered = [ln for ln in log.splitlines() if "served refresh" in ln]
        assert len(answered) == 2, log[-3000:]
        for line in answered:
            assert f"z_B of {n} of its {n} aligned users, positions 0..{n - 1}" in line
        other = next(o for o in PARTNERS if o != name)
        assert other not in log
        # ... over its own link: frames were relayed to each partner
        assert job.frames_to(name) > 0


def test_a_vanished_partner_fails_the_refresh_by_name_and_the_cache_stays(
    job: Job, reference: Reference, service: httpx.Client
) -> None:
    # Prepare: L's serve process dies
    user = reference.groups()["both"]
    before = service.get("/recommend", params={"user": user, "k": 10}).json()
    job.procs["ls"].kill_group()
    # Execute
    started = time.monotonic()
    refresh = service.post("/refresh", timeout=scaled(120))
    seconds = time.monotonic() - started
    after = service.get("/recommend", params={"user": user, "k": 10})
    health = service.get("/healthz").json()
    # Assert: a 503 naming logistics, soon; the old caches still serve the same answers
    assert refresh.status_code == 503, refresh.text
    detail = refresh.json()["detail"]
    assert "refresh failed" in detail and "'logistics'" in detail and "still serving" in detail
    assert seconds < scaled(90), seconds
    assert after.status_code == 200 and after.json()["top_k"] == before["top_k"]
    assert health["refreshes"]["failed"] == 1 and "logistics" in health["last_refresh_error"]
