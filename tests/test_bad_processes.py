"""Mistakes about processes, each against real ``python -m vfl`` processes over gRPC + TLS:
an unreachable coordinator, two processes for one party, a read-only work directory, signals.
"""

from __future__ import annotations

import json
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.proc_helpers import (
    Job,
    Proc,
    alive,
    children,
    free_port,
    prepare_job,
    read_only,
)
from tests.timing import scaled
from vfl.errors import ChannelTimeout, PeerLost, TransportError
from vfl.transport.board import PartyState
from vfl.transport.certs import DevPki, generate_dev_pki
from vfl.transport.grpc_channel import GrpcChannel
from vfl.transport.grpc_relay import RelayServer


@pytest.fixture()
def job(tmp_path: Path) -> Iterator[Job]:
    run = prepare_job(tmp_path)
    try:
        yield run
    finally:
        run.stop_all()


def _set_network(config: Path, **values: object) -> None:
    """Rewrite keys of the config's ``[network]`` table (appended after the table header)."""
    text = config.read_text()
    for key, value in values.items():
        text = re.sub(rf"(?m)^{key} = .*\n", "", text)
        rendered = f'"{value}"' if isinstance(value, str) else str(value)
        text = text.replace("[network]\n", f"[network]\n{key} = {rendered}\n", 1)
    config.write_text(text)


def _error_line(text: str) -> str:
    """The one ``error:`` line of a refused run (and no traceback)."""
    assert "Traceback" not in text, text
    errors = [line for line in text.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Fix:" in errors[0], text
    return errors[0]


def test_unreachable_coordinator_says_it_is_waiting_and_stops_at_the_connect_deadline(
    job: Job,
) -> None:
    # Prepare: the default long message timeout, a 3 s connect deadline, nothing listening
    address = f"127.0.0.1:{free_port()}"
    _set_network(job.files["p"], coordinator=address, timeout_s=600, connect_timeout_s=3)

    # Execute
    proc = job.party("p")
    waiting_at = proc.wait_line("waiting for the coordinator", scaled(30))
    code = proc.wait(scaled(30))
    ended_at = max(at for at, _ in proc.lines)

    # Assert: a progress line naming the address and attempt while dialling, then one named
    # error after the connect deadline, not the 600 s message timeout
    waiting = next(line for _, line in proc.lines if "waiting for the coordinator" in line)
    assert address in waiting and "attempt" in waiting
    assert code == 2
    line = _error_line(proc.text)
    assert address in line and "unreachable" in line and "network.connect_timeout_s" in line
    dialled_s = ended_at - waiting_at  # the first line comes at the first failed attempt
    assert dialled_s >= 2.0 and dialled_s < scaled(15)


def test_a_second_process_for_a_joined_party_is_refused_and_the_first_run_is_unaffected(
    tmp_path: Path,
) -> None:
    # Prepare: E joined and waiting for P, so the first run is under way however fast the
    # machine is; P starts once the second E has been refused
    job = prepare_job(tmp_path, users=240, epochs=4)
    try:
        _second_e_is_refused(job)
    finally:
        job.stop_all()


def _second_e_is_refused(job: Job) -> None:
    job.coordinator()
    e1 = job.party("e")
    e1.wait_line("joined job", scaled(60))

    # Execute: the same E command again, while the first one runs
    e2 = job.party("e")
    code2 = e2.wait(scaled(60))
    assert e1.popen.poll() is None, "the first E finished before the second was refused"

    # Assert: the second is refused by name with the first connection's age; the first and P
    # finish the job, and nothing in their logs speaks of the intruder
    assert code2 == 2
    line = _error_line(e2.text)
    assert "'shop' is already joined" in line and "first connection" in line
    assert re.search(r"first connection \d+ s ago", line)
    p = job.party("p")
    assert e1.wait(scaled(240)) == 0, e1.text
    assert p.wait(scaled(60)) == 0, p.text
    assert "error" not in e1.text.lower() and "error" not in p.text.lower()
    metrics = json.loads((job.root / "e" / "metrics.json").read_text())
    assert metrics["aligned_users"] > 0


def _relay(pki: DevPki) -> RelayServer:
    return RelayServer(
        "127.0.0.1:0",
        ca_pem=pki.ca.read_bytes(),
        cert_pem=pki.coordinator.cert.read_bytes(),
        key_pem=pki.coordinator.key.read_bytes(),
        allowed_parties={"shop", "payments"},
        job_id="job-1",
    )


def _party(pki: DevPki, port: int, me: str, peer: str) -> GrpcChannel:
    files = pki.parties[me]
    return GrpcChannel(
        f"127.0.0.1:{port}",
        me=me,
        peer=peer,
        ca_pem=pki.ca.read_bytes(),
        cert_pem=files.cert.read_bytes(),
        key_pem=files.key.read_bytes(),
        timeout_s=2,
        connect_timeout_s=scaled(20),
        heartbeat_s=0.2,
        lost_after_s=1.0,
    )


def test_a_restart_after_a_crash_is_admitted_once_the_old_process_is_silent(
    tmp_path: Path,
) -> None:
    # Prepare: an in-process relay; "shop" joins, then goes silent (as a killed process does)
    pki = generate_dev_pki(tmp_path / "certs", parties=["shop", "payments"])
    relay = _relay(pki)
    port = relay.start()
    first, second = _party(pki, port, "shop", "payments"), _party(pki, port, "shop", "payments")
    try:
        first.join()
        joined_at = time.monotonic()

        # Execute: the restarted process joins while the old one is still fresh in the board
        second.join()
        admitted_after = time.monotonic() - joined_at

        # Assert: admitted once the old one was silent for the window (3 s), not before;
        # the old process may no longer read the party's mailbox
        assert 3.0 <= admitted_after < scaled(10)
        with pytest.raises(TransportError, match="replaced"):
            first.recv(timeout=1)
    finally:
        first.close()
        second.close()
        relay.stop()


def test_a_read_only_work_directory_is_named_and_the_peer_stops_at_once(job: Job) -> None:
    # Prepare: E's work directory exists but cannot be written
    wrap = read_only(job.root / "e")
    job.coordinator()
    p = job.party("p")
    p.wait_line("joined job", scaled(60))

    # Execute
    e = job.party("e", wrap=wrap)
    e_code = e.wait(scaled(60))
    e_ended = max(at for at, _ in e.lines)
    p_code = p.wait(scaled(60))
    p_ended = max(at for at, _ in p.lines)

    # Assert: E names the directory and the fix; P stops within seconds naming the party
    assert e_code == 2
    line = _error_line(e.text)
    assert str(job.root / "e") in line and "writable" in line
    assert p_code == 2
    assert "'shop' failed the job (StorageError)" in _error_line(p.text)
    assert p_ended - e_ended < scaled(15)


def test_sigterm_to_a_party_stops_it_keeping_checkpoints_and_the_same_command_resumes(
    job: Job,
) -> None:
    # Prepare: a job in training, E with a checkpoint
    job.coordinator()
    p = job.party("p")
    e = job.party("e")
    e.wait_line("step 1/", scaled(120))

    # Execute: SIGTERM to E alone, as a service manager sends
    e.signal(signal.SIGTERM)
    e_code = e.wait(scaled(30))
    p_code = p.wait(scaled(30))

    # Assert: E stops with one line saying what is kept and how to resume, exit 128 + 15;
    # P stops naming E; the same two commands then resume and finish
    assert e_code == 128 + signal.SIGTERM
    line = _error_line(e.text)
    assert "stopped by SIGTERM" in line and str(job.root / "e" / "checkpoints") in line
    assert "re-run the same command" in line
    assert any((job.root / "e" / "checkpoints").iterdir())
    assert p_code == 2 and "'shop' failed the job (Interrupted)" in _error_line(p.text)
    p2, e2 = job.party("p"), job.party("e")
    assert e2.wait(scaled(180)) == 0, e2.text
    assert p2.wait(scaled(60)) == 0, p2.text
    assert "resuming from" in e2.text


def test_sigterm_to_the_coordinator_mid_job_says_so_and_the_same_command_resumes(
    job: Job,
) -> None:
    # Prepare: both parties training, with short message timeouts (frames in the relay's
    # mailboxes are lost with the coordinator; the parties then resume from checkpoints)
    for k in ("e", "p"):
        _set_network(job.files[k], timeout_s=8)
    coordinator = job.coordinator()
    parties = {"p": job.party("p"), "e": job.party("e")}
    parties["e"].wait_line("step 1/", scaled(120))

    # Execute
    coordinator.signal(signal.SIGTERM)
    code = coordinator.wait(scaled(30))
    again = job.coordinator()

    # Assert: a clean stop naming the running job and the fix, exit 128 + 15; with the same
    # command again the job finishes (a party that stopped meanwhile re-runs its command)
    assert code == 128 + signal.SIGTERM
    line = _error_line(coordinator.text)
    assert "stopped by SIGTERM while job 'bad-test' was running" in line
    assert "shop: phase train" in line and "bytes relayed" in coordinator.text
    for k in ("e", "p"):
        if parties[k].wait(scaled(180)) != 0:
            assert "re-run the same command to resume" in parties[k].text
            parties[k] = job.party(k)
    assert parties["e"].wait(scaled(180)) == 0, parties["e"].text
    assert parties["p"].wait(scaled(60)) == 0, parties["p"].text
    assert again.popen.poll() is None


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["sigterm", "sigint"])
def test_a_signal_to_the_pilot_stops_its_processes_keeps_checkpoints_and_says_how_to_resume(
    tmp_path: Path, sig: signal.Signals
) -> None:
    # Prepare: a small pilot whose plaintext run is training
    args = ("--out", "pilot", "--users", "100", "--epochs", "2", "--key-bits", "512")
    pilot = Proc("pilot", *args, "--no-baselines", cwd=tmp_path)
    resumed: list[Proc] = []
    try:
        pilot.wait_line("E| shop: phase train", scaled(180))
        started = children(pilot.popen.pid)
        workers = {w for c in started for w in children(c)}

        # Execute: the signal to the pilot's process alone (not its group)
        pilot.signal(sig)
        code = pilot.wait(scaled(60))

        # Assert: every process it started is gone, checkpoints kept, the fix names the
        # commands that resume the run, exit 128 + the signal
        assert code == 128 + sig
        assert len(started) == 3 and not any(alive(pid) for pid in started | workers)
        line = _error_line(pilot.text)
        assert f"pilot stopped by {sig.name} during the VFL plaintext run" in line
        assert any((tmp_path / "pilot" / "plaintext" / "e" / "checkpoints").iterdir())
        commands = re.findall(r"`vfl ([^`]+)`", line)
        assert [c.split()[0] for c in commands] == ["coordinator", "party", "party", "pilot"]
        if sig is signal.SIGTERM:  # the commands resume the run (once is enough)
            resumed = [Proc(*c.split(), cwd=tmp_path) for c in commands[:1]]
            resumed[0].wait_line("listening on", scaled(30))
            resumed += [Proc(*c.split(), cwd=tmp_path) for c in commands[1:3]]
            assert resumed[1].wait(scaled(180)) == 0, resumed[1].text
            assert "resuming from" in resumed[1].text
    finally:
        for proc in [pilot, *resumed]:
            proc.kill_group()


def test_a_failure_reported_before_this_process_joined_does_not_stop_it(tmp_path: Path) -> None:
    # Prepare: payments failed and left; then shop joins (both are being restarted)
    pki = generate_dev_pki(tmp_path / "certs", parties=["shop", "payments"])
    relay = _relay(pki)
    port = relay.start()
    old_p, e = _party(pki, port, "payments", "shop"), _party(pki, port, "shop", "payments")
    try:
        old_p.join()
        old_p.report(state=PartyState.FAILED, progress={"error": "PeerLost"})
        old_p.close()
        time.sleep(0.3)
        e.join()
        e.start_heartbeat(interval_s=0.2, lost_after_s=scaled(30))

        # Execute / Assert: shop waits for the restarted payments instead of stopping at once
        with pytest.raises(ChannelTimeout) as err:
            e.recv(2.0)
        assert not isinstance(err.value, PeerLost)
        # ... while a failure after shop joined stops it, naming the party
        new_p = _party(pki, port, "payments", "shop")
        new_p.join()
        new_p.report(state=PartyState.FAILED, progress={"error": "StorageError"})
        new_p.close()
        with pytest.raises(PeerLost, match="'payments' failed the job"):
            e.recv(scaled(10))
    finally:
        e.close()
        relay.stop()
