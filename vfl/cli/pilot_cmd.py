"""``vfl pilot``: the whole cross-organisation pilot on this machine.

1. Prepare the embedded synthetic data for both parties, dev certificates and a coordinator
   config; add a ``[network]`` section to each party config.
2. Start three OS processes -- ``vfl coordinator``, ``vfl party`` for E and for P -- talking
   gRPC with mutual TLS over loopback: PSI, encrypted training, evaluation at E.
3. Train the in-process baselines on the same split (E alone, plaintext split, centralised).
4. Merge everything into ``pilot.json`` and ``report.md`` (with plots).
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from vfl.config.party import load_party_config
from vfl.data.party_files import dumps_toml
from vfl.errors import VflError
from vfl.evaluation.report import write_report

console = Console(stderr=True, width=120)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _write_configs(out: Path, port: int, *, epochs: int, key_bits: int) -> dict[str, Path]:
    """Certificates, sealing keys, the pilot's job.toml (the plan), coordinator.toml and the
    parties' [network] sections with pinned peer keys and schemas."""
    from vfl.cli.netconfig import NetworkLayout, write_network_configs
    from vfl.transport.certs import generate_dev_pki
    from vfl.transport.sealing import write_box_keys

    data = out / "data"
    e_cfg, p_cfg = data / "e_party.toml", data / "p_party.toml"
    names = [load_party_config(f).party.name for f in (e_cfg, p_cfg)]
    certs = out / "certs"
    generate_dev_pki(certs, parties=names)
    for name in names:
        write_box_keys(certs, name)
    job = data / "job.toml"
    table = tomllib.loads(job.read_text())
    table["job"]["name"] = "pilot"
    # Small steps and a higher rate: the pilot trains few epochs (each costs minutes encrypted),
    # and with 8 users a step the split model pulls ahead of E alone within 3 epochs.
    table.setdefault("train", {}).update(
        {
            "epochs": epochs,
            "key_bits": key_bits,
            "users_per_step": 8,
            "learning_rate": 0.01,
            "wb_learning_rate": 1.0,
        }
    )
    job.write_text(dumps_toml(table))
    layout = NetworkLayout(certs, (names[0], names[1]), port=port, job_file=job)
    written = write_network_configs(layout, {names[0]: e_cfg, names[1]: p_cfg})
    return {"coordinator": written["coordinator"], "e": e_cfg, "p": p_cfg, "job": job}


def _start(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    handle = log.open("wb")
    return subprocess.Popen(
        [sys.executable, "-m", "vfl", *args], stdout=handle, stderr=subprocess.STDOUT
    )


def _wait_listening(log: Path, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if "listening on" in log.read_text(errors="replace"):
            return
        if proc.poll() is not None:
            break
        time.sleep(0.2)
    raise VflError(f"coordinator did not start; its log {log}:\n{_tail(log)}")


def _tail(log: Path, lines: int = 15) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


def _run_federated(out: Path, files: dict[str, Path], timeout: float) -> str:
    """Run the three processes; returns the coordinator's log (its byte counts)."""
    logs = {k: out / f"{k}.log" for k in ("coordinator", "e", "p")}
    coord = _start(["coordinator", "--config", str(files["coordinator"])], logs["coordinator"])
    parties: dict[str, subprocess.Popen[bytes]] = {}
    try:
        _wait_listening(logs["coordinator"], coord, 30)
        for k in ("p", "e"):
            parties[k] = _start(
                ["party", "--config", str(files[k]), "--out", str(out / k)],
                logs[k],
            )
        _wait_parties(parties, logs, timeout)
    finally:
        for proc in [*parties.values(), coord]:
            if proc.poll() is None:
                proc.terminate()
        coord.wait(timeout=30)
    return logs["coordinator"].read_text(errors="replace")


def _wait_parties(
    parties: dict[str, subprocess.Popen[bytes]], logs: dict[str, Path], timeout: float
) -> None:
    """Wait for both parties; the first failure stops the pilot with that party's log."""
    deadline = time.monotonic() + timeout
    shown = {k: 0 for k in logs}
    while time.monotonic() < deadline:
        _show_progress(logs, shown)
        codes = {k: p.poll() for k, p in parties.items()}
        failed = [k for k, c in codes.items() if c not in (None, 0)]
        if failed:
            k = failed[0]
            raise VflError(
                f"party {k.upper()} exited with code {codes[k]}; log {logs[k]}:\n{_tail(logs[k])}"
            )
        if all(c == 0 for c in codes.values()):
            return
        time.sleep(1.0)
    raise VflError(f"the parties did not finish within {timeout:.0f} s; see {logs['e']}")


def _show_progress(logs: dict[str, Path], shown: dict[str, int]) -> None:
    """Echo the new phase, handshake, epoch and done lines of the parties' logs."""
    for k in ("e", "p"):
        lines = logs[k].read_text(errors="replace").splitlines()
        for line in lines[shown[k] :]:
            if any(w in line for w in ("phase", "handshake", "epoch", "done:")):
                console.print(f"  {k.upper()}| {line.strip()}")
        shown[k] = len(lines)


def _merge(
    out: Path, baselines: dict[str, Any] | None, coord_log: str, seconds: float
) -> dict[str, Any]:
    e_metrics = json.loads((out / "e" / "metrics.json").read_text())
    results: dict[str, Any] = dict(baselines or {"models": {}})
    row = dict(e_metrics["split_encrypted"])
    row["federated_seconds"] = round(seconds, 1)
    plain = results["models"].get("split_plaintext")
    if plain:
        row["cost_of_privacy"] = round(row["wall_seconds"] / max(plain["wall_seconds"], 1e-9), 1)
    results["models"]["split_encrypted"] = row
    results["federated"] = {
        "aligned_users_psi": e_metrics["aligned_users"],
        "key_bits": e_metrics["key_bits"],
        "coordinator_saw": [
            ln.strip() for ln in coord_log.splitlines() if "->" in ln and "bytes" in ln
        ],
    }
    return results


def pilot(
    out: Path = typer.Option(Path("runs/pilot"), help="Pilot directory (created)."),
    users: int = typer.Option(1000, min=50, help="Synthetic customers (union of both parties)."),
    epochs: int = typer.Option(3, min=1, help="Epochs of every model."),
    key_bits: int = typer.Option(2048, min=512, help="Paillier modulus size."),
    baselines: bool = typer.Option(True, help="Also train E alone / plaintext / centralised."),
    timeout: float = typer.Option(7200, help="Seconds before the federated run is abandoned."),
) -> None:
    """Run the full pilot: coordinator + E + P processes (gRPC, mTLS, PSI, encryption)."""
    from vfl.data.synthetic_writer import generate_synthetic
    from vfl.training.compare import run_compare

    out.mkdir(parents=True, exist_ok=True)
    console.print(f"preparing data and certificates in {out} ...")
    generate_synthetic(out / "data", users=users)
    files = _write_configs(out, _free_port(), epochs=epochs, key_bits=key_bits)
    console.print("starting coordinator, E and P (logs: coordinator.log, e.log, p.log) ...")
    t0 = time.perf_counter()
    coord_log = _run_federated(out, files, timeout)
    seconds = time.perf_counter() - t0
    console.print(f"federated run finished in {seconds:.0f} s")
    base = None
    if baselines:
        console.print("training the in-process baselines on the same split ...")
        base = run_compare(files["job"], out / "baselines", epochs=epochs)
    results = _merge(out, base, coord_log, seconds)
    (out / "pilot.json").write_text(json.dumps(results, indent=2))
    report = write_report(results, out)
    console.print(f"wrote {out / 'pilot.json'} and {report}")
