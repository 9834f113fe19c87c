"""Certificates from an existing corporate CA: a party certificate issued by an intermediate,
its ``cert`` file holding the chain, the config's ``ca`` only the corporate root."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pydantic_core import PydanticCustomError

from vfl.config.tls_files import check_tls_files
from vfl.transport.grpc_channel import GrpcChannel
from vfl.transport.grpc_relay import RelayServer
from vfl.transport.pki import create_request, sign_request


def _authority(
    directory: Path,
    name: str,
    *,
    path_length: int,
    issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A CA certificate (self-signed without ``issuer``) written as ``directory/ca.{pem,key}``."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    signer_cert, signer_key = issuer if issuer is not None else (None, key)
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject if signer_cert is None else signer_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(signer_key, hashes.SHA256())
    )
    directory.mkdir(parents=True)
    (directory / "ca.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (directory / "ca.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert, key


@pytest.fixture()
def corporate(tmp_path: Path) -> Path:
    """Root -> intermediate -> shop (chain file), root -> coordinator, in ``tmp_path``."""
    root = _authority(tmp_path / "root", "Corp Root CA", path_length=1, issuer=None)
    _authority(tmp_path / "issuing", "Corp Issuing CA", path_length=0, issuer=root)
    shop = create_request(tmp_path / "shop", "shop")
    leaf = sign_request(tmp_path / "issuing", shop.request, party="shop")
    chain = leaf.read_bytes() + (tmp_path / "issuing" / "ca.pem").read_bytes()
    (tmp_path / "shop" / "shop-chain.pem").write_bytes(chain)
    coordinator = create_request(tmp_path / "c", "coordinator", hosts=["127.0.0.1"])
    sign_request(tmp_path / "root", coordinator.request, party="coordinator")
    return tmp_path


def test_a_chain_file_to_the_corporate_root_is_accepted(corporate: Path) -> None:
    check_tls_files(
        corporate / "root" / "ca.pem",
        corporate / "shop" / "shop-chain.pem",
        corporate / "shop" / "shop.key",
    )
    with pytest.raises(PydanticCustomError, match="was not issued by the CA"):
        check_tls_files(  # the leaf alone does not reach the root
            corporate / "root" / "ca.pem", corporate / "shop" / "shop.pem",
            corporate / "shop" / "shop.key",
        )  # fmt: skip


def test_a_party_with_a_chain_joins_a_coordinator_trusting_only_the_root(corporate: Path) -> None:
    root = (corporate / "root" / "ca.pem").read_bytes()
    server = RelayServer(
        "127.0.0.1:0",
        ca_pem=root,
        cert_pem=(corporate / "c" / "coordinator.pem").read_bytes(),
        key_pem=(corporate / "c" / "coordinator.key").read_bytes(),
        allowed_parties={"shop", "payments"},
        job_id="corp",
    )
    port = server.start()
    try:
        channel = GrpcChannel(
            f"127.0.0.1:{port}",
            me="shop",
            peer="payments",
            ca_pem=root,
            cert_pem=(corporate / "shop" / "shop-chain.pem").read_bytes(),
            key_pem=(corporate / "shop" / "shop.key").read_bytes(),
            job_id="corp",
            timeout_s=10.0,
        )
        reply = channel.join()
        assert reply.job == "corp" and "shop" in server.board.joined
    finally:
        server.stop()
