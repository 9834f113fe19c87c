"""The bad-input catalogue (docs/reliability.md): one test per user mistake or hostile input.

Each asserts that the error is a named :class:`VflError` (or that the CLI exits with code 2
printing one line and no traceback), that it names the file, key, column or party, that it
says the fix, and, where something was written before, that nothing of it is lost. Cases
already covered elsewhere (tests/test_config.py, tests/test_loading.py, ...) are listed in the
docs/reliability.md catalogue with their test names instead of being repeated here.
"""

from __future__ import annotations

import datetime as dt
import errno
import hashlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.helpers import run_concurrently
from vfl.config.job import load_job_config, load_job_parties
from vfl.config.party import IdRule, PartyConfig, load_party_config
from vfl.config.plan import JobPlan, load_plan_file
from vfl.crypto.paillier import EncryptedVector, KeyPair
from vfl.data.alignment import align_locally
from vfl.data.loading import load_feature_table
from vfl.data.synthetic_writer import generate_synthetic
from vfl.errors import (
    ConfigError,
    DataError,
    MalformedCiphertext,
    ParameterMismatch,
    ProtocolError,
    StorageError,
    VflError,
)
from vfl.party.handshake import handshake
from vfl.protocol.secure_layer import SecureScales, agreed_parameters, check_agreement
from vfl.transport.certs import generate_dev_pki
from vfl.transport.channel import InMemoryChannel

ROOT = Path(__file__).resolve().parents[1]
KEYS = KeyPair.generate(512)


def _vfl(*args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``python -m vfl ARGS`` with this checkout first on the path."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "vfl", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def _one_clear_line(done: subprocess.CompletedProcess[str]) -> str:
    """Assert a CLI refusal: exit 2, one 'error:' line with a fix, no traceback."""
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Fix:" in errors[0], done.stderr
    return errors[0]


def _digests(directory: Path) -> dict[str, str]:
    """SHA-256 of every file under ``directory``, by relative path."""
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


def _users_schema(path: Path) -> dict[str, object]:
    """A users schema (as a dict) reading ``spend`` (numeric) and ``card``."""
    return {"path": path, "id_column": "user_id", "numeric": ("spend",), "categorical": ("card",)}


def _load_users(path: Path) -> None:
    """Load ``path`` as a users table."""
    from vfl.config.party import FeatureSchema

    load_feature_table(FeatureSchema.model_validate(_users_schema(path)), IdRule())


def _data_check(err: pytest.ExceptionInfo[DataError], file: Path, column: str | None) -> str:
    """The DataError names the file and column and gives a fix."""
    message = str(err.value)
    assert isinstance(err.value, VflError) and err.value.file == str(file)
    assert err.value.column == column and str(file) in message and "Fix:" in message
    return message


# -- data files ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spend", "words"),
    [
        (["1.5", "lots", "3"], "non-numeric or infinite value 'lots' at row 2"),
        ([1.0, np.nan, 3.0], "1 missing value(s) at row 2 (ids ['u2'])"),
        ([1.0, 2.0, np.inf], "non-numeric or infinite value 'inf' at row 3"),
        ([-np.inf, 2.0, 3.0], "non-numeric or infinite value '-inf' at row 1"),
    ],
    ids=["wrong-dtype", "nan", "inf", "minus-inf"],
)
def test_bad_parquet_feature_values(tmp_path: Path, spend: list[object], words: str) -> None:
    # Prepare: the CSV forms are in tests/test_loading.py; Parquet keeps real NaN/inf floats
    path = tmp_path / "users.parquet"
    card = ["v", "a", "v"]
    pd.DataFrame({"user_id": ["u1", "u2", "u3"], "spend": spend, "card": card}).to_parquet(path)

    # Execute
    with pytest.raises(DataError) as err:
        _load_users(path)

    # Assert
    assert words in _data_check(err, path, "spend")


def test_parquet_file_that_is_really_csv(tmp_path: Path) -> None:
    path = tmp_path / "users.parquet"
    path.write_text("user_id,spend,card\nu1,1,visa\n")
    with pytest.raises(DataError) as err:
        _load_users(path)
    message = _data_check(err, path, None)
    assert "no 'PAR1' magic bytes and looks like text" in message
    assert 'rename it to .csv or set format = "csv"' in message


def test_csv_file_that_is_really_parquet(tmp_path: Path) -> None:
    path = tmp_path / "users.csv"
    pd.DataFrame({"user_id": ["u1"], "spend": [1.0], "card": ["v"]}).to_parquet(path)
    with pytest.raises(DataError) as err:
        _load_users(path)
    message = _data_check(err, path, None)
    assert "it is a Parquet file" in message and 'set format = "parquet"' in message


def test_csv_that_is_not_utf8_names_the_line(tmp_path: Path) -> None:
    # Prepare: a Latin-1 export from a spreadsheet, the bad byte far beyond pandas' first chunk
    path = tmp_path / "users.csv"
    rows = "".join(f"u{i},{i},visa\n" for i in range(3000))
    path.write_bytes(("user_id,spend,card\n" + rows + "u9999,1,caf\xe9\n").encode("latin-1"))
    with pytest.raises(DataError) as err:
        _load_users(path)
    message = _data_check(err, path, None)
    assert "not UTF-8 text (byte 0xe9 on line 3002)" in message and "save it as UTF-8" in message


def test_semicolon_separated_csv_says_so(tmp_path: Path) -> None:
    path = tmp_path / "users.csv"
    path.write_text("user_id;spend;card\nu1;1;visa\n")
    with pytest.raises(DataError) as err:
        _load_users(path)
    message = _data_check(err, path, "user_id")
    assert "['user_id;spend;card']" in message and "comma-separated" in message


def test_empty_intersection_names_both_files_and_the_rule(tmp_path: Path) -> None:
    with pytest.raises(DataError) as err:
        align_locally(
            np.array(["a@x.org", "b@x.org"]),
            np.array(["A@X.ORG"]),
            sources=("e_users.csv", "p_users.csv"),
        )
    message = str(err.value)
    assert "e_users.csv and p_users.csv" in message and "empty intersection of 2 and 1" in message
    assert "['a@x.org'] and ['A@X.ORG']" in message and "Fix: check both parties' [ids]" in message


def test_log_without_any_positive_names_the_label(tmp_path: Path) -> None:
    # Prepare: every interaction labelled 0
    from tests.helpers import tiny_parties
    from vfl.data.splits import build_split
    from vfl.data.tables import InteractionLog

    active, passive = tiny_parties()
    log = active.interactions
    negatives = InteractionLog(
        log.user_ids, log.item_ids, log.timestamps, np.zeros_like(log.labels)
    )

    # Execute
    with pytest.raises(DataError) as err:
        build_split(negatives, align_locally(active.users.ids, passive.users.ids), active.items)

    # Assert
    assert "no positive interaction" in str(err.value) and err.value.column == "label"
    assert "Fix:" in str(err.value)


# -- configs -------------------------------------------------------------------------------


def _job_file(tmp_path: Path, extra: str = "") -> Path:
    """A job config over two generated party configs, plus ``extra`` TOML."""
    if not (tmp_path / "data" / "job.toml").exists():
        generate_synthetic(tmp_path / "data", users=60, items=40, seed=1)
    text = (tmp_path / "data" / "job.toml").read_text()
    path = tmp_path / "data" / f"job_{abs(hash(extra))}.toml"
    path.write_text(text.replace("[train]\n", f"[train]\n{extra}"))
    return path


@pytest.mark.parametrize(
    ("value", "words"),
    [("511", "a multiple of 2"), ("128", "greater than or equal to 256")],
)
def test_bad_key_size_is_refused_at_load(tmp_path: Path, value: str, words: str) -> None:
    path = _job_file(tmp_path, f"key_bits = {value}\n")
    with pytest.raises(ConfigError) as err:
        load_job_config(path)
    assert err.value.key == "train.key_bits" and words in str(err.value)
    assert str(path) in str(err.value) and "Fix: set 'train.key_bits'" in str(err.value)


def test_mismatched_job_field_between_parties_names_both_values(tmp_path: Path) -> None:
    # Prepare: the two organisations edited their copies of job.toml differently
    shop_job = load_job_config(_job_file(tmp_path))
    e_cfg, p_cfg = load_job_parties(shop_job, _job_file(tmp_path))
    shop = JobPlan.of(shop_job)
    payments = load_plan_file(_job_file(tmp_path, "users_per_step = 5\n"))
    e_ch, p_ch = InMemoryChannel.pair("shop", "payments")
    errors: dict[str, ParameterMismatch] = {}

    def side(name: str, channel: InMemoryChannel, cfg: PartyConfig, plan: JobPlan) -> None:
        with pytest.raises(ParameterMismatch) as err:
            handshake(channel, cfg, plan, timeout=5)
        errors[name] = err.value

    # Execute: the sealed handshake both parties run before PSI
    sides = [("shop", e_ch, e_cfg, shop), ("payments", p_ch, p_cfg, payments)]
    run_concurrently(side, sides, timeout=10)

    # Assert: both stop, each naming the field and both values
    n = shop.train.users_per_step
    assert f"plan.train.users_per_step: shop has {n}, payments has 5" in str(errors["shop"])
    assert f"plan.train.users_per_step: payments has 5, shop has {n}" in str(errors["payments"])
    assert not any(key.startswith("parties") for key in shop.fields())  # local paths stay local


def test_key_size_mismatch_between_parties(tmp_path: Path) -> None:
    scales = SecureScales()
    mine = agreed_parameters(scales, (8, 32), 512)
    theirs = agreed_parameters(scales, (8, 32), 1024)
    with pytest.raises(ParameterMismatch, match=r"key_bits: E has 512, P has 1024.*Fix:"):
        check_agreement(mine, theirs, me="E", peer="P")


# -- certificates --------------------------------------------------------------------------


def _network_config(tmp_path: Path, *, cert: str, key: str, ca: str = "certs/ca.pem") -> Path:
    """A passive party config whose [network] names the given files (relative to tmp_path)."""
    (tmp_path / "users.csv").write_text("user_id,spend\nu1,1\n")
    path = tmp_path / "p.toml"
    path.write_text(
        '[party]\nname = "payments"\nrole = "passive"\n'
        '[users]\npath = "users.csv"\nid_column = "user_id"\nnumeric = ["spend"]\n'
        f'[network]\ncoordinator = "127.0.0.1:50051"\nca = "{ca}"\ncert = "{cert}"\n'
        f'key = "{key}"\n'
    )
    return path


def _leaf(tmp_path: Path, name: str, *, start: dt.datetime, end: dt.datetime) -> None:
    """Write ``certs/ca.pem`` and a payments certificate ``certs/<name>.pem`` it signed, valid
    from ``start`` to ``end``, with its key ``certs/<name>.key``."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test CA")])
    now = dt.datetime.now(dt.UTC)
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(1)
        .not_valid_before(now - dt.timedelta(days=400))
        .not_valid_after(now + dt.timedelta(days=400))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "payments")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(2)
        .not_valid_before(start)
        .not_valid_after(end)
        .sign(ca_key, hashes.SHA256())
    )
    certs = tmp_path / "certs"
    certs.mkdir(exist_ok=True)
    (certs / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (certs / f"{name}.pem").write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    (certs / f"{name}.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def _config_check(err: pytest.ExceptionInfo[ConfigError], file: Path, key: str) -> str:
    message = str(err.value)
    assert err.value.file == str(file) and err.value.key == key
    assert f"'{key}'" in message and "Fix:" in message
    return message


def test_expired_certificate(tmp_path: Path) -> None:
    now = dt.datetime.now(dt.UTC)
    _leaf(tmp_path, "old", start=now - dt.timedelta(days=60), end=now - dt.timedelta(days=1))
    path = _network_config(tmp_path, cert="certs/old.pem", key="certs/old.key")
    with pytest.raises(ConfigError) as err:
        load_party_config(path)
    message = _config_check(err, path, "network.cert")
    expired = (now - dt.timedelta(days=1)).strftime("%Y-%m-%d")
    assert f"old.pem expired on {expired}" in message and "vfl certs-dev" in message


def test_certificate_not_yet_valid(tmp_path: Path) -> None:
    now = dt.datetime.now(dt.UTC)
    _leaf(tmp_path, "new", start=now + dt.timedelta(days=2), end=now + dt.timedelta(days=9))
    path = _network_config(tmp_path, cert="certs/new.pem", key="certs/new.key")
    with pytest.raises(ConfigError) as err:
        load_party_config(path)
    assert "is not valid before" in _config_check(err, path, "network.cert")


@pytest.fixture(scope="module")
def two_pkis(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two dev PKIs side by side: ``a/`` and ``b/``, each for shop and payments."""
    root = tmp_path_factory.mktemp("pkis")
    generate_dev_pki(root / "a", parties=["shop", "payments"])
    generate_dev_pki(root / "b", parties=["shop", "payments"])
    return root


@pytest.mark.parametrize(
    ("ca", "cert", "key", "field", "words"),
    [
        ("a/ca.pem", "b/payments.pem", "b/payments.key", "cert", "was not issued by the CA in"),
        ("a/ca.pem", "a/payments.pem", "a/shop.key", "key", "is not the private key of"),
        ("a/ca.pem", "a/payments.key", "a/payments.key", "cert", "is not a PEM certificate"),
        ("a/ca.pem", "a/payments.pem", "a/payments.pem", "key", "is not a PEM private key"),
        ("a/payments.key", "a/payments.pem", "a/payments.key", "ca", "is not a PEM certificate"),
    ],
    ids=["other-ca", "key-of-other-cert", "key-as-cert", "cert-as-key", "garbage-ca"],
)
def test_wrong_tls_files_are_named_at_load(
    two_pkis: Path, ca: str, cert: str, key: str, field: str, words: str
) -> None:
    path = _network_config(two_pkis, cert=cert, key=key, ca=ca)
    with pytest.raises(ConfigError) as err:
        load_party_config(path)
    assert words in _config_check(err, path, f"network.{field}")


def test_password_protected_key(two_pkis: Path) -> None:
    key = serialization.load_pem_private_key((two_pkis / "a" / "payments.key").read_bytes(), None)
    locked = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret"),
    )
    (two_pkis / "a" / "locked.key").write_bytes(locked)
    path = _network_config(two_pkis, cert="a/payments.pem", key="a/locked.key", ca="a/ca.pem")
    with pytest.raises(ConfigError) as err:
        load_party_config(path)
    assert "encrypted with a password" in _config_check(err, path, "network.key")


# -- messages from the other party ---------------------------------------------------------


def _with_ciphertext(value: int) -> bytes:
    """A serialised 1-vector whose single ciphertext is ``value``."""
    pk = KEYS.public_key
    data = EncryptedVector.raw_encrypt(pk, [1]).serialise(rerandomise=False)
    width = (pk.nsquare.bit_length() + 7) // 8
    return data[:-width] + value.to_bytes(width, "big")


@pytest.mark.parametrize(
    "make",
    [lambda n: n * n, lambda n: n * n + 5, lambda n: 0, lambda n: n, lambda n: 3 * n + 0],
    ids=["n-squared", "above-n-squared", "zero", "multiple-of-n", "not-coprime"],
)
def test_ciphertext_outside_the_key_range(make: Callable[[int], int]) -> None:
    with pytest.raises(MalformedCiphertext) as err:
        EncryptedVector.deserialise(_with_ciphertext(make(KEYS.public_key.n)), KEYS.public_key)
    assert isinstance(err.value, VflError) and isinstance(err.value, ValueError)
    message = str(err.value)
    assert "ciphertext 0 is outside (0, n^2) or not coprime to n" in message
    assert "512-bit key" in message and KEYS.public_key.fingerprint().hex()[:12] in message


def test_truncated_sealed_envelope_names_the_peer() -> None:
    from nacl.public import PrivateKey

    from vfl.transport.channel import InMemoryChannel
    from vfl.transport.sealing import SealedChannel

    e_key, p_key = PrivateKey.generate(), PrivateKey.generate()
    e_raw, p_raw = InMemoryChannel.pair("shop", "payments")
    e = SealedChannel(e_raw, private_key=bytes(e_key), peer_public_key=bytes(p_key.public_key))
    p = SealedChannel(p_raw, private_key=bytes(p_key), peer_public_key=bytes(e_key.public_key))
    e.send(b"a step's ciphertexts")
    sealed = p_raw._inbox.get()
    for cut in (sealed[:-1], sealed[:10], b""):
        p_raw._inbox.put(cut)
        with pytest.raises(ProtocolError, match="coming from 'shop' failed authentication"):
            p.recv(timeout=1)


# -- command line and what is already on disk ----------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def test_coordinator_unreachable_fails_within_timeout_naming_the_address(tmp_path: Path) -> None:
    # Prepare: P's config points at a port nothing listens on, with a 2 s timeout
    generate_synthetic(tmp_path / "data", users=60, items=40, seed=1)
    done = _vfl("certs-dev", "--out", "certs", "--parties", "shop,payments", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    address = f"127.0.0.1:{_free_port()}"
    cfg = tmp_path / "data" / "p_party.toml"
    cfg.write_text(
        cfg.read_text() + f'\n[network]\ncoordinator = "{address}"\nca = "../certs/ca.pem"\n'
        'cert = "../certs/payments.pem"\nkey = "../certs/payments.key"\npeer = "shop"\n'
        'box_key = "../certs/payments.box"\npeer_box_public = "../certs/shop.box.pub"\n'
        "timeout_s = 2\nconnect_timeout_s = 2\n"
    )

    # Execute
    start = time.monotonic()
    done = _vfl("party", "--config", str(cfg), "--job", "data/job.toml", "--out", "p", cwd=tmp_path)
    elapsed = time.monotonic() - start

    # Assert: well within a minute (start-up ~ a few s + the 2 s timeout), naming the address
    line = _one_clear_line(done)
    assert address in line and "unreachable" in line and "coordinator is running" in line
    assert elapsed < 45


def test_failed_compare_keeps_the_previous_results(tmp_path: Path) -> None:
    # Prepare: a finished run's output, then a job file with a typo
    out = tmp_path / "out"
    out.mkdir()
    (out / "compare.json").write_text('{"previous": true}')
    (out / "report.md").write_text("# previous report")
    job = _job_file(tmp_path, "epoch = 3\n")
    before = _digests(out)

    # Execute
    done = _vfl("compare", "--config", str(job), "--out", str(out), cwd=tmp_path)

    # Assert
    assert "train.epoch" in _one_clear_line(done)
    assert _digests(out) == before


def test_compare_output_blocked_by_a_file_fails_before_training(tmp_path: Path) -> None:
    blocker = tmp_path / "results"
    blocker.write_text("my notes")
    job = _job_file(tmp_path)
    start = time.monotonic()
    done = _vfl("compare", "--config", str(job), "--out", str(blocker), cwd=tmp_path)
    line = _one_clear_line(done)
    assert str(blocker) in line and "is a file, not a directory" in line
    assert blocker.read_text() == "my notes"
    assert time.monotonic() - start < 30  # refused up front, not after training


def test_refused_data_command_leaves_existing_data_alone(tmp_path: Path) -> None:
    generate_synthetic(tmp_path / "data", users=60, items=40, seed=1)
    before = _digests(tmp_path / "data")
    done = _vfl("data", "synth", "--out", "data", "--overlap", "2", cwd=tmp_path)
    assert "--overlap" in _one_clear_line(done)
    assert _digests(tmp_path / "data") == before


def test_disk_full_while_regenerating_data_leaves_whole_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prepare: seed-1 data on disk, the seed-2 bytes for reference, then a disk that fills up
    generate_synthetic(tmp_path / "data", users=60, items=40, seed=1)
    generate_synthetic(tmp_path / "ref", users=60, items=40, seed=2)
    old, new = _digests(tmp_path / "data"), _digests(tmp_path / "ref")
    real_fsync, calls = os.fsync, []

    def fsync(fd: int) -> None:
        calls.append(fd)
        if len(calls) == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)

    # Execute
    with pytest.raises(StorageError) as err:
        generate_synthetic(tmp_path / "data", users=60, items=40, seed=2)
    monkeypatch.undo()

    # Assert: the error names the file; every file is wholly old or wholly new, none torn
    assert "no space left" in str(err.value) and str(tmp_path / "data") in str(err.value)
    after = _digests(tmp_path / "data")
    assert set(after) == set(old)
    assert all(after[name] in (old[name], new[name]) for name in after)
    assert any(after[name] == old[name] != new[name] for name in after)


def test_disk_full_while_writing_the_report_keeps_the_previous_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from vfl.evaluation.report import write_report

    row = {"hr@10": 0.5, "ndcg@10": 0.3, "auc": 0.7, "logloss": 0.4, "best_epoch": 1}
    results = {"models": {"m": {**row, "wall_seconds": 1.0, "loss_curve": [0.7, 0.6]}}}
    write_report(results, tmp_path)
    before = _digests(tmp_path)

    def full(*args: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "replace", full)
    with pytest.raises(StorageError, match=r"loss_curves\.png: no space left.*Fix: free space"):
        write_report(results, tmp_path)
    monkeypatch.undo()
    assert _digests(tmp_path) == before


# -- the catalogue in docs/reliability.md --------------------------------------------------


def _catalogue() -> list[tuple[str, list[tuple[str, str]]]]:
    """(bad input, [(test file, test name)]) for each row of the catalogue table."""
    text = (ROOT / "docs" / "reliability.md").read_text()
    section = text.split("\n| bad input |", 1)[1].split("\n\n", 1)[0]
    section = "| bad input |" + section
    rows = [line for line in section.splitlines() if line.startswith("| ") and "---" not in line]
    out = []
    for row in rows[1:]:  # rows[0] is the header
        cells = [c.strip() for c in row.strip("|").split("|")]
        refs = []
        for group in cells[2].split(";"):
            short, names = group.split(":", 1)
            module = "test_bad_inputs" if short.strip() == "bad" else f"test_{short.strip()}"
            for name in names.split(", "):
                if name.strip().startswith("test_"):
                    refs.append((module, name.strip().split("[")[0]))
        out.append((cells[0], refs))
    return out


def test_reliability_catalogue_names_existing_tests() -> None:
    catalogue = _catalogue()
    assert len(catalogue) >= 40
    for bad_input, refs in catalogue:
        assert refs, bad_input
        for module, name in refs:
            source = (ROOT / "tests" / f"{module}.py").read_text()
            assert f"def {name}(" in source, f"{bad_input}: {module}.{name} does not exist"
