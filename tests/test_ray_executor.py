"""The Ray executor on a real local Ray cluster (loopback, started and stopped by this module).

PSI and two encrypted epochs (512-bit keys, tiny data) on Ray give the same alignment and the
same losses as on the local process pool; a Ray worker killed by pid mid-batch is re-run or,
with no retries left, named in a :class:`~vfl.errors.TaskLost`.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import run_concurrently, tiny_training_inputs
from tests.secure_helpers import build_pair, keys, settings
from tests.timing import scaled
from vfl.config.party import IdRule, Role
from vfl.errors import ExecutorUnavailable, TaskLost
from vfl.executor import (
    Executor,
    ExecutorKind,
    ExecutorSpec,
    LocalProcessExecutor,
    PartyExecutor,
    open_executor,
)
from vfl.protocol.kernels import decrypt_many
from vfl.psi.protocol import PsiOptions, PsiResult, run_psi
from vfl.transport.channel import InMemoryChannel

os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # one node on loopback, before import
ray = pytest.importorskip("ray", reason="the Ray extra is not installed: pip install -e '.[ray]'")
RAY = ExecutorSpec(kind=ExecutorKind.RAY, address="local", num_cpus=2, chunk_size=8)


class Counting:
    """A real executor that also records the name of every function submitted to it."""

    def __init__(self, inner: Executor) -> None:
        self.inner, self.names = inner, list[str]()
        self._lock = threading.Lock()

    @property
    def workers(self) -> int:
        return self.inner.workers

    def submit(self, fn: Callable[..., Any], /, *args: Any) -> Future[Any]:
        with self._lock:
            self.names.append(getattr(getattr(fn, "func", fn), "__name__", "?"))
        return self.inner.submit(fn, *args)

    def map(self, fn: Callable[[Any], Any], items: Any) -> list[Any]:
        with self._lock:
            self.names.append(getattr(getattr(fn, "func", fn), "__name__", "?"))
        return self.inner.map(fn, items)

    def close(self) -> None:
        """The module's cluster outlives each test."""


@pytest.fixture(scope="module")
def cluster() -> Iterator[Executor]:
    """A local Ray cluster on loopback with 2 CPUs, started here and stopped after."""
    executor = open_executor(RAY, owner="shop")
    assert ray.is_initialized()
    assert {node["NodeManagerAddress"] for node in ray.nodes()} == {"127.0.0.1"}
    yield executor
    executor.close()
    assert not ray.is_initialized()


def _psi(executors: tuple[Executor, Executor]) -> tuple[PsiResult, PsiResult]:
    """E and P (threads) intersect 300 and 250 ids, 150 shared, on their own executors."""
    e_ids = [f"user{i:04d}" for i in range(300)]
    p_ids = [f"user{i:04d}" for i in range(150, 400)]
    ch_e, ch_p = InMemoryChannel.pair("E", "P")
    out: dict[str, PsiResult] = {}

    def side(name: str, link: InMemoryChannel, ids: list[str], role: Role, ex: Executor) -> None:
        options = PsiOptions(chunk_size=32, timeout=scaled(30), executor=ex)
        out[name] = run_psi(link, ids, job_id="ray", role=role, rule=IdRule(), party=name,
                            options=options)  # fmt: skip

    run_concurrently(side, [("E", ch_e, e_ids, Role.ACTIVE, executors[0]),
                            ("P", ch_p, p_ids, Role.PASSIVE, executors[1])])  # fmt: skip
    return out["E"], out["P"]


def _by_id(result: PsiResult) -> list[tuple[str, int]]:
    """The alignment in id order (PSI's own order follows each run's fresh scalars)."""
    return sorted(zip(result.ids, result.rows.tolist(), strict=True))


def test_psi_on_ray_gives_the_local_pools_alignment(cluster: Executor) -> None:
    # Prepare
    on_ray = (Counting(cluster), Counting(cluster))
    # Execute
    with LocalProcessExecutor(2) as pool:
        local = _psi((pool, pool))
    ray_e, ray_p = _psi(on_ray)
    # Assert: E and P agree on Ray, with the same users and rows as with the local pool
    assert ray_e.alignment_digest == ray_p.alignment_digest and ray_e.n_common == 150
    assert _by_id(ray_e) == _by_id(local[0]) and _by_id(ray_p) == _by_id(local[1])
    for side in on_ray:
        assert {"hash_and_blind", "reblind"} <= set(side.names)


def _two_epochs(executors: tuple[PartyExecutor, PartyExecutor]) -> list[float]:
    pair = build_pair(
        tiny_training_inputs(), e_settings=settings(precompute=True), executors=executors
    )
    batches = pair.batches(4, users_per_step=16)  # 30 aligned users: 2 steps an epoch
    pair.start()
    try:
        return [pair.model.train_step(step, batch) for step, batch in enumerate(batches)]
    finally:
        pair.stop()


def test_two_encrypted_epochs_on_ray_have_the_local_pools_losses(cluster: Executor) -> None:
    # Prepare
    on_ray = (Counting(cluster), Counting(cluster))
    # Execute
    with LocalProcessExecutor(2) as pool:
        local = _two_epochs((PartyExecutor(pool, 8), PartyExecutor(pool, 8)))
    got = _two_epochs((PartyExecutor(on_ray[0], 8), PartyExecutor(on_ray[1], 8)))
    # Assert: the same losses to the bit; randomness and decryptions ran as Ray tasks
    assert got == local and len(got) == 4
    assert {"owner_crt_batch", "r_pow_n_batch", "decrypt_many"} <= set(on_ray[0].names)
    assert {"owner_crt_batch", "r_pow_n_batch"} <= set(on_ray[1].names)


def _pid_then_decrypt(marker: str, private_key: Any, ciphertexts: list[int]) -> list[int]:
    """Write this worker's pid to ``marker`` (first run only), wait to be killed, decrypt."""
    path = Path(marker)
    if not path.exists():
        path.write_text(str(os.getpid()))
        threading.Event().wait(scaled(60))  # the test kills this process long before
    return decrypt_many(private_key, ciphertexts)


def _killed_mid_task(executor: Executor, marker: Path) -> tuple[Future[list[int]], list[int]]:
    """Submit a real decryption whose worker the test kills by pid once it has started."""
    key = keys("E")
    plain = list(range(5))
    ciphertexts = [key.public_key.raw_encrypt(m) for m in plain]
    future = executor.submit(_pid_then_decrypt, str(marker), key.private_key, ciphertexts)
    deadline = threading.Event()
    for _ in range(int(scaled(60) * 20)):
        if marker.exists() and marker.read_text():
            break
        deadline.wait(0.05)
    os.kill(int(marker.read_text()), signal.SIGKILL)
    return future, plain


def test_a_killed_worker_is_rerun_for_the_right_result(cluster: Executor, tmp_path: Path) -> None:
    future, plain = _killed_mid_task(cluster, tmp_path / "pid")
    assert future.result(timeout=scaled(60)) == plain


def test_a_killed_worker_without_retries_is_named(cluster: Executor, tmp_path: Path) -> None:
    spec = ExecutorSpec(kind=ExecutorKind.RAY, num_cpus=2, max_retries=0)
    no_retry = open_executor(spec, owner="payments")  # joins the module's cluster
    future, _ = _killed_mid_task(no_retry, tmp_path / "pid")
    with pytest.raises(TaskLost, match=r"party 'payments'.*_pid_then_decrypt.*0 retries"):
        future.result(timeout=scaled(60))
    no_retry.close()
    assert ray.is_initialized()  # joined, not owned: the module's cluster stays up


def test_missing_ray_extra_names_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(__import__("sys").modules, "vfl.ray_executor", None)
    with pytest.raises(ExecutorUnavailable, match=r"party 'shop'.*pip install -e '\.\[ray\]'"):
        open_executor(RAY, owner="shop")


def test_ray_config_section_is_validated() -> None:
    from vfl.config.party import ExecutorSection

    remote = ExecutorSection(kind="ray", address="ray://10.0.0.5:10001", num_cpus=64).spec()
    assert remote == ExecutorSpec(ExecutorKind.RAY, "ray://10.0.0.5:10001", 64)
    with pytest.raises(ValueError, match="not a Ray address"):
        ExecutorSection(kind="ray", address="10.0.0.5")
