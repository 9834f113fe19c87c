"""The coordinator's state file: which parties finished survives a coordinator restart."""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.timing import scaled
from vfl.config.coordinator import load_coordinator_config
from vfl.errors import CheckpointError
from vfl.transport.board import Heartbeat, JobBoard, PartyState
from vfl.transport.certs import DevPki, generate_dev_pki
from vfl.transport.grpc_channel import GrpcChannel

ROOT = Path(__file__).resolve().parents[1]
JOB, PLAN = "job-1", "ab" * 32
PARTIES = {"shop", "payments"}

COORDINATOR = """
[coordinator]
bind = "127.0.0.1:{port}"
job = "job-1"
parties = ["shop", "payments"]
ca = "certs/ca.pem"
cert = "certs/coordinator.pem"
key = "certs/coordinator.key"
"""


def _board(path: Path, *, job: str = JOB, plan: str = PLAN) -> JobBoard:
    return JobBoard(job, PARTIES, state_file=path, plan_fingerprint=plan)


def _beat(state: PartyState, phase: str = "train", **progress: float) -> Heartbeat:
    return Heartbeat(JOB, phase, state, dict(progress))


def _file_version(path: Path) -> tuple[int, int, bytes]:
    """(inode, mtime_ns, content): an atomic rewrite changes the inode even within a tick."""
    st = os.stat(path)
    return st.st_ino, st.st_mtime_ns, path.read_bytes()


# -- the board and its file -------------------------------------------------------------------


def test_a_finished_party_survives_a_new_board_on_the_same_file(tmp_path: Path) -> None:
    # Prepare: shop finishes, payments is still running
    path = tmp_path / "state.json"
    first = _board(path)
    first.join("shop")
    first.join("payments")
    first.beat("payments", _beat(PartyState.RUNNING))
    first.beat("shop", _beat(PartyState.DONE, "export", auc=0.78, epoch=2))
    # Execute: the coordinator restarts on the same file
    second = _board(path)
    status = second.status()
    # Assert: shop is done with its last phase and progress, payments not heard from yet
    assert second.resumed == ("shop",)
    shop = status["shop"]
    assert shop.state is PartyState.DONE and shop.phase == "export"
    assert shop.progress == {"auc": 0.78, "epoch": 2}
    assert shop.age_s is not None and 0 <= shop.age_s < 5
    assert status["payments"].age_s is None
    saved = json.loads(path.read_text())
    assert saved["format"] == 1 and saved["job"] == JOB and saved["plan_fingerprint"] == PLAN
    assert set(saved["done"]) == {"shop"}


def test_age_of_a_resumed_party_counts_from_the_saved_wall_clock_time(tmp_path: Path) -> None:
    # Prepare: a file saved by a coordinator that saw shop finish 30 s ago
    path = tmp_path / "state.json"
    _board(path).beat("shop", _beat(PartyState.DONE, "export"))
    saved = json.loads(path.read_text())
    saved["done"]["shop"]["reported_at"] = time.time() - 30.0
    path.write_text(json.dumps(saved))
    # Execute
    board = _board(path)
    before = board.status()["shop"].age_s
    time.sleep(0.2)
    after = board.status()["shop"].age_s
    # Assert: about 30 s old, and ageing like any silent party
    assert before is not None and after is not None
    assert 29.5 < before < 35 and after >= before + 0.15


@pytest.mark.parametrize("how", ["join", "running-heartbeat"])
def test_a_party_running_again_is_no_longer_done_in_the_file(tmp_path: Path, how: str) -> None:
    # Prepare
    path = tmp_path / "state.json"
    _board(path).beat("shop", _beat(PartyState.DONE, "export"))
    restarted = _board(path)
    # Execute: shop starts again (joins, or simply reports running)
    if how == "join":
        restarted.join("shop")
    else:
        restarted.beat("shop", _beat(PartyState.RUNNING, "psi"))
    # Assert: a further restart does not show shop as done
    assert restarted.status()["shop"].state is PartyState.RUNNING
    assert json.loads(path.read_text())["done"] == {}
    third = _board(path)
    assert third.resumed == () and third.status()["shop"].age_s is None


def test_a_restarted_peer_joining_still_sees_the_finished_party(tmp_path: Path) -> None:
    # Prepare: shop finished; the coordinator restarts
    path = tmp_path / "state.json"
    _board(path).beat("shop", _beat(PartyState.DONE, "export", auc=0.78))
    restarted = _board(path)
    # Execute: payments, run again with the same command, joins the new coordinator
    restarted.join("payments")
    # Assert: it can still learn that shop finished, also after one more restart
    assert restarted.status()["shop"].state is PartyState.DONE
    assert _board(path).status()["shop"].progress == {"auc": 0.78}


def test_once_every_party_is_done_the_file_holds_none(tmp_path: Path) -> None:
    # Prepare
    path = tmp_path / "state.json"
    board = _board(path)
    board.beat("shop", _beat(PartyState.DONE, "export"))
    # Execute: the last party finishes, the job is over
    board.beat("payments", _beat(PartyState.DONE, "export"))
    # Assert: the live board shows both done; a coordinator started later under the same
    # config (an inference session, a fresh run) starts with a clean board
    assert {s.state for s in board.status().values()} == {PartyState.DONE}
    assert json.loads(path.read_text())["done"] == {}
    later = _board(path)
    assert later.resumed == () and later.status()["shop"].age_s is None


@pytest.mark.parametrize(
    ("job", "plan", "reason"),
    [("job-2", PLAN, "is of job 'job-1'"), (JOB, "cd" * 32, "is of another job plan")],
)
def test_a_file_of_another_job_or_plan_is_ignored(
    tmp_path: Path, job: str, plan: str, reason: str
) -> None:
    # Prepare
    path = tmp_path / "state.json"
    _board(path).beat("shop", _beat(PartyState.DONE, "export"))
    # Execute
    board = _board(path, job=job, plan=plan)
    # Assert: nobody is done, and the board says why it ignored the file
    assert board.resumed == () and board.status()["shop"].age_s is None
    assert str(path) in board.ignored_state and reason in board.ignored_state


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (b'{"format": 1, "job": "job-1", "plan_fi', "is not JSON"),
        (b"\xff\xfe not text", "is not UTF-8 text"),
        (b"[1, 2]", "is not a JSON object"),
        (b'{"job": "job-1", "plan_fingerprint": "", "done": {}}', "no valid 'format'"),
        (b'{"format": 1, "job": 7, "plan_fingerprint": "", "done": {}}', "string fields"),
        (
            b'{"format": 1, "job": "job-1", "plan_fingerprint": "' + PLAN.encode() + b'", '
            b'"done": {"shop": {"phase": "export", "progress": {}, "reported_at": "noon"}}}',
            "malformed entry for party 'shop'",
        ),
        (
            b'{"format": 1, "job": "job-1", "plan_fingerprint": "' + PLAN.encode() + b'", '
            b'"done": {"shop": {"phase": "export", "progress": {}, "reported_at": NaN}}}',
            "malformed entry for party 'shop'",
        ),
    ],
)
def test_a_corrupted_state_file_is_refused_naming_the_file_and_the_fix(
    tmp_path: Path, content: bytes, why: str
) -> None:
    # Prepare
    path = tmp_path / "state.json"
    path.write_bytes(content)
    # Execute / Assert: a named error, and the file is left for the user to inspect
    with pytest.raises(CheckpointError) as err:
        _board(path)
    message = str(err.value)
    assert message.startswith(f"{path}: coordinator state file") and why in message
    assert f"Fix: delete {path}" in message
    assert path.read_bytes() == content


def test_an_unreadable_state_path_is_refused_naming_the_key(tmp_path: Path) -> None:
    (tmp_path / "blocked").write_text("a file")
    with pytest.raises(CheckpointError, match=r"cannot be read .*coordinator\.state"):
        _board(tmp_path / "blocked" / "state.json")


def test_a_state_file_of_a_newer_format_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_text(json.dumps({"format": 99, "job": JOB, "plan_fingerprint": PLAN, "done": {}}))
    with pytest.raises(CheckpointError, match=r"format 99 is newer than this vfl's 1\. Fix:"):
        _board(path)


def test_only_state_changes_write_the_file_not_heartbeats(tmp_path: Path) -> None:
    # Prepare: heartbeats while running write nothing
    path = tmp_path / "state.json"
    board = _board(path)
    board.join("payments")
    for step in range(5):
        board.beat("payments", _beat(PartyState.RUNNING, step=step))
    assert not path.exists()
    board.beat("shop", _beat(PartyState.DONE, "export", auc=0.78))
    written = _file_version(path)
    # Execute: more running heartbeats from payments, repeated done heartbeats from shop
    for step in range(5):
        board.beat("payments", _beat(PartyState.RUNNING, step=step))
        board.beat("shop", _beat(PartyState.DONE, "export", auc=0.78))
    # Assert: the file is the very same one
    assert _file_version(path) == written


def test_a_failed_write_is_reported_and_retried_not_raised(tmp_path: Path) -> None:
    # Prepare: after the start, a file appears where the state file's directory should be
    blocker = tmp_path / "blocked"
    path = blocker / "state.json"
    board = _board(path)
    blocker.write_text("a file")
    # Execute: the heartbeat itself is still recorded
    board.beat("shop", _beat(PartyState.DONE, "export"))
    # Assert: the error names the file in the way; once it is gone the next heartbeat saves
    assert board.save_error is not None and str(blocker) in str(board.save_error)
    assert "Fix:" in str(board.save_error)
    assert board.status()["shop"].state is PartyState.DONE
    blocker.unlink()
    board.beat("shop", _beat(PartyState.DONE, "export"))
    assert board.save_error is None and _board(path).resumed == ("shop",)


def test_a_board_without_a_state_file_writes_nothing(tmp_path: Path) -> None:
    board = JobBoard(JOB, PARTIES)
    board.beat("shop", _beat(PartyState.DONE, "export"))
    assert board.status()["shop"].state is PartyState.DONE and list(tmp_path.iterdir()) == []


# -- config -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> DevPki:
    root = tmp_path_factory.mktemp("board")
    return generate_dev_pki(root / "certs", parties=sorted(PARTIES))


def test_state_defaults_to_the_job_name_next_to_the_config(pki: DevPki) -> None:
    # Prepare
    root = pki.out_dir.parent
    plain = root / "plain.toml"
    plain.write_text(COORDINATOR.format(port=0))
    odd = root / "odd.toml"
    odd.write_text(COORDINATOR.format(port=0).replace('"job-1"', '"my job/2"'))
    explicit = root / "explicit.toml"
    explicit.write_text(COORDINATOR.format(port=0) + 'state = "state/c.json"\n')
    # Execute / Assert
    assert load_coordinator_config(plain).coordinator.state == (
        root / "job-1.coordinator-state.json"
    )
    assert load_coordinator_config(odd).coordinator.state == (
        root / "my_job_2.coordinator-state.json"
    )
    assert load_coordinator_config(explicit).coordinator.state == root / "state" / "c.json"


# -- a real coordinator process, killed -9 and started again ----------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _start_coordinator(config: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "vfl", "coordinator", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )


def _lines_until(proc: subprocess.Popen[str], words: str, timeout_s: float = 20.0) -> list[str]:
    """The coordinator's output lines up to the first containing ``words``."""
    assert proc.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + scaled(timeout_s)
    while time.monotonic() < deadline:
        if select.select([proc.stdout], [], [], 0.2)[0]:
            line = proc.stdout.readline()
            lines.append(line)
            if words in line:
                return lines
            if not line and proc.poll() is not None:
                break
    pytest.fail(f"coordinator never printed '{words}' (exit {proc.poll()}): {''.join(lines)}")


def _channel(pki: DevPki, port: int, me: str, peer: str) -> GrpcChannel:
    cert, key = pki.parties[me].read()
    return GrpcChannel(
        f"127.0.0.1:{port}",
        me=me,
        peer=peer,
        ca_pem=pki.ca_pem(),
        cert_pem=cert,
        key_pem=key,
        job_id=JOB,
        timeout_s=5.0,
    )


def _stop(proc: subprocess.Popen[str], sig: int) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
    proc.communicate(timeout=scaled(10))


def test_vfl_coordinator_on_a_corrupted_state_file_exits_2_naming_it(pki: DevPki) -> None:
    # Prepare: the default state file of the job, overwritten by hand
    root = pki.out_dir.parent
    config = root / "corrupt.toml"
    config.write_text(COORDINATOR.format(port=_free_port()).replace('"job-1"', '"job-c"'))
    state = root / "job-c.coordinator-state.json"
    state.write_text("{oops")
    # Execute
    proc = _start_coordinator(config)
    out, _ = proc.communicate(timeout=scaled(60))
    # Assert: one named error, no traceback, the file kept
    assert proc.returncode == 2, out
    assert f"{state}: coordinator state file is not JSON" in out and "Fix: delete" in out
    assert "Traceback" not in out and state.read_text() == "{oops"


def test_restarted_coordinator_tells_the_peer_that_a_party_finished(pki: DevPki) -> None:
    # Prepare: a coordinator process; shop reports done over gRPC and exits
    port = _free_port()
    config = pki.out_dir.parent / "restart.toml"
    config.write_text(COORDINATOR.format(port=port))
    state = pki.out_dir.parent / "job-1.coordinator-state.json"
    state.unlink(missing_ok=True)
    first = _start_coordinator(config)
    try:
        _lines_until(first, "listening on")
        with _channel(pki, port, "shop", "payments") as shop:
            shop.join()
            shop.report(phase="export", state=PartyState.DONE, progress={"auc": 0.78})
        _lines_until(first, "party shop: phase export, done")
    finally:
        _stop(first, signal.SIGKILL)  # kill -9: nothing runs on the way out
    # Execute: the same command again
    second = _start_coordinator(config)
    try:
        lines = _lines_until(second, "resumed from")
        with _channel(pki, port, "payments", "shop") as payments:
            payments.join()  # as payments run again with the same command does
            payments.start_heartbeat(interval_s=0.2, lost_after_s=5.0)
            deadline = time.monotonic() + 10
            while payments.peer_status() is None and time.monotonic() < deadline:
                time.sleep(0.05)
            peer = payments.peer_status()
    finally:
        _stop(second, signal.SIGTERM)
    # Assert: the restarted coordinator says so, and payments learns that shop finished
    assert f"resumed from {state}: shop done" in lines[-1]
    assert peer is not None and peer.state is PartyState.DONE
    assert peer.phase == "export" and peer.progress == {}  # what shop published stays at C
    assert peer.age_s is not None and peer.age_s > 0
