"""Real ``python -m vfl`` processes for the bad-input tests: lines as they come, waits on events.

Deadlines that are not the property under test go through :func:`tests.timing.scaled`
(``VFL_TEST_TIME_FACTOR``).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.helpers import accept_test_keys
from tests.timing import scaled
from vfl.cli.netconfig import NetworkLayout, write_network_configs
from vfl.data.party_files import dumps_toml
from vfl.data.synthetic_writer import generate_synthetic
from vfl.transport.certs import generate_dev_pki
from vfl.transport.sealing import write_box_keys

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """A loopback port that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Proc:
    """``python -m vfl ARGS`` in its own process group; its output lines, timestamped."""

    def __init__(
        self,
        *args: str,
        cwd: Path,
        env: dict[str, str] | None = None,
        wrap: tuple[str, ...] = (),
    ) -> None:
        full_env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1", **(env or {})}
        self.args = args
        self.popen = subprocess.Popen(
            [*wrap, sys.executable, "-m", "vfl", *args],
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=full_env,
            start_new_session=True,
        )
        self.lines: list[tuple[float, str]] = []
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            with self._lock:
                self.lines.append((time.monotonic(), line.rstrip("\n")))

    @property
    def text(self) -> str:
        """Everything printed so far."""
        with self._lock:
            return "\n".join(line for _, line in self.lines)

    def wait_line(self, words: str, timeout: float) -> float:
        """When the first line holding ``words`` was printed; fails the test after ``timeout``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                hits = [at for at, line in self.lines if words in line]
            if hits:
                return hits[0]
            if self.popen.poll() is not None:
                self._reader.join(timeout=5)
                with self._lock:
                    if any(words in line for _, line in self.lines):
                        continue
                break
            time.sleep(0.05)
        pytest.fail(f"{' '.join(self.args[:1])} never printed '{words}':\n{self.text[-4000:]}")

    def wait(self, timeout: float) -> int:
        """The exit code; fails the test if still running after ``timeout``."""
        try:
            code = self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{self.args[:1]} still running after {timeout} s:\n{self.text[-4000:]}")
        self._reader.join(timeout=5)
        return code

    def signal(self, sig: signal.Signals) -> None:
        """Send ``sig`` to this process only (not its group)."""
        self.popen.send_signal(sig)

    def kill_group(self) -> None:
        """Kill the process group (the process and any children it left) and reap."""
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGKILL)
        self.popen.wait(timeout=10)


@dataclass
class Job:
    """A prepared three-process job: data, 512-bit plan, dev PKI, configs; started processes."""

    root: Path
    files: dict[str, Path]
    procs: list[Proc] = field(default_factory=list)

    def start(
        self, *args: str, env: dict[str, str] | None = None, wrap: tuple[str, ...] = ()
    ) -> Proc:
        proc = Proc(*args, cwd=self.root, env=env, wrap=wrap)
        self.procs.append(proc)
        return proc

    def coordinator(self) -> Proc:
        proc = self.start("coordinator", "--config", str(self.files["coordinator"]))
        proc.wait_line("listening on", scaled(30))
        return proc

    def party(self, k: str, *extra: str, wrap: tuple[str, ...] = ()) -> Proc:
        where = str(self.root / k)
        args = ("party", "--config", str(self.files[k]), "--out", where, *extra)
        return self.start(*args, wrap=wrap)

    def stop_all(self) -> None:
        for proc in self.procs:
            proc.kill_group()


def prepare_job(root: Path, *, users: int = 120, epochs: int = 1, name: str = "bad-test") -> Job:
    """Small synthetic data, a 512-bit job plan, dev PKI and configs on a free port."""
    data = root / "data"
    generate_synthetic(data, users=users, items=150, overlap=0.8, seed=5)
    job = data / "job.toml"
    table = tomllib.loads(job.read_text())
    table["job"]["name"] = name
    table.setdefault("train", {}).update(
        {"epochs": epochs, "key_bits": 512, "users_per_step": 16, "learning_rate": 0.01}
    )
    job.write_text(dumps_toml(table))
    certs = root / "certs"
    generate_dev_pki(certs, parties=["shop", "payments"])
    for party in ("shop", "payments"):
        write_box_keys(certs, party)
    files = {"e": data / "e_party.toml", "p": data / "p_party.toml"}
    accept_test_keys(files["e"], files["p"])
    layout = NetworkLayout(certs, ("shop", "payments"), port=free_port(), job_file=job)
    written = write_network_configs(layout, {"shop": files["e"], "payments": files["p"]})
    return Job(root=root, files={**files, "coordinator": written["coordinator"], "job": job})


def read_only(directory: Path) -> tuple[str, ...]:
    """A command prefix under which ``directory`` is read-only for the wrapped process only.

    Not root: the directory's write bits are cleared (and stay so). Root ignores those, so
    the process gets a private mount namespace with a read-only bind mount of ``directory``
    (nothing outside the process sees it); skips the test where that is not permitted.
    """
    directory.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        directory.chmod(0o555)
        return ()
    probe = subprocess.run(
        [
            "unshare",
            "-m",
            "sh",
            "-c",
            'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0"',
            str(directory),
        ],
        capture_output=True,
        check=False,
    )
    if probe.returncode != 0:
        pytest.skip(f"cannot make a read-only directory as root here: {probe.stderr!r}")
    script = 'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" && exec "$@"'
    return ("unshare", "-m", "sh", "-c", script, str(directory))


def children(pid: int) -> set[int]:
    """Process ids whose parent is ``pid`` (read from /proc)."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.add(int(stat.parent.name))
    return found


def alive(pid: int) -> bool:
    """Whether ``pid`` exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"
