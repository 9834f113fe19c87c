"""The model export, step by step and interrupted at each step, in process: the shard files
come from the ``export`` 0 checkpoint, so a redone export writes byte-identical shards whose
manifests name each other, and a party that finished re-writes a lost shard on its own.

In-memory byte channels, real checkpoint stores and files; the
kills of real processes inside the export are in ``tests/test_faults.py``.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from tests.helpers import run_concurrently
from vfl.checkpoint import CheckpointStore
from vfl.config.job import load_job_config
from vfl.config.plan import JobPlan
from vfl.data.synthetic_writer import generate_synthetic
from vfl.errors import ChannelTimeout, ShardError
from vfl.party.export import Shard, ShardIdentity, load_pair
from vfl.party.exporting import (
    EXPORTED,
    ShardExporter,
    confirm_from_manifest,
    is_exported,
    restore_shard,
    shard_blobs,
    shard_files,
)
from vfl.party.inference import exchange_summaries
from vfl.phases import Phase
from vfl.protocol.messages import ErrorRes, ExportConfirmation, ExportSummary, InferenceSummary
from vfl.protocol.recorder import RecordingChannel
from vfl.protocol.serde import encode_control
from vfl.transport.channel import InMemoryChannel

FILES = {
    "active": {"head.pt": b"head weights", "share.json": b'{"u": [1, 2]}'},
    "passive": {"bottom.pt": b"bottom weights", "share.json": b'{"v": [3, 4]}'},
}


class DropConfirmation:
    """E's channel end that loses E's last message (the confirmation), as a kill of P or a
    restart of C between E's send and P's read does."""

    def __init__(self, inner: InMemoryChannel) -> None:
        self.inner, self.peer, self.sends = inner, inner.peer, 0

    def send(self, data: bytes) -> None:
        self.sends += 1
        if self.sends < 2:
            self.inner.send(data)

    def recv(self, timeout: float) -> bytes:
        return self.inner.recv(timeout)


@pytest.fixture(scope="module")
def plan(tmp_path_factory: pytest.TempPathFactory) -> JobPlan:
    data = tmp_path_factory.mktemp("data")
    generate_synthetic(data, users=30, items=30, overlap=0.8, seed=1)
    return JobPlan.of(load_job_config(data / "job.toml"))


def _side(root: Path, role: str, plan: JobPlan) -> tuple[CheckpointStore, ShardIdentity]:
    """A party's store holding its ``export`` 0 checkpoint (trained, not yet exported)."""
    party, peer = ("shop", "payments") if role == "active" else ("payments", "shop")
    store = CheckpointStore(root / role, job_id=plan.job.name, party=party)
    store.save(Phase.EXPORT, 0, blobs=shard_blobs(FILES[role], peer), meta={"steps_done": 3})
    return store, ShardIdentity(plan.job.name, plan.fingerprint(), party, role, peer)


def _exporters(
    root: Path, plan: JobPlan, *, lose_confirmation: bool = False, record_p: bool = False
) -> tuple[ShardExporter, ShardExporter]:
    e_ch, p_end = InMemoryChannel.pair("shop", "payments")
    e_store, e_id = _side(root, "active", plan)
    p_store, p_id = _side(root, "passive", plan)
    e_channel = DropConfirmation(e_ch) if lose_confirmation else e_ch
    p_ch = RecordingChannel(p_end) if record_p else p_end
    return (
        ShardExporter(e_channel, root / "active" / "model", e_id, plan, 2.0, e_store),
        ShardExporter(p_ch, root / "passive" / "model", p_id, plan, 2.0, p_store),
    )


def _export(e: ShardExporter, p: ShardExporter) -> list[BaseException]:
    """Both parties' export steps 1-4 at once; the errors each side raised."""
    errors: list[BaseException] = []

    def side(x: ShardExporter) -> None:
        try:
            assert x.store is not None
            x.exchange(shard_files(x.store.load(Phase.EXPORT, 0), x.identity.peer))
        except Exception as exc:  # collected for the test's assertions
            errors.append(exc)

    run_concurrently(side, [(e,), (p,)], timeout=10)
    return errors


def _shard_bytes(root: Path) -> dict[str, bytes]:
    return {
        f"{r}/{f.name}": f.read_bytes()
        for r in ("active", "passive")
        for f in sorted((root / r / "model").iterdir())
    }


def test_an_export_writes_two_shards_that_name_each_other_and_marks_both_done(
    tmp_path: Path, plan: JobPlan
) -> None:
    # Execute
    e, p = _exporters(tmp_path, plan)
    errors = _export(e, p)
    # Assert
    assert errors == []
    active, passive = load_pair(e.out, p.out)
    assert active.partner == passive.digest and passive.partner == active.digest
    assert (e.out / "head.pt").read_bytes() == FILES["active"]["head.pt"]
    assert e.store is not None and p.store is not None
    assert is_exported(e.store) and is_exported(p.store)
    assert p.store.load(Phase.EXPORT, EXPORTED).meta["partner"] == active.digest


def test_a_lost_confirmation_leaves_p_unfinished_and_a_redone_export_is_byte_identical(
    tmp_path: Path, plan: JobPlan
) -> None:
    # Prepare: the uninterrupted export's files
    e, p = _exporters(tmp_path / "reference", plan)
    assert _export(e, p) == []
    want = _shard_bytes(tmp_path / "reference")
    # Execute: E's confirmation is lost; then both redo the export from export 0
    e, p = _exporters(tmp_path / "run", plan, lose_confirmation=True)
    errors = _export(e, p)
    assert e.store is not None and p.store is not None
    done_after_loss = (is_exported(e.store), is_exported(p.store))
    p.store.discard_after((Phase.EXPORT, 0))  # both resume at export 0 (agree_resume)
    e.store.discard_after((Phase.EXPORT, 0))
    e2, p2 = _exporters(tmp_path / "run", plan)
    again = _export(e2, p2)
    # Assert: P timed out unconfirmed (E had finished); the redone export equals the reference
    assert [type(x) for x in errors] == [ChannelTimeout]
    assert done_after_loss == (True, False)
    assert again == []
    assert _shard_bytes(tmp_path / "run") == want


def test_p_finishes_on_its_manifest_only_if_it_verifies(tmp_path: Path, plan: JobPlan) -> None:
    # Prepare: P lost the confirmation; E finished
    e, p = _exporters(tmp_path, plan, lose_confirmation=True)
    _export(e, p)
    assert p.store is not None and not is_exported(p.store)
    # Execute
    confirm_from_manifest(p.store, p.out, p.identity)
    # Assert: P is done, with E's digest as partner
    active, _ = load_pair(e.out, p.out)
    assert is_exported(p.store)
    assert p.store.load(Phase.EXPORT, EXPORTED).meta["partner"] == active.digest
    # and without a manifest P refuses, naming the file and the fix
    p.store.discard_after((Phase.EXPORT, 0))
    (p.out / "manifest.json").unlink()
    with pytest.raises(ShardError, match=r"manifest\.json.*Fix: restart both"):
        confirm_from_manifest(p.store, p.out, p.identity)
    assert not is_exported(p.store)


def test_a_finished_party_rewrites_a_deleted_or_changed_shard_from_its_checkpoints(
    tmp_path: Path, plan: JobPlan
) -> None:
    # Prepare
    e, p = _exporters(tmp_path, plan)
    assert _export(e, p) == []
    want = _shard_bytes(tmp_path)
    assert p.store is not None and e.store is not None
    # Execute: P's shard directory lost, one of E's files altered
    for f in p.out.iterdir():
        f.unlink()
    (e.out / "head.pt").write_bytes(b"tampered")
    rewritten = (
        restore_shard(p.store, p.out, p.identity),
        restore_shard(e.store, e.out, e.identity),
        restore_shard(e.store, e.out, e.identity),  # intact now: nothing to write
    )
    # Assert
    assert rewritten == (True, True, False)
    assert _shard_bytes(tmp_path) == want
    load_pair(e.out, p.out)


def test_a_confirmation_naming_another_pair_is_refused(tmp_path: Path, plan: JobPlan) -> None:
    # Prepare: a peer whose confirmation names a partner digest that is not P's shard
    e, p = _exporters(tmp_path, plan)
    assert p.store is not None
    summary = ExportSummary(job=plan.job.name, plan=plan.fingerprint(), party="shop", shard="aa")

    def confirm_another_pair() -> None:
        e.channel.send(encode_control(summary))
        e.channel.recv(2.0)  # P's summary
        e.channel.send(encode_control(ExportConfirmation(exported="aa", partner="not-p")))

    thread = threading.Thread(target=confirm_another_pair)
    thread.start()
    # Execute / Assert
    with pytest.raises(ShardError, match="confirmed shards aa"):
        p.exchange(shard_files(p.store.load(Phase.EXPORT, 0), p.identity.peer))
    thread.join(timeout=5)
    assert not is_exported(p.store)


def test_the_recorder_sees_the_export_and_inference_summaries_typed(
    tmp_path: Path, plan: JobPlan
) -> None:
    # Prepare: P's side recorded, as the protocol's messages are
    e, p = _exporters(tmp_path, plan, record_p=True)
    assert isinstance(p.channel, RecordingChannel)
    # Execute: the export, then the shard check of an inference session over the two shards
    assert _export(e, p) == []
    active, passive = load_pair(e.out, p.out)
    e_ch, p_end = InMemoryChannel.pair("shop", "payments")
    p_ch = RecordingChannel(p_end)
    run_concurrently(
        lambda ch, shard, act: exchange_summaries(ch, shard, active=act, peer=ch.peer, timeout=5),
        [(e_ch, active, True), (p_ch, passive, False)],
        timeout=10,
    )
    # Assert: P received exactly E's summary and E's confirmation, then E's shard summary
    assert p.channel.undecodable == [] and p_ch.undecodable == []
    summary, confirmation = p.channel.received
    assert summary == ExportSummary(
        job=plan.job.name, plan=plan.fingerprint(), party="shop", shard=active.digest
    )
    assert confirmation == ExportConfirmation(exported=active.digest, partner=passive.digest)
    assert p_ch.received == [active.summary()]
    assert isinstance(p_ch.received[0], InferenceSummary)
    assert p_ch.received[0].partner == passive.digest


def test_p_refuses_a_shard_that_is_not_its_partner_with_a_typed_error(
    tmp_path: Path, plan: JobPlan
) -> None:
    # Prepare: two exports of two jobs; E serves the first one's shard, P the second's
    other = plan.model_copy(update={"job": plan.job.model_copy(update={"name": "other-job"})})
    for run, of in (("one", plan), ("two", other)):
        e, p = _exporters(tmp_path / run, of)
        assert _export(e, p) == []
    active, _ = load_pair(tmp_path / "one/active/model", tmp_path / "one/passive/model")
    _, passive = load_pair(tmp_path / "two/active/model", tmp_path / "two/passive/model")
    e_end, p_ch = InMemoryChannel.pair("shop", "payments")
    e_ch = RecordingChannel(e_end)
    errors: dict[str, BaseException] = {}

    def side(k: str, ch: InMemoryChannel | RecordingChannel, shard: Shard, act: bool) -> None:
        try:
            exchange_summaries(ch, shard, active=act, peer=ch.peer, timeout=5)
        except ShardError as exc:
            errors[k] = exc

    # Execute
    run_concurrently(side, [("e", e_ch, active, True), ("p", p_ch, passive, False)], timeout=10)
    # Assert: both stop; E is told why, through a typed ErrorRes
    assert "serves a shard of job 'synthetic" in str(errors["p"])
    assert "payments refused this shard" in str(errors["e"])
    (refusal,) = e_ch.received
    assert isinstance(refusal, ErrorRes) and refusal.reason == str(errors["p"])
