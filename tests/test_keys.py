"""Key custody across organisations: ``vfl keys``, ``vfl ca init|sign``, ``vfl peer add``.

Every command runs as a real ``python -m vfl`` process in its organisation's own directory; the
test lists every file each one writes (a snapshot of the whole tree before and after), checks
its mode and that no command writes a private key of another organisation.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from tests.timing import scaled
from vfl.config.tls_files import check_tls_files
from vfl.transport.box_keys import fingerprint

ROOT = Path(__file__).resolve().parents[1]
SECRET_SUFFIXES = (".key", ".box")


def _vfl(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "vfl", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=scaled(60),
    )


def _tree(root: Path) -> dict[Path, tuple[int, bytes]]:
    """Every file under ``root``: (mode, content)."""
    return {
        p: (stat.S_IMODE(p.stat().st_mode), p.read_bytes()) for p in root.rglob("*") if p.is_file()
    }


def _run_recorded(root: Path, org: str, *args: str) -> dict[Path, int]:
    """Run ``vfl ARGS`` in ``root/org``; return the files it created or changed, with modes."""
    before = _tree(root)
    done = _vfl(root / org, *args)
    assert done.returncode == 0, done.stderr
    after = _tree(root)
    return {p: m for p, (m, data) in after.items() if before.get(p) != (m, data)}


def _owner_of_secret(path: Path) -> str | None:
    """The organisation whose private material ``path`` is (by name), or None if public."""
    if path.name == "ca.key":
        return "ca"
    for suffix in SECRET_SUFFIXES:
        if path.name.endswith(suffix):
            return path.name[: -len(suffix)]
    return None


def _custody(root: Path) -> dict[str, dict[Path, int]]:
    """The whole flow; files move between directories only by the test's copies of public files."""
    for org in ("shop", "payments", "coordinator", "ca"):
        (root / org).mkdir()
    writes: dict[str, dict[Path, int]] = {}
    writes["shop keys"] = _run_recorded(root, "shop", "keys", "--party", "shop", "--out", ".")
    writes["payments keys"] = _run_recorded(
        root, "payments", "keys", "--party", "payments", "--out", "."
    )
    writes["coordinator keys"] = _run_recorded(
        root, "coordinator", "keys", "--party", "coordinator", "--host", "10.1.2.3", "--out", "."
    )
    writes["ca init"] = _run_recorded(root, "ca", "ca", "init", "--out", ".")
    for org in ("shop", "payments", "coordinator"):  # requests travel to the CA ...
        shutil.copy(root / org / f"{org}.csr", root / "ca" / f"{org}.csr")
        writes[f"ca sign {org}"] = _run_recorded(
            root, "ca", "ca", "sign", f"{org}.csr", "--party", org, "--ca", "."
        )
        for name in (f"{org}.pem", "ca.pem"):  # ... certificates and the CA cert travel back
            shutil.copy(root / "ca" / name, root / org / name)
    for me, peer in (("shop", "payments"), ("payments", "shop")):
        shutil.copy(root / peer / f"{peer}.box.pub", root / me / "incoming.pub")
        digest = fingerprint((root / peer / f"{peer}.box.pub").read_bytes())
        writes[f"{me} peer add"] = _run_recorded(
            root, me, "peer", "add", "--name", peer, "--box-public", "incoming.pub",
            "--fingerprint", digest, "--keys", ".",
        )  # fmt: skip
    return writes


@pytest.fixture(scope="module")
def custody(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, dict[Path, int]]]:
    root = tmp_path_factory.mktemp("custody")
    return root, _custody(root)


def test_each_command_writes_only_its_own_files_with_secret_modes(
    custody: tuple[Path, dict[str, dict[Path, int]]],
) -> None:
    root, writes = custody
    expected = {
        "shop keys": {"shop/shop.key", "shop/shop.csr", "shop/shop.box", "shop/shop.box.pub"},
        "payments keys": {
            "payments/payments.key",
            "payments/payments.csr",
            "payments/payments.box",
            "payments/payments.box.pub",
        },
        "coordinator keys": {"coordinator/coordinator.key", "coordinator/coordinator.csr"},
        "ca init": {"ca/ca.pem", "ca/ca.key"},
        "ca sign shop": {"ca/shop.pem"},
        "ca sign payments": {"ca/payments.pem"},
        "ca sign coordinator": {"ca/coordinator.pem"},
        "shop peer add": {"shop/payments.box.pub"},
        "payments peer add": {"payments/shop.box.pub"},
    }
    for command, files in writes.items():
        org = next(iter(files)).relative_to(root).parts[0]
        print(command, {str(p.relative_to(root)): f"{m:04o}" for p, m in files.items()})
        assert {str(p.relative_to(root)) for p in files} == expected[command], command
        for path, mode in files.items():
            owner = _owner_of_secret(path)
            if owner is not None:
                assert mode == 0o600, f"{command}: secret {path} has mode {mode:04o}"
                assert owner == org, f"{command} wrote {owner}'s private {path} into {org}/"
            else:
                assert mode & 0o022 == 0, f"{command}: {path} writable by others ({mode:04o})"


def test_no_directory_holds_another_organisations_private_material(
    custody: tuple[Path, dict[str, dict[Path, int]]],
) -> None:
    root, _ = custody
    secrets = {
        org: {p.read_bytes() for p in (root / org).iterdir() if _owner_of_secret(p) == org}
        for org in ("shop", "payments", "coordinator", "ca")
    }
    for org in secrets:
        held = {p.read_bytes() for p in (root / org).iterdir()}
        for other, theirs in secrets.items():
            if other != org:
                assert not held & theirs, f"{org}/ holds private material of {other}"


def test_signed_certificates_form_a_working_mutual_tls_set(
    custody: tuple[Path, dict[str, dict[Path, int]]],
) -> None:
    root, _ = custody
    for org in ("shop", "payments", "coordinator"):
        d = root / org
        check_tls_files(d / "ca.pem", d / f"{org}.pem", d / f"{org}.key")
    server = x509.load_pem_x509_certificate((root / "coordinator" / "coordinator.pem").read_bytes())
    sans = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)] == ["10.1.2.3"]
    usage = server.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.SERVER_AUTH]
    client = x509.load_pem_x509_certificate((root / "shop" / "shop.pem").read_bytes())
    usage = client.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert (root / "shop" / "payments.box.pub").read_bytes() == (
        root / "payments" / "payments.box.pub"
    ).read_bytes()


def test_keys_prints_the_fingerprint_it_pins_by(tmp_path: Path) -> None:
    done = _vfl(tmp_path, "keys", "--party", "shop", "--out", "k")
    printed = done.stdout.split("read it out to the partner):")[1].split()
    assert "".join(printed) == fingerprint((tmp_path / "k" / "shop.box.pub").read_bytes())
    assert stat.S_IMODE((tmp_path / "k").stat().st_mode) == 0o700  # a new key directory


def test_wrong_fingerprint_pins_nothing(tmp_path: Path) -> None:
    _vfl(tmp_path, "keys", "--party", "shop", "--out", "shop")
    done = _vfl(
        tmp_path, "peer", "add", "--name", "shop", "--box-public", "shop/shop.box.pub",
        "--fingerprint", "00" * 32, "--keys", "mine",
    )  # fmt: skip
    assert done.returncode == 2
    assert "fingerprint" in done.stderr and "nothing pinned" in done.stderr
    assert not (tmp_path / "mine").exists() or not any((tmp_path / "mine").iterdir())


def test_private_key_offered_as_public_is_refused(tmp_path: Path) -> None:
    _vfl(tmp_path, "keys", "--party", "shop", "--out", "shop")
    (tmp_path / "shop" / "shop.key").rename(tmp_path / "shop" / "not-a-box.pub")
    done = _vfl(
        tmp_path, "peer", "add", "--name", "shop", "--box-public", "shop/not-a-box.pub",
        "--fingerprint", "00" * 32,
    )  # fmt: skip
    assert done.returncode == 2 and "not a 32-byte X25519 public key" in done.stderr


def test_ca_refuses_a_request_for_another_name(tmp_path: Path) -> None:
    _vfl(tmp_path, "keys", "--party", "mallory", "--out", ".")
    _vfl(tmp_path, "ca", "init", "--out", "ca")
    done = _vfl(tmp_path, "ca", "sign", "mallory.csr", "--party", "shop", "--ca", "ca")
    assert done.returncode == 2
    assert "'mallory', not for --party 'shop'" in done.stderr
    assert not (tmp_path / "shop.pem").exists()


def test_existing_keys_are_never_overwritten(tmp_path: Path) -> None:
    _vfl(tmp_path, "keys", "--party", "shop", "--out", ".")
    before = (tmp_path / "shop.key").read_bytes()
    done = _vfl(tmp_path, "keys", "--party", "shop", "--out", ".")
    assert done.returncode == 2 and "already exists" in done.stderr
    assert (tmp_path / "shop.key").read_bytes() == before
    again = _vfl(tmp_path, "ca", "init", "--out", ".")
    assert again.returncode == 0
    assert _vfl(tmp_path, "ca", "init", "--out", ".").returncode == 2


def test_certs_says_it_is_the_one_machine_shortcut(tmp_path: Path) -> None:
    done = _vfl(tmp_path, "certs", "--out", "certs")
    assert done.returncode == 0
    assert "one-machine development shortcut" in done.stdout and "vfl keys" in done.stdout
