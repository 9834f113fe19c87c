"""The sealed E-P handshake: equal plans and rules pass; any difference names field and values."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import run_concurrently
from vfl.config.job import load_job_config, load_job_parties
from vfl.config.party import PartyConfig
from vfl.config.plan import JobPlan, load_plan_file
from vfl.data.synthetic_writer import generate_synthetic
from vfl.errors import ParameterMismatch, ProtocolError
from vfl.party.handshake import agreed_fields, handshake, hello_of, schema_fingerprint
from vfl.party.resume import agree_position, position_of, resume_at
from vfl.phases import Phase
from vfl.protocol.messages import Hello, ResumeAt, Shutdown
from vfl.protocol.recorder import RecordingChannel
from vfl.protocol.serde import decode, decode_control, encode_control
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
        assert message.endswith(". Fix: give both parties the same job plan (one coordinator "
                                "`plan`, the same --job file)")  # fmt: skip


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
    assert "Fix: set [party] role" in str(out["e"])
    out = _both((e_cfg, plan), (p_cfg, plan), p_pin="0" * 64)
    assert isinstance(out["p"], ParameterMismatch) and "schema of shop" in str(out["p"])
    # the fix names the key and the value that would pin shop's schema
    pin = f'set network.peer_schema_sha256 to "{schema_fingerprint(e_cfg)}"'
    assert "Fix: give shop the data schema that was pinned, or, if its schema" in str(out["p"])
    assert pin in str(out["p"])
    assert isinstance(out["e"], Hello)  # E pinned nothing


def _waiting_at_e(first: bytes) -> tuple[InMemoryChannel, InMemoryChannel]:
    """E's and P's ends of a fresh channel, with P's ``first`` message already sent to E."""
    e_ch, p_ch = InMemoryChannel.pair("shop", "payments")
    p_ch.send(first)
    return e_ch, p_ch


def test_a_partner_pin_is_named_by_its_key(
    configs: tuple[PartyConfig, PartyConfig, Path],
) -> None:
    # Prepare: P's hello waits at E, which pinned another schema for P among its partners
    e_cfg, p_cfg, job = configs
    plan = load_plan_file(job)
    e_ch, _ = _waiting_at_e(encode_control(hello_of(p_cfg, plan), job_id=plan.job.name))
    key = "schema_sha256 of [[network.partners]] 'payments'"
    # Execute
    with pytest.raises(ParameterMismatch) as err:
        handshake(e_ch, e_cfg, plan, timeout=5, peer_schema="1" * 64, pinned_as=key)
    # Assert: the line and the fix name that key; the fix gives P's digest in full
    assert f"schema of payments: pinned {key} is 1111111111111111..." in str(err.value)
    assert f'set {key} to "{schema_fingerprint(p_cfg)}"' in str(err.value)


def test_the_hello_travels_as_a_control_message_and_another_message_is_refused(
    configs: tuple[PartyConfig, PartyConfig, Path],
) -> None:
    # Prepare: the peer's first message is a resume position, not a hello
    e_cfg, _, job = configs
    plan = load_plan_file(job)
    e_ch, p_ch = _waiting_at_e(encode_control(ResumeAt(phase="", step=-1)))
    # Execute
    with pytest.raises(ProtocolError) as err:
        handshake(e_ch, e_cfg, plan, timeout=5)
    sent = decode(p_ch.recv(timeout=5))
    # Assert: E named the peer and both message types; its hello is a typed control message
    assert str(err.value) == (
        "handshake message from 'payments' is not a hello: a ResumeAt, not a Hello"
    )
    assert sent.seq == 0 and sent.job_id == plan.job.name
    assert sent.message == hello_of(e_cfg, plan)
    assert decode_control(encode_control(sent.message, job_id=plan.job.name), Hello) == sent.message


@pytest.mark.parametrize(
    ("theirs", "why"),
    [
        (ResumeAt(phase="joined", step=0), "phase 'joined' keeps no checkpoint"),
        (ResumeAt(phase="train", step=-3), "step -3 is not a non-negative integer"),
        (ResumeAt(phase="", step=4), "'' is not a valid Phase"),
        (Shutdown(step=0), "a Shutdown, not a ResumeAt"),
    ],
)
def test_a_malformed_resume_position_is_refused_naming_the_peer(
    theirs: ResumeAt | Shutdown, why: str
) -> None:
    # Prepare: the peer's position is already waiting
    e_ch, p_ch = _waiting_at_e(encode_control(theirs))
    # Execute
    with pytest.raises(ProtocolError) as err:
        agree_position(e_ch, (Phase.TRAIN, 3), me="shop", timeout=5)
    # Assert: the peer and the reason are named; E's own position went out typed
    assert str(err.value) == f"resume position from 'payments' is malformed: {why}"
    assert decode_control(p_ch.recv(timeout=5), ResumeAt) == resume_at((Phase.TRAIN, 3))


@pytest.mark.parametrize("position", [None, (Phase.ALIGNMENT, 0), (Phase.TRAIN, 12)])
def test_a_resume_position_round_trips(position: tuple[Phase, int] | None) -> None:
    assert position_of(resume_at(position)) == position


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
