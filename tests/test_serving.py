"""The recommendation service with real processes: coordinator, ``vfl serve`` at P (answers
refreshes) and ``vfl serve`` at E (HTTPS API), over gRPC + mutual TLS with 512-bit keys.

Checked: ``/recommend`` and ``/score`` equal the in-process model built from the two shards
(``W_B = U + V`` reconstructed in this test only), the coordinator relays no frame to P
while 100 requests are served, a user P does not know is answered on the E-only path and
labelled so, bad requests get 404/422/401, and with P killed E keeps serving from its cache
while a refresh fails with a clear message."""

from __future__ import annotations

import json
import signal
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch

from tests.proc_helpers import free_port
from tests.test_processes import Pilot, _prepare
from tests.timing import scaled
from vfl.config.party import load_party_config
from vfl.config.plan import JobPlan
from vfl.data.loading import load_party_data
from vfl.data.tables import ActiveData, PassiveData
from vfl.models.bottom import PassiveBottom
from vfl.party.export import load_pair
from vfl.party.recommend import universe_head, user_universe
from vfl.training.inputs import TableTensors
from vfl.transport.certs import generate_dev_pki
from vfl.transport.framing import split_frame
from vfl.transport.grpc_relay import read_capture

TOKEN = "test-token-0123456789abcdef"


class Service:
    """The running job and an HTTPS client of E's API."""

    def __init__(self, run: Pilot, url: str, ca: Path) -> None:
        self.run, self.url = run, url
        self.tls = ssl.create_default_context(cafile=str(ca))
        self.client = httpx.Client(
            base_url=url,
            verify=self.tls,
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=scaled(30),
        )

    def frames_to_p(self) -> int:
        """Frames the coordinator has relayed to P so far (its capture, flushed per frame)."""
        data = (self.run.root / "relay.capture").read_bytes()
        return sum(split_frame(f)[0].recipient == "payments" for f in read_capture(data))

    def wait_health(self, ok: object, timeout: float) -> dict[str, object]:
        """Poll ``/healthz`` until ``ok(answer)``; fails the test after ``timeout`` (scaled)."""
        deadline = time.monotonic() + scaled(timeout)
        last: object = None
        while time.monotonic() < deadline:
            try:
                last = self.client.get("/healthz").json()
                if callable(ok) and ok(last):
                    return dict(last)
            except httpx.TransportError as exc:
                last = exc
            if self.run.procs["es"].poll() is not None:
                break
            time.sleep(0.2)
        pytest.fail(f"E's service never became ready ({last}):\n{self.run.log('es')[-3000:]}")


def _serving_section(run: Pilot) -> tuple[str, Path]:
    """Append E's ``[serving]`` section (HTTPS cert from a dev PKI, token file)."""
    pki = run.root / "https"
    generate_dev_pki(pki, parties=["caller"], services=["shop"])
    token = run.root / "token.txt"
    token.write_text(TOKEN + "\n")
    port = free_port()
    e_cfg = run.files["e"]
    e_cfg.write_text(
        e_cfg.read_text()
        + f'\n[serving]\nlisten = "127.0.0.1:{port}"\ntls_cert = "{pki / "shop-https.pem"}"\n'
        f'tls_key = "{pki / "shop-https.key"}"\ntoken_file = "{token}"\n'
    )
    return f"https://127.0.0.1:{port}", pki / "ca.pem"


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """Train (one epoch), then coordinator + P's and E's long-running services; one refresh."""
    run = _prepare(tmp_path_factory.mktemp("serve"), epochs=1)
    try:
        run.run_to_end()
        url, ca = _serving_section(run)
        (run.root / "relay.capture").unlink()
        run.start_coordinator()
        run.start(
            "ps", "serve", "--config", str(run.files["p"]), "--model", str(run.root / "p/model")
        )
        run.start(
            "es", "serve", "--config", str(run.files["e"]), "--model", str(run.root / "e/model")
        )
        svc = Service(run, url, ca)
        svc.wait_health(lambda h: h["cache_age_s"] is not None, 120)
        yield svc
    finally:
        run.kill_all()


def _reference(run: Pilot, user_id: str, items: np.ndarray) -> tuple[np.ndarray, bool]:
    """Probabilities of ``items`` for ``user_id`` from the two shards put together here only
    (``W_B = (U + V) / 2^w``), and whether P knows the user."""
    e, p = load_pair(run.root / "e" / "model", run.root / "p" / "model")
    plan = JobPlan.from_json((e.path / "plan.json").read_text(), "plan.json")
    e_data = load_party_data(load_party_config(run.files["e"]))
    p_data = load_party_data(load_party_config(run.files["p"]))
    assert isinstance(e_data, ActiveData) and isinstance(p_data, PassiveData)
    head = universe_head(e, e_data, plan)
    universe = user_universe(e, e_data)
    pos = universe.ids.tolist().index(user_id)
    at = int(universe.positions[0][pos])
    (u, w_bits), (v, _) = e.share(), p.share()
    w_b = torch.tensor(((u + v).astype(float) / 2.0**w_bits).astype(np.float32))
    p_rows = TableTensors.from_table(p_data.users, p.alignment().rows)
    m = plan.model
    bottom = PassiveBottom(p_rows.n_numeric, p_rows.cardinalities, m.passive_hidden, m.passive_out)
    bottom.load_state_dict(p.state_dict("bottom.pt"))
    bottom.eval()
    with torch.no_grad():
        if at >= 0:
            idx = torch.tensor([at])
            z = bottom(p_rows.numeric[idx], p_rows.categorical[idx]) @ w_b
        else:
            assert head.partners is not None
            z = head.partners.absent[:1]
        rows = torch.full((len(items),), pos, dtype=torch.int64)
        logits = head.logits(rows, torch.as_tensor(items), z.expand(len(items), -1))
    return torch.sigmoid(logits).numpy(), at >= 0


def _users(run: Pilot) -> tuple[str, str]:
    """A user P knows and one it does not (E's user table minus the aligned ids)."""
    e, _ = load_pair(run.root / "e" / "model", run.root / "p" / "model")
    aligned = set(e.alignment().ids.astype(str).tolist())
    e_data = load_party_data(load_party_config(run.files["e"]))
    others = sorted(set(e_data.users.ids.astype(str).tolist()) - aligned)
    return sorted(aligned)[3], others[0]


def _item_ids(run: Pilot) -> list[str]:
    e_data = load_party_data(load_party_config(run.files["e"]))
    return [str(i) for i in e_data.items.ids.tolist()]


def test_recommend_and_score_equal_the_in_process_model(service: Service) -> None:
    # Prepare
    known, _ = _users(service.run)
    ids = _item_ids(service.run)
    every = np.arange(len(ids))
    probs, is_known = _reference(service.run, known, every)
    assert is_known
    # Execute
    got = service.client.get("/recommend", params={"user": known.upper(), "k": 10})
    pairs = [{"user": known, "item": ids[j]} for j in (0, 7, 19)]
    scored = service.client.post("/score", json={"pairs": pairs})
    # Assert: the same scores as the reconstructed model, path vfl
    assert got.status_code == 200, got.text
    body = got.json()
    assert body["path"] == "vfl" and len(body["top_k"]) == 10
    for row in body["top_k"]:
        assert row["score"] == pytest.approx(float(probs[ids.index(row["item"])]), abs=1e-4)
    scores = [row["score"] for row in body["top_k"]]
    assert scores == sorted(scores, reverse=True)
    assert scored.status_code == 200, scored.text
    np.testing.assert_allclose(
        [r["score"] for r in scored.json()["pairs"]], probs[[0, 7, 19]], atol=1e-4
    )
    assert {r["path"] for r in scored.json()["pairs"]} == {"vfl"}


def test_p_receives_no_message_while_100_requests_are_served(service: Service) -> None:
    # Prepare
    known, other = _users(service.run)
    before = service.frames_to_p()
    assert before > 0  # the refresh itself went through the coordinator
    # Execute
    for n in range(100):
        user = known if n % 2 else other
        assert service.client.get("/recommend", params={"user": user, "k": 10}).status_code == 200
    # Assert: not one frame relayed to P, and the metrics counted the requests
    assert service.frames_to_p() == before
    metrics = service.client.get("/metrics").text
    assert 'vfl_requests_total{endpoint="/recommend",status="200"}' in metrics
    assert "vfl_request_seconds_bucket" in metrics and "vfl_cache_age_seconds" in metrics


def test_a_user_p_does_not_know_is_answered_on_the_e_only_path(service: Service) -> None:
    # Prepare
    _, other = _users(service.run)
    ids = _item_ids(service.run)
    probs, is_known = _reference(service.run, other, np.arange(len(ids)))
    assert not is_known
    # Execute
    got = service.client.get("/recommend", params={"user": other, "k": 5, "exclude_seen": "false"})
    # Assert
    assert got.status_code == 200, got.text
    assert got.json()["path"] == "e_only"
    want = [ids[i] for i in np.lexsort((np.arange(len(ids)), -probs))[:5]]
    assert [r["item"] for r in got.json()["top_k"]] == want


def test_bad_requests_get_404_422_401_never_500(service: Service) -> None:
    known, _ = _users(service.run)
    c = service.client
    unknown = c.get("/recommend", params={"user": "nobody@nowhere.example"})
    assert unknown.status_code == 404 and "unknown user" in unknown.json()["detail"]
    item = c.post("/score", json={"pairs": [{"user": known, "item": "no-such-item"}]})
    assert item.status_code == 404 and "unknown item" in item.json()["detail"]
    assert c.get("/recommend", params={"user": known, "k": "ten"}).status_code == 422
    assert c.get("/recommend").status_code == 422
    assert c.post("/score", json={"pairs": []}).status_code == 422
    assert c.post("/score", content=b"{not json").status_code == 422
    anonymous = httpx.get(f"{service.url}/recommend", params={"user": known}, verify=service.tls)
    assert anonymous.status_code == 401


def test_with_p_killed_e_serves_from_its_cache_and_a_refresh_fails_clearly(
    service: Service,
) -> None:
    # Prepare
    known, _ = _users(service.run)
    before = service.client.get("/recommend", params={"user": known, "k": 10}).json()
    service.run.procs["ps"].send_signal(signal.SIGKILL)
    service.run.procs["ps"].wait(timeout=scaled(10))
    # Execute
    refresh = service.client.post("/refresh", timeout=scaled(120))
    after = service.client.get("/recommend", params={"user": known, "k": 10})
    health = service.client.get("/healthz").json()
    # Assert: a 503 naming the cause and the cache kept; the same answers as before
    assert refresh.status_code == 503, refresh.text
    detail = refresh.json()["detail"]
    assert "refresh failed" in detail and "payments" in detail and "still serving" in detail
    assert after.status_code == 200 and after.json()["top_k"] == before["top_k"]
    assert after.json()["path"] == "vfl"
    assert health["refreshes"]["failed"] == 1 and health["cache_age_s"] is not None


def test_the_cache_files_are_private(service: Service) -> None:
    cache = service.run.root / "e" / "serving"
    for name in ("zb.npy", "zb.json"):
        assert (cache / name).stat().st_mode & 0o777 == 0o600
    assert json.loads((cache / "zb.json").read_text())["shape"][0] > 0
