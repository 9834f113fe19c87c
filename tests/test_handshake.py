"""The sealed E-P handshake: equal plans and rules pass; any difference names field and values."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import run_concurrently
from vfl.config.job import load_job_config, load_job_parties
from vfl.config.party import PartyConfig
from vfl.config.plan import JobPlan, load_plan_file
from vfl.data.synthetic_writer import generate_synthetic
from vfl.errors import ParameterMismatch
from vfl.party.handshake import agreed_fields, handshake, schema_fingerprint
from vfl.party.resume import agree_position
from vfl.phases import Phase
from vfl.protocol.messages import Hello, ResumeAt
from vfl.protocol.recorder import RecordingChannel
from vfl.transport.channel import InMemoryChannel


@pytest.fixture(scope="module")
def configs(tmp_path_factory: pytest.TempPathFactory) -> tuple[PartyConfig, PartyConfig, Path]:
    data = tmp_path_factory.mktemp("hs") / "data"
    generate_synthetic(data, users=60, items=40, seed=1)
    e_cfg, p_cfg = load_job_parties(load_job_config(data / "job.toml"), data / "job.toml")
    return e_cfg, p_cfg, data / "job.toml"


def _both(
    e: tuple[PartyConfig, JobPlan], p: tuple[PartyConfig, JobPlan], p_pin: str | None = None
) -> dict[str, BaseException | Hello]:
    """Run both sides of the handshake as threads; collect each side's result or error."""
    e_ch, p_ch = InMemoryChannel.pair("shop", "payments")
    out: dict[str, BaseException | Hello] = {}

    def side(k: str, ch: InMemoryChannel, cfg: PartyConfig, plan: JobPlan, pin: str | None) -> None:
        try:
            out[k] = handshake(ch, cfg, plan, timeout=5, peer_schema=pin)
        except ParameterMismatch as exc:
            out[k] = exc

    run_concurrently(side, [("e", e_ch, *e, None), ("p", p_ch, *p, p_pin)], timeout=10)
    return out


def test_equal_parameters_agree(configs: tuple[PartyConfig, PartyConfig, Path]) -> None:
    e_cfg, p_cfg, job = configs
    plan = load_plan_file(job)
    out = _both((e_cfg, plan), (p_cfg, plan), p_pin=schema_fingerprint(e_cfg))
    assert isinstance(out["e"], Hello) and out["e"].party == "payments"
    assert isinstance(out["p"], Hello) and out["p"].party == "shop"


def test_key_size_mismatch_names_the_field_on_both_sides(
    configs: tuple[PartyConfig, PartyConfig, Path],
) -> None:
    # Prepare: P was given a plan with 1024-bit keys
    e_cfg, p_cfg, job = configs
    plan = load_plan_file(job)
    other = plan.model_copy(update={"train": plan.train.model_copy(update={"key_bits": 1024})})
    # Execute
    out = _both((e_cfg, plan), (p_cfg, other))
    # Assert: both stop, naming the field and both values
    for k in ("e", "p"):
        assert isinstance(out[k], ParameterMismatch)
        message = str(out[k])
        assert "plan.train.key_bits" in message and "2048" in message and "1024" in message


def test_cipher_suite_mismatch_names_the_field_on_both_sides(
    configs: tuple[PartyConfig, PartyConfig, Path],
) -> None:
    # Prepare: P runs a vfl whose plan names another cipher suite
    e_cfg, p_cfg, job = configs
    plan = load_plan_file(job)
    other = plan.model_copy(update={"train": plan.train.model_copy(update={"cipher": "ou"})})
    assert agreed_fields(e_cfg, plan)["plan.train.cipher"] == "paillier"
    # Execute
    out = _both((e_cfg, plan), (p_cfg, other))
    # Assert: both stop, naming the field and both values
    assert str(out["e"]).count("plan.train.cipher: shop has 'paillier', payments has 'ou'") == 1
    assert "plan.train.cipher: payments has 'ou', shop has 'paillier'" in str(out["p"])


def test_same_role_and_pinned_schema_are_checked(
    configs: tuple[PartyConfig, PartyConfig, Path],
) -> None:
    e_cfg, p_cfg, job = configs
    plan = load_plan_file(job)
    out = _both((e_cfg, plan), (e_cfg, plan))
    assert isinstance(out["e"], ParameterMismatch) and "party.role" in str(out["e"])
    out = _both((e_cfg, plan), (p_cfg, plan), p_pin="0" * 64)
    assert isinstance(out["p"], ParameterMismatch) and "schema of shop" in str(out["p"])
    assert isinstance(out["e"], Hello)  # E pinned nothing


def test_the_recorder_sees_the_hello_and_the_resume_position_typed(
    configs: tuple[PartyConfig, PartyConfig, Path],
) -> None:
    # Prepare: P's side recorded, as the protocol's messages are
    e_cfg, p_cfg, job = configs
    plan = load_plan_file(job)
    e_ch, p_end = InMemoryChannel.pair("shop", "payments")
    p_ch = RecordingChannel(p_end)
    mine = {"e": (Phase.TRAIN, 12), "p": (Phase.TRAIN, 13)}
    agreed: dict[str, object] = {}

    def side(k: str, ch: InMemoryChannel | RecordingChannel, cfg: PartyConfig) -> None:
        handshake(ch, cfg, plan, timeout=5)
        agreed[k] = agree_position(ch, mine[k], me=cfg.party.name, timeout=5)

    # Execute
    run_concurrently(side, [("e", e_ch, e_cfg), ("p", p_ch, p_cfg)], timeout=10)
    # Assert: P received exactly E's hello and E's position, as typed messages
    assert p_ch.undecodable == []
    hello, at = p_ch.received
    assert isinstance(hello, Hello) and hello.party == "shop" and hello.role == "active"
    assert set(hello.agreed) == set(agreed_fields(p_cfg, plan))
    assert at == ResumeAt(phase="train", step=12)
    assert agreed == {"e": (Phase.TRAIN, 12), "p": (Phase.TRAIN, 12)}
