"""The cipher-suite seam: the secure layer takes its scheme from the registry by name.

* An unknown scheme in a job plan fails at load, naming ``train.cipher`` and the known ones.
* Two parties whose settings name different suites are refused at setup, naming the field
  and both values, before either reads the other's key.
* The setup messages carry the scheme's name; a suite registered under another name is the
  one whose factory builds the keys and ciphers.
"""

from __future__ import annotations

from pathlib import Path
from types import MappingProxyType
from typing import ClassVar

import pytest

from tests.helpers import tiny_training_inputs
from tests.secure_helpers import build_pair, refused_setup, settings
from vfl.config.plan import load_plan_file
from vfl.crypto.paillier import KeyPair
from vfl.errors import ConfigError, ParameterMismatch, UnknownCipherSuite
from vfl.protocol import suites
from vfl.protocol.ciphers import LayerCipher
from vfl.protocol.messages import SecureForwardRes, SetupIns, SetupRes
from vfl.protocol.options import Mode
from vfl.protocol.secure_layer import LayerSettings, generate_keys
from vfl.protocol.suites import CipherParts, PaillierSuite, cipher_suite


class _CountingSuite(PaillierSuite):
    """Paillier under another name, counting what its factory builds."""

    name = "paillier-counted"
    built: ClassVar[list[str]] = []

    def generate_keys(self, key_bits: int) -> KeyPair:
        """Counted key generation."""
        self.built.append("keys")
        return super().generate_keys(key_bits)

    def cipher(self, parts: CipherParts) -> LayerCipher:
        """Counted cipher construction."""
        self.built.append("cipher")
        return super().cipher(parts)


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> type[_CountingSuite]:
    _CountingSuite.built = []
    registry = {**suites.SUITES, _CountingSuite.name: _CountingSuite}
    monkeypatch.setattr(suites, "SUITES", MappingProxyType(registry))
    return _CountingSuite


def test_unknown_scheme_in_the_plan_names_the_key_and_the_known_schemes(tmp_path: Path) -> None:
    # Prepare
    job = tmp_path / "job.toml"
    job.write_text('[train]\ncipher = "rsa"\n')
    # Execute / Assert
    with pytest.raises(ConfigError, match=r"train\.cipher.*unknown cipher suite 'rsa'") as err:
        load_plan_file(job)
    assert err.value.key == "train.cipher" and "known: 'paillier'" in str(err.value)
    job.write_text("[train]\nkey_bits = 2048\n")
    assert load_plan_file(job).train.cipher == "paillier"  # the default


def test_unknown_scheme_in_layer_settings_is_refused() -> None:
    with pytest.raises(UnknownCipherSuite, match=r"'rsa'; known: 'paillier'"):
        LayerSettings(cipher="rsa")
    with pytest.raises(UnknownCipherSuite):
        cipher_suite("")


def test_the_registered_suite_builds_the_keys_and_ciphers(counted: type[_CountingSuite]) -> None:
    # Execute
    keys = generate_keys(settings(cipher=counted.name))
    pair = build_pair(tiny_training_inputs(), e_settings=settings(cipher=counted.name))
    pair.start()
    pair.model.train_step(0, pair.batches(1)[0])
    pair.stop()
    # Assert: keys from the suite; each side's own and peer cipher from its factory
    assert keys is not None and keys.public_key.n_bits == 512
    assert counted.built.count("keys") == 1 and counted.built.count("cipher") == 4
    (setup_ins,) = pair.p_rec.of_type(SetupIns)
    (setup_res,) = pair.e_rec.of_type(SetupRes)
    assert setup_ins.cipher == setup_res.cipher == counted.name


def test_parties_on_different_suites_are_refused_at_setup_naming_the_field(
    counted: type[_CountingSuite],
) -> None:
    # Prepare: E runs the default suite, P another one
    pair = build_pair(
        tiny_training_inputs(),
        e_settings=settings(),
        p_settings=settings(cipher=counted.name),
        timeout=5,
    )
    # Execute
    at_e, at_p = refused_setup(pair)
    # Assert: E is told the field and both values; P stops as well
    assert "cipher: P has 'paillier-counted', E has 'paillier'" in str(at_e)
    assert at_p and "cipher: P has 'paillier-counted', E has 'paillier'" in str(at_p[0])
    (setup_ins,) = pair.p_rec.of_type(SetupIns)
    assert setup_ins.cipher == "paillier"  # the recorder sees the scheme's name
    assert not pair.e_rec.of_type(SetupRes) and not pair.e_rec.of_type(SecureForwardRes)
    pair.model.peer.share.close()
    pair.server.share.close()


def test_a_key_labelled_with_another_suite_is_refused() -> None:
    # Prepare: E's settings as P's; a setup message whose key claims another scheme
    e = build_pair(tiny_training_inputs(), e_settings=settings()).model.peer.share
    # Execute / Assert
    with pytest.raises(ParameterMismatch, match=r"cipher: E has 'paillier', P has 'ou'"):
        e.set_peer(b"", scheme="ou", peer="P")
    e.close()


def test_plaintext_mode_agrees_on_no_suite() -> None:
    s = settings(Mode.PLAINTEXT)
    assert s.scheme == "none" and s.agreed((3, 4))["cipher"] == "none"
    assert settings().agreed((3, 4))["cipher"] == "paillier"
