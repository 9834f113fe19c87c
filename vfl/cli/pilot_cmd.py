"""``vfl pilot``: the whole cross-organisation pilot on this machine (SPEC §5, §7).

1. Prepare the data of both parties (embedded synthetic, or MovieLens-100K), a dev PKI,
   sealing keys, and for each federated run a job plan, a coordinator config and party
   configs with a ``[network]`` section pinning the peer's keys.
2. **VFL plaintext**: coordinator + E + P as three OS processes running the protocol's
   plaintext mode (same messages, no encryption), which the pilot enables on both parties'
   configs for that run only (``[party] allow_plaintext``, ``train.protocol``).
3. **VFL encrypted**: the same three processes, Paillier and secret-shared ``W_B``, with the
   same parties' local seeds as the plaintext run, so both train the same model.
4. **E alone** and **centralised** (the upper bound) in one process, on the users and in the
   aligned order of the federated run, hence the same split, batches and seed.
5. Merge everything into ``metrics.json`` (also ``pilot.json``) and ``report.md`` with plots.

With ``--parties 3`` the embedded data gains a logistics partner L (``parties/logistics``)
knowing :data:`THIRD_PARTY_SHARE` of the customers: each federated run is then four processes
(coordinator, E, P, L), E reports every group of its users (known to both partners, to one,
to none), and the gain of each partner's features is the in-process plaintext run with both
partners minus the run without that one (:func:`vfl.cli.pilot_report.partner_gains`). The
centralised model and the privacy audit are two-party replays and are left out.
"""

from __future__ import annotations

import secrets
import socket
import time
import tomllib
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console

from vfl.data.formats import dumps_toml

if TYPE_CHECKING:  # pydantic configs load only when the command runs (vfl --help stays fast)
    from vfl.cli.pilot_runs import FederatedRun, RunFiles

console = Console(stderr=True, width=120)


class Dataset(StrEnum):
    """The pilot's data."""

    SYNTHETIC = "synthetic"
    MOVIELENS = "movielens-100k"


# Small steps and a higher rate: an encrypted epoch costs 30-45 s on 2 cores, so the pilot
# must reach its plateau in few epochs. Early stopping (patience 3 on validation NDCG@10)
# ends every model; the time budget (training seconds of one model) bounds a slow machine.
PILOT_TRAIN = {"learning_rate": 0.01, "wb_learning_rate": 1.0}
PILOT_MAX_EPOCHS = 20
PILOT_PATIENCE = 3
PILOT_TIME_BUDGET_S = 600.0
# P's noise on its embedding before E decrypts z_B ([privacy] embedding_noise, in units of
# |b_i| < 1): the smallest level of benchmarks/privacy_zb.py that at least halves E's
# attribute-inference excess while keeping half of P's HR@10 gain (docs/security.md).
PILOT_EMBEDDING_NOISE = 0.25
# ``--parties 3``: the share of the customers (the union) the logistics partner knows
THIRD_PARTY_SHARE = 0.5
# each party's short name (its log, work directory and config file prefix) by position
PARTY_KEYS = ("e", "p", "l")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def plaintext_mode_available() -> bool:
    """Whether this build has the protocol's plaintext mode (``[party] allow_plaintext``)."""
    from vfl.config.job import TrainConfig
    from vfl.config.party import PartySection

    return "allow_plaintext" in PartySection.model_fields and "protocol" in TrainConfig.model_fields


def _prepare_data(dataset: Dataset, data: Path, users: int, parties: int = 2) -> None:
    if dataset is Dataset.SYNTHETIC:
        from vfl.data.synthetic_writer import generate_synthetic

        third = THIRD_PARTY_SHARE if parties == 3 else None
        generate_synthetic(data, users=users, third_party=third)
    else:
        from vfl.data.movielens import convert_movielens

        convert_movielens(data)


def _job_table(data: Path, train: dict[str, Any], *, name: str, e: str, p: str) -> dict[str, Any]:
    """The run's job file: the dataset's ``job.toml`` with the pilot's settings and defences.

    P's embedding protection is on unless the dataset's file sets it
    (:data:`PILOT_EMBEDDING_NOISE`).
    """
    table = tomllib.loads((data / "job.toml").read_text())
    table["job"]["name"] = name
    table["parties"] = {"active": e, "passive": p}
    table.setdefault("train", {}).update(train)
    table.setdefault("privacy", {}).setdefault("embedding_noise", PILOT_EMBEDDING_NOISE)
    return table


def _party_copy(src: Path, dst: Path, *, allow_plaintext: bool, key_bits: int) -> Path:
    """A copy of a party config for one run; below 2048-bit keys (tests, asked for with
    ``--key-bits``) its floor ``min_key_bits`` is lowered to them, else left at the default."""
    from vfl.protocol.options import DEFAULT_MIN_KEY_BITS

    table = tomllib.loads(src.read_text())
    if allow_plaintext:
        table["party"]["allow_plaintext"] = True
    if key_bits < DEFAULT_MIN_KEY_BITS:
        table["party"]["min_key_bits"] = key_bits
    dst.write_text(dumps_toml(table))
    return dst


def write_run_configs(
    out: Path, train: dict[str, Any], *, plaintext: bool, parties: int = 2
) -> dict[str, RunFiles]:
    """Dev PKI and sealing keys, then per run a job file, party configs and coordinator.toml
    for E and its ``parties - 1`` passive parties.

    The plaintext run's party configs are copies with ``allow_plaintext = true``; the
    encrypted run's configs (``e_party.toml``, ``p_party.toml``) never allow it. Both keep
    the default security floor (2048-bit keys, full randomness) unless ``--key-bits`` asks
    for less, which lowers ``min_key_bits`` to it.
    """
    from vfl.cli.netconfig import NetworkLayout, write_network_configs
    from vfl.cli.pilot_runs import RunFiles
    from vfl.config.party import load_party_config
    from vfl.transport.certs import generate_dev_pki
    from vfl.transport.sealing import write_box_keys

    data, certs = out / "data", out / "certs"
    keys = PARTY_KEYS[:parties]
    names = [load_party_config(data / f"{k}_party.toml").party.name for k in keys]
    generate_dev_pki(certs, parties=names)
    for name in names:
        write_box_keys(certs, name)
    runs = {}
    if plaintext:  # first: each run's writer replaces certs/coordinator.toml, renamed after
        runs["plaintext"] = ("pilot-plaintext", "_plaintext", {**train, "protocol": "plaintext"})
    runs["encrypted"] = ("pilot", "", train)
    files: dict[str, RunFiles] = {}
    for mode, (name, suffix, settings) in runs.items():
        configs = {
            k: _party_copy(
                data / f"{k}_party.toml",
                data / f"{k}_party{suffix}.toml",
                allow_plaintext=bool(suffix),
                key_bits=int(train["key_bits"]),
            )
            for k in keys
        }
        e, p = configs["e"].name, configs["p"].name
        job = data / f"job{suffix}.toml"
        job.write_text(dumps_toml(_job_table(data, settings, name=name, e=e, p=p)))
        layout = NetworkLayout(certs, tuple(names), port=_free_port(), job_file=job)
        written = write_network_configs(layout, dict(zip(names, configs.values(), strict=True)))
        coordinator = written["coordinator"].rename(certs / f"coordinator{suffix}.toml")
        files[mode] = RunFiles(coordinator=coordinator, job=job, parties=configs)
    return files


def pilot_train(
    dataset: Dataset,
    *,
    epochs: int = PILOT_MAX_EPOCHS,
    patience: int = PILOT_PATIENCE,
    time_budget: float = PILOT_TIME_BUDGET_S,
    key_bits: int = 2048,
    users_per_step: int | None = None,
) -> dict[str, Any]:
    """The ``[train]`` settings the pilot writes over the dataset's job file (``configs/``
    holds the result for the defaults)."""
    return {
        **PILOT_TRAIN,
        "epochs": epochs,
        "patience": patience,
        "time_budget_s": time_budget,
        "key_bits": key_bits,
        "users_per_step": users_per_step or (8 if dataset is Dataset.SYNTHETIC else 16),
    }


def pilot(
    dataset: Dataset = typer.Option(Dataset.SYNTHETIC, help="The pilot's data."),
    out: Path = typer.Option(Path("runs/pilot"), help="Pilot directory (created)."),
    users: int = typer.Option(1000, min=50, help="Synthetic customers (union of the parties)."),
    parties: int = typer.Option(
        2,
        min=2,
        max=3,
        help="Organisations: 2 (E and P) or 3 (also a logistics partner L; synthetic data).",
    ),
    epochs: int = typer.Option(
        PILOT_MAX_EPOCHS, min=1, help="Most epochs of every model (early stopping ends sooner)."
    ),
    patience: int = typer.Option(
        PILOT_PATIENCE, min=1, help="Stop after this many epochs without a better validation."
    ),
    time_budget: float = typer.Option(
        None,
        min=1.0,
        help="Stop a model once its epochs took this many seconds (default: 600 a partner).",
    ),
    users_per_step: int = typer.Option(
        None, min=1, help="Users a step (default: synthetic 8, MovieLens 16)."
    ),
    key_bits: int = typer.Option(2048, min=512, help="Paillier modulus size."),
    baselines: bool = typer.Option(True, help="Also train E alone and centralised."),
    timeout: float = typer.Option(7200, help="Seconds before a federated run is abandoned."),
) -> None:
    """Run the pilot: E alone, VFL plaintext, VFL encrypted (a process per party and the
    coordinator's), centralised; with --parties 3 also each partner's gain.

    SIGINT or SIGTERM stops the processes it started (their checkpoints kept), says how to
    resume and exits with 128 + the signal number.
    """
    from vfl.cli.signals import stop_on_signals
    from vfl.errors import ConfigError

    if parties == 3 and dataset is not Dataset.SYNTHETIC:
        raise ConfigError(
            "command line",
            "--parties",
            f"3 parties need the embedded synthetic data; {dataset.value} has two organisations",
            "use --dataset synthetic with --parties 3, or --parties 2",
        )
    # an encrypted epoch costs about one partner's pair more per partner: the budget grows
    # with them, so the encrypted run stops where the plaintext run does (by patience)
    train = pilot_train(
        dataset,
        epochs=epochs,
        patience=patience,
        time_budget=time_budget or PILOT_TIME_BUDGET_S * (parties - 1),
        key_bits=key_bits,
        users_per_step=users_per_step,
    )
    with stop_on_signals("pilot"):
        _pilot(dataset, out, users, train, baselines=baselines, timeout=timeout, parties=parties)


def _pilot(
    dataset: Dataset,
    out: Path,
    users: int,
    train: dict[str, Any],
    *,
    baselines: bool,
    timeout: float,
    parties: int = 2,
) -> None:
    """The body of :func:`pilot`, with the ``[train]`` table of its job files."""
    from vfl.cli.pilot_report import (
        baseline_rows,
        merge,
        partner_gains,
        privacy_audit,
        write_outputs,
    )
    from vfl.cli.pilot_runs import run_federated

    t_start = time.perf_counter()
    n_epochs = int(train["epochs"])
    out.mkdir(parents=True, exist_ok=True)
    console.print(f"preparing {dataset.value} data and certificates in {out} ...")
    _prepare_data(dataset, out / "data", users, parties)
    plaintext = plaintext_mode_available()
    files = write_run_configs(out, train, plaintext=plaintext, parties=parties)
    # each party's own secret seed, the same in both runs (see the module docstring)
    seeds = {k: secrets.randbelow(2**31) for k in PARTY_KEYS[:parties]}
    who = ", ".join(k.upper() for k in seeds)
    runs: dict[str, FederatedRun] = {}
    for mode, where in (("plaintext", out / "plaintext"), ("encrypted", out)):
        if mode in files:
            console.print(f"VFL {mode}: starting coordinator, {who} (logs in {where}) ...")
            runs[mode] = run_federated(
                where, files[mode], seeds=seeds, label=mode, console=console, timeout=timeout
            )
            console.print(f"VFL {mode} finished in {runs[mode].seconds:.0f} s")
    base: dict[str, Any] = {}
    job = files["encrypted"].job
    if baselines and parties == 2:
        console.print("training E alone and centralised on the same users, order and split ...")
        base = baseline_rows(job, out, epochs=n_epochs, plaintext=plaintext)
    elif baselines:
        console.print("training E alone on the same users, order and split ...")
        base = baseline_rows(job, out, epochs=n_epochs, plaintext=True, centralised=False)
        base["e_alone"].pop("groups", None)  # grouped by P alone there: not the run's groups
    results = merge(runs, base, dataset=dataset.value, out=out, job=job)
    if parties == 2:
        console.print("auditing what each party could infer (the job replayed in-process) ...")
        trained = len(results["models"]["split_encrypted"].get("loss_curve", [])) or n_epochs
        results["privacy"] = privacy_audit(job, out, epochs=trained)
    else:
        console.print("measuring each partner's gain (in-process plaintext, with and without) ...")
        results["partners"] = partner_gains(files["plaintext" if plaintext else "encrypted"], seeds)
    results["pilot_seconds"] = round(time.perf_counter() - t_start, 1)
    report = write_outputs(results, out)
    console.print(f"wrote {out / 'metrics.json'} and {report} in {results['pilot_seconds']:.0f} s")
