"""Coordinator config, the party ``[network]`` section, ``vfl certs`` and a real coordinator."""

from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.timing import scaled
from vfl.config.coordinator import load_coordinator_config
from vfl.config.party import load_party_config, read_network_pems
from vfl.coordinator.service import run_coordinator
from vfl.errors import ConfigError
from vfl.transport.certs import generate_dev_pki
from vfl.transport.grpc_channel import GrpcChannel

ROOT = Path(__file__).resolve().parents[1]
JOB = "synthetic-pilot"

COORDINATOR = """
[coordinator]
bind = "127.0.0.1:{port}"
job = "synthetic-pilot"
parties = ["shop", "payments"]
ca = "certs/ca.pem"
cert = "certs/coordinator.pem"
key = "certs/coordinator.key"
"""

PASSIVE = """
[party]
name = "payments"
role = "passive"

[users]
path = "users.csv"
id_column = "user_id"
numeric = ["spend"]

[network]
coordinator = "{address}"
ca = "certs/ca.pem"
cert = "certs/{name}.pem"
key = "certs/{name}.key"
timeout_s = 5
"""


def _vfl(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run ``python -m vfl ARGS`` and capture its output."""
    return subprocess.run(
        [sys.executable, "-m", "vfl", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=scaled(60),
        env=_env(),
    )


def _env() -> dict[str, str]:
    """The environment for a child ``python -m vfl``: this checkout first on the path."""
    return {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}


def _free_port() -> int:
    """A loopback port that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def conf_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory with a dev PKI in ``certs/`` for shop and payments, and an empty users file."""
    root = tmp_path_factory.mktemp("coord")
    generate_dev_pki(root / "certs", parties=["shop", "payments"])
    (root / "users.csv").write_text("user_id,spend\n")
    return root


def _check(err: pytest.ExceptionInfo[ConfigError], file: Path, key: str) -> str:
    """Assert the error names ``file`` and ``key`` and gives a fix; return the message."""
    message = str(err.value)
    assert err.value.file == str(file) and err.value.key == key
    assert str(file) in message and f"'{key}'" in message and "Fix:" in message
    return message


# -- coordinator config ---------------------------------------------------------------------


def test_coordinator_config_resolves_paths(conf_dir: Path) -> None:
    # Prepare
    path = conf_dir / "ok.toml"
    path.write_text(COORDINATOR.format(port=50051))

    # Execute
    cfg = load_coordinator_config(path).coordinator

    # Assert
    assert cfg.bind == "127.0.0.1:50051" and cfg.job == JOB
    assert cfg.parties == ("shop", "payments")
    assert cfg.ca == (conf_dir / "certs" / "ca.pem").resolve() and cfg.key.is_absolute()


@pytest.mark.parametrize(
    ("edit", "key", "words"),
    [
        (lambda t: t + 'bnid = "x"\n', "coordinator.bnid", "did you mean 'bind'"),
        (
            lambda t: t.replace("certs/coordinator.pem", "certs/nope.pem"),
            "coordinator.cert",
            "file not found",
        ),
        (lambda t: t.replace("127.0.0.1:50051", "127.0.0.1"), "coordinator.bind", "host:port"),
        (lambda t: t.replace("127.0.0.1:50051", "h:70000"), "coordinator.bind", "host:port"),
        (lambda t: t.replace('"payments"', '"shop"'), "coordinator.parties", "listed twice"),
    ],
    ids=["unknown-key", "missing-cert", "bind-no-port", "bind-bad-port", "repeated-party"],
)
def test_coordinator_config_errors(
    conf_dir: Path, edit: Callable[[str], str], key: str, words: str
) -> None:
    # Prepare
    path = conf_dir / "bad.toml"
    path.write_text(edit(COORDINATOR.format(port=50051)))

    # Execute
    with pytest.raises(ConfigError) as err:
        load_coordinator_config(path)

    # Assert
    assert words in _check(err, path, key)


# -- party [network] ------------------------------------------------------------------------


def test_party_network_section_resolves_and_reads_pems(
    conf_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prepare: load from another directory so cwd-relative resolution would fail
    path = conf_dir / "p.toml"
    path.write_text(PASSIVE.format(address="localhost:6000", name="payments"))
    monkeypatch.chdir(conf_dir.parent)

    # Execute
    net = load_party_config(path).network

    # Assert
    assert net is not None and net.coordinator == "localhost:6000" and net.timeout_s == 5.0
    assert net.cert == (conf_dir / "certs" / "payments.pem").resolve()
    ca, cert, key = read_network_pems(net)
    assert ca.startswith(b"-----BEGIN CERTIFICATE") and b"PRIVATE KEY" in key
    assert cert == (conf_dir / "certs" / "payments.pem").read_bytes()


def test_party_network_section_is_optional(conf_dir: Path) -> None:
    path = conf_dir / "p_plain.toml"
    path.write_text(PASSIVE.split("[network]")[0])
    assert load_party_config(path).network is None


@pytest.mark.parametrize("address", ["127.0.0.1", "127.0.0.1:0", "host:port", "a b:1", ":80"])
def test_party_bad_coordinator_address(conf_dir: Path, address: str) -> None:
    path = conf_dir / "p_bad.toml"
    path.write_text(PASSIVE.format(address=address, name="payments"))
    with pytest.raises(ConfigError) as err:
        load_party_config(path)
    assert "127.0.0.1:50051" in _check(err, path, "network.coordinator")


def test_party_network_missing_key_file(conf_dir: Path) -> None:
    path = conf_dir / "p_nokey.toml"
    path.write_text(PASSIVE.format(address="127.0.0.1:1", name="nobody"))
    with pytest.raises(ConfigError) as err:
        load_party_config(path)
    assert "file not found" in _check(err, path, "network.cert")


# -- CLI and a real coordinator process -----------------------------------------------------


def test_certs_cli_writes_pki_keys_and_ready_configs(tmp_path: Path) -> None:
    # Prepare: two party configs and a job file, as 'vfl data synth' writes them
    from vfl.data.synthetic_writer import generate_synthetic

    generate_synthetic(tmp_path / "data", users=60, items=40, seed=1)
    data = tmp_path / "data"

    # Execute
    done = _vfl(
        "certs",
        "--out",
        "pki",
        "--port",
        "50999",
        "--job",
        str(data / "job.toml"),
        "--party-config",
        str(data / "e_party.toml"),
        "--party-config",
        str(data / "p_party.toml"),
        cwd=tmp_path,
    )

    # Assert: certificates, sealing keys and configs
    assert done.returncode == 0, done.stderr
    pki = tmp_path / "pki"
    names = {"ca.pem", "coordinator.pem", "coordinator.key", "coordinator.toml"}
    for party in ("shop", "payments"):
        names |= {f"{party}.{ext}" for ext in ("pem", "key", "box", "box.pub", "network.toml")}
        names |= {f"{party}-https.pem", f"{party}-https.key"}  # the service's TLS (vfl serve)
    assert {f.name for f in pki.iterdir()} == names
    assert len((pki / "shop.box.pub").read_bytes()) == 32
    assert (pki / "payments.box").stat().st_mode & 0o777 == 0o600
    coord = load_coordinator_config(pki / "coordinator.toml").coordinator
    assert coord.bind == "127.0.0.1:50999" and set(coord.parties) == {"shop", "payments"}
    assert coord.plan == (data / "job.toml").resolve()
    # each party config now pins the *peer's* sealing public key and schema
    shop = load_party_config(data / "e_party.toml").network
    payments = load_party_config(data / "p_party.toml").network
    assert shop is not None and payments is not None
    assert shop.peer == "payments" and shop.peer_box_public == (pki / "payments.box.pub")
    assert payments.peer_box_public == (pki / "shop.box.pub")
    assert shop.box_key == pki / "shop.box" and shop.coordinator == "127.0.0.1:50999"
    assert shop.peer_schema_sha256 and shop.peer_schema_sha256 != payments.peer_schema_sha256
    # the stand-alone snippet is a valid [network] section too
    snippet = (pki / "shop.network.toml").read_text()
    assert str(pki / "payments.box.pub") in snippet


def test_certs_dev_alias_still_works(tmp_path: Path) -> None:
    done = _vfl("certs-dev", "--out", "pki", "--parties", "e,p", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "pki" / "e.network.toml").exists()


def test_coordinator_plan_of_another_job_is_named(conf_dir: Path) -> None:
    # Prepare: a plan file whose [job] name is not the coordinator's job
    plan = conf_dir / "other_job.toml"
    plan.write_text('[job]\nname = "other"\n[parties]\nactive = "x"\npassive = "y"\n')
    config = conf_dir / "with_plan.toml"
    config.write_text(COORDINATOR.format(port=0) + 'plan = "other_job.toml"\n')
    cfg = load_coordinator_config(config)
    # Execute / Assert: [parties] is ignored (C never reads party files), the name is checked
    with pytest.raises(ConfigError) as err:
        cfg.read_plan(config)
    assert "'other'" in _check(err, config, "coordinator.plan")


def test_certs_dev_cli_rejects_bad_party_name(tmp_path: Path) -> None:
    done = _vfl("certs", "--out", "pki", "--parties", "shop,ca", cwd=tmp_path)
    assert done.returncode == 2 and "'ca'" in done.stderr and "Traceback" not in done.stderr


@pytest.fixture()
def coordinator_proc(conf_dir: Path) -> Iterator[tuple[subprocess.Popen[str], int]]:
    """``python -m vfl coordinator`` on a free loopback port, running and announced."""
    port = _free_port()
    config = conf_dir / f"coord_{port}.toml"
    config.write_text(COORDINATOR.format(port=port))
    proc = subprocess.Popen(
        [sys.executable, "-m", "vfl", "coordinator", "--config", str(config)],
        cwd=conf_dir,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
    )
    try:
        _wait_for_line(proc, "listening on", timeout_s=scaled(15.0))
        yield proc, port
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=scaled(5))


def _wait_for_line(proc: subprocess.Popen[str], words: str, timeout_s: float) -> str:
    """Read stdout lines until one contains ``words``; fail on exit or timeout."""
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 0.2)
        if ready:
            line = proc.stdout.readline()
            if words in line:
                return line
            if not line and proc.poll() is not None:
                break
    stderr = proc.stderr.read() if proc.stderr is not None and proc.poll() is not None else ""
    pytest.fail(f"coordinator never printed '{words}' (exit {proc.poll()}): {stderr}")


def _party_channel(conf_dir: Path, me: str, peer: str, port: int) -> GrpcChannel:
    """A channel built the way a party builds it: from its config's ``[network]`` section."""
    path = conf_dir / f"{me}_{port}.toml"
    path.write_text(PASSIVE.format(address=f"127.0.0.1:{port}", name=me))
    net = load_party_config(path).network
    assert net is not None
    ca, cert, key = read_network_pems(net)
    return GrpcChannel(
        net.coordinator,
        me=me,
        peer=peer,
        ca_pem=ca,
        cert_pem=cert,
        key_pem=key,
        job_id=JOB,
        timeout_s=net.timeout_s,
    )


def test_coordinator_process_relays_and_reports_bytes_on_sigterm(
    conf_dir: Path, coordinator_proc: tuple[subprocess.Popen[str], int]
) -> None:
    # Prepare
    proc, port = coordinator_proc
    shop = _party_channel(conf_dir, "shop", "payments", port)
    payments = _party_channel(conf_dir, "payments", "shop", port)

    # Execute: one message each way, then SIGTERM
    try:
        shop.send(b"hello P")
        assert payments.recv(timeout=5) == b"hello P"
        payments.send(b"hello E, longer")
        assert shop.recv(timeout=5) == b"hello E, longer"
    finally:
        shop.close()
        payments.close()
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=scaled(5))

    # Assert
    assert proc.returncode == 0, err
    assert "bytes relayed" in out
    assert "payments -> shop:" in out and "shop -> payments:" in out


def test_run_coordinator_in_thread_stops_on_event(conf_dir: Path) -> None:
    # Prepare: port 0 picks a free port; not the main thread, so no signal handlers
    config = conf_dir / "thread.toml"
    config.write_text(COORDINATOR.format(port=0))
    cfg = load_coordinator_config(config)
    stop = threading.Event()
    ports: list[int] = []
    lines: list[str] = []
    worker = threading.Thread(
        target=run_coordinator,
        args=(cfg,),
        kwargs={"ready": ports.append, "stop_event": stop, "emit": lines.append},
    )

    # Execute
    worker.start()
    try:
        deadline = time.monotonic() + 10
        while not ports and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        worker.join(timeout=5)

    # Assert
    assert not worker.is_alive() and ports and ports[0] > 0
    assert f"job {JOB} listening on 127.0.0.1:{ports[0]}, parties: shop, payments" in lines[0]
    assert lines[-1] == "  none"
