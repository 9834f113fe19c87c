"""Background precomputation of Paillier obfuscators ``r^n mod n^2``.

The costly half of a Paillier encryption or re-randomisation (Paillier 1999, EUROCRYPT) is
``r^n mod n^2`` for a fresh uniform ``r``; it does not depend on the data. A
:class:`RandomnessPool` computes these ahead of time:

1. Keep up to ``size`` values in stock; worker processes compute them in chunks
   (``ProcessPoolExecutor``, spawned so no parent state such as open sockets is forked;
   each worker draws ``r`` from the OS generator through :mod:`secrets`).
2. :meth:`RandomnessPool.take` removes ``k`` values from the stock under a lock, waiting
   (bounded by ``timeout``) for more as they arrive, and tops the stock back up to ``size``
   in the background.
3. A value leaves the stock exactly once, so it is never handed out twice; two independent
   draws collide with probability below ``1/n`` per pair.

``workers=0`` computes inline, in the calling thread, on demand (no background work).
``executor=`` computes the chunks on a party's executor instead (its shared local pool or
its Ray cluster: the pool submits chunks of at most ``chunk_size`` values, and does not close
it).

``mode`` selects how each value is computed (:class:`~vfl.crypto.randomness.Randomness`):
``FULL`` (default, ``r^n`` for uniform ``r``) or ``SHORT_EXPONENT`` (``prod_i b_i^(x_i)``
over many uniform bases with short digits, from a table each worker process builds once over
bases of its own; statistically close to uniform, see :mod:`vfl.crypto.randomness`).
:func:`randomness_source` builds any of them in one line.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from functools import partial
from typing import TYPE_CHECKING, Protocol

import gmpy2

from vfl.crypto.randomness import (
    DEFAULT_WINDOW,
    FullSource,
    OwnerCrtSource,
    OwnerShortExponentSource,
    Randomness,
    ShortExponentSource,
    owner_crt_batch,
    owner_short_exponent_batch,
    short_exponent_batch,
)
from vfl.executor import DEFAULT_TASK_CHUNK, ClosesOnExit, Executor, exit_with_parent

if TYPE_CHECKING:
    from vfl.crypto.paillier import PrivateKey, PublicKey


class RPowNSource(Protocol):
    """Anything that hands out fresh ``r^n mod n^2`` values for :attr:`public_key`."""

    @property
    def public_key(self) -> PublicKey:
        """The key the values belong to."""
        ...

    def take(self, k: int) -> list[int]:
        """Returns ``k`` values never handed out before."""
        ...


def r_pow_n_batch(n: int, count: int) -> list[int]:
    """Returns ``count`` values ``r^n mod n^2`` for fresh uniform ``r`` in ``[1, n)``."""
    nsquare = n * n
    return [int(gmpy2.powmod(secrets.randbelow(n - 1) + 1, n, nsquare)) for _ in range(count)]


class RandomnessPool(ClosesOnExit):
    """A stock of fresh ``r^n mod n^2`` values for one public key, refilled in background.

    Args:
        public_key: the key whose ``n`` the values belong to.
        size: target number of values kept in stock (``>= 1``).
        workers: worker processes; ``None`` means ``os.cpu_count()``, ``0`` means inline.
        timeout: seconds :meth:`take` waits before raising ``TimeoutError``.
        mode: ``Randomness.FULL`` (default), ``SHORT_EXPONENT``, ``OWNER_CRT`` or
            ``OWNER_SHORT_EXPONENT``.
        private_key: the key's private half, required by the OWNER_ modes (the primes go to the
            party's own worker processes, nowhere else).
        executor: the party's executor to compute on (``workers`` is then its size); the
            caller closes it.
        chunk_size: at most this many values per chunk submitted to ``executor``.

    Raises:
        ValueError: if ``size < 1``, ``workers < 0``, ``timeout <= 0``, or an OWNER_ mode lacks
            this key's ``private_key``.
    """

    def __init__(
        self,
        public_key: PublicKey,
        size: int,
        workers: int | None = None,
        *,
        timeout: float = 60.0,
        mode: Randomness = Randomness.FULL,
        private_key: PrivateKey | None = None,
        executor: Executor | None = None,
        chunk_size: int = DEFAULT_TASK_CHUNK,
    ) -> None:
        if executor is not None:
            workers = executor.workers
        if workers is None:
            workers = os.cpu_count() or 1
        if size < 1 or workers < 0 or timeout <= 0:
            raise ValueError(
                f"RandomnessPool needs size >= 1, workers >= 0, timeout > 0; got size {size}, "
                f"workers {workers}, timeout {timeout}"
            )
        self._key, self.size, self.workers, self.timeout = public_key, size, workers, timeout
        self.mode = mode
        self._batch = _batch_job(public_key, mode, private_key)
        self._stock: deque[int] = deque()
        self._ready = threading.Condition()
        self._pending = 0  # values being computed by workers
        self._error: BaseException | None = None
        self._owned: ProcessPoolExecutor | None = None
        self._inflight: set[Future[list[int]]] = set()
        self._executor: Executor | ProcessPoolExecutor | None = executor
        self._chunk = max(1, math.ceil(size / (2 * max(1, workers))))
        if executor is not None:
            self._chunk = min(self._chunk, chunk_size)
        elif workers:
            context = multiprocessing.get_context("spawn")
            self._owned = ProcessPoolExecutor(
                max_workers=workers, mp_context=context, initializer=exit_with_parent
            )
            self._executor = self._owned
        if workers:
            self._refill()

    @property
    def public_key(self) -> PublicKey:
        """The key the values belong to."""
        return self._key

    def __repr__(self) -> str:
        return (
            f"RandomnessPool(n_bits={self._key.n_bits}, size={self.size}, workers={self.workers}, "
            f"mode={self.mode.name})"
        )

    def pending(self) -> int:
        """Returns how many values workers are computing now."""
        with self._ready:
            return self._pending

    def available(self) -> int:
        """Returns how many values are in stock now."""
        with self._ready:
            return len(self._stock)

    def take(self, k: int) -> list[int]:
        """Returns ``k`` fresh ``r^n mod n^2`` values, each handed out only once.

        Blocks until ``k`` values are ready (``k`` may exceed ``size``: values are handed
        over as they arrive). Values already removed when a timeout strikes are discarded.

        Raises:
            ValueError: if ``k < 0``.
            TimeoutError: if they are not ready within ``timeout`` seconds (names the pool).
            RuntimeError: if the pool was closed or a worker failed.
        """
        if k < 0:
            raise ValueError(f"cannot take {k} values")
        if self.workers == 0:
            return self._batch(k)
        deadline, out = time.monotonic() + self.timeout, list[int]()
        while True:
            with self._ready:
                self._raise_if_failed()
                while self._stock and len(out) < k:
                    out.append(self._stock.popleft())
                remaining = deadline - time.monotonic()
            self._refill()
            if len(out) == k:
                return out
            if remaining <= 0:
                raise TimeoutError(
                    f"{self!r} could not supply {k} values within {self.timeout} s "
                    f"({len(out)} ready): add workers, a larger size or a longer timeout"
                )
            with self._ready:
                self._ready.wait_for(lambda: self._error or self._stock, remaining)

    def _raise_if_failed(self) -> None:
        """Re-raises a worker failure (caller holds the lock)."""
        if self._error is not None:
            raise RuntimeError(f"{self!r} failed to compute values") from self._error

    def _refill(self) -> None:
        """Submits chunks until stock plus pending reaches ``size`` (caller must not hold lock).

        At most ``size + chunk`` values are in stock or in flight, so the executor's queue stays
        short; submission happens outside the lock so the executor's result thread, which
        takes the lock in :meth:`_on_done`, never waits on us while we wait on it.
        """
        with self._ready:
            executor = self._executor
            if executor is None:
                raise RuntimeError(f"{self!r} is closed")
            chunks = 0
            while len(self._stock) + self._pending < self.size:
                self._pending += self._chunk
                chunks += 1
        for _ in range(chunks):
            future = executor.submit(self._batch, self._chunk)
            with self._ready:
                self._inflight.add(future)
            future.add_done_callback(self._on_done)

    def _on_done(self, future: Future[list[int]]) -> None:
        """Moves a finished chunk into stock and wakes waiters."""
        with self._ready:
            self._pending -= self._chunk
            self._inflight.discard(future)
            if future.cancelled():
                return
            error = future.exception()
            if error is not None:
                self._error = error
            else:
                self._stock.extend(future.result())
            self._ready.notify_all()

    def close(self) -> None:
        """Stops its own workers (not a party's executor) and drops pending work; :meth:`take`
        fails afterwards."""
        with self._ready:
            owned, self._owned, self._executor = self._owned, None, None
            inflight, self._inflight = list(self._inflight), set()
        for future in inflight:  # queued chunks on a shared executor are not run
            future.cancel()
        if owned is not None:
            owned.shutdown(wait=True, cancel_futures=True)


def _batch_job(
    public_key: PublicKey,
    mode: Randomness,
    private_key: PrivateKey | None,
) -> Callable[[int], list[int]]:
    """Returns a picklable ``count -> values`` job for worker processes."""
    if mode is Randomness.FULL:
        return partial(r_pow_n_batch, public_key.n)
    if mode is Randomness.OWNER_CRT:
        return partial(owner_crt_batch, *_owner(public_key, private_key).primes)
    if mode is Randomness.OWNER_SHORT_EXPONENT:
        primes = _owner(public_key, private_key).primes
        return partial(owner_short_exponent_batch, *primes, DEFAULT_WINDOW)
    return partial(short_exponent_batch, public_key.n, DEFAULT_WINDOW)


def _owner(public_key: PublicKey, private_key: PrivateKey | None) -> PrivateKey:
    """Returns ``private_key`` if it is ``public_key``'s private half (else ValueError)."""
    if private_key is None or private_key.public_key != public_key:
        raise ValueError(
            "Randomness.OWNER_CRT and OWNER_SHORT_EXPONENT need the private key of this public "
            "key: only the key's owner can use them (use FULL or SHORT_EXPONENT for another "
            "party's key)"
        )
    return private_key


def randomness_source(
    public_key: PublicKey,
    mode: Randomness = Randomness.FULL,
    *,
    pool_size: int = 0,
    workers: int | None = None,
    private_key: PrivateKey | None = None,
    executor: Executor | None = None,
    chunk_size: int = DEFAULT_TASK_CHUNK,
) -> RPowNSource:
    """Returns an :class:`RPowNSource` for ``public_key`` drawing obfuscators by ``mode``.

    ``pool_size=0`` computes inline on demand (:class:`FullSource`,
    :class:`ShortExponentSource` or :class:`OwnerCrtSource`); ``pool_size > 0`` returns a
    :class:`RandomnessPool` of that size refilled by ``workers`` background processes
    (close it when done), or by ``executor``'s workers, ``chunk_size`` values a task.
    ``private_key`` is needed by the OWNER_ modes only.

    Raises:
        ValueError: if ``pool_size < 0``, the pool parameters are out of range, or an OWNER_ mode
            lacks this key's private key.
    """
    if pool_size < 0:
        raise ValueError(f"pool_size must be >= 0, got {pool_size}")
    if pool_size:
        return RandomnessPool(
            public_key,
            pool_size,
            workers,
            mode=mode,
            private_key=private_key,
            executor=executor,
            chunk_size=chunk_size,
        )
    if mode is Randomness.FULL:
        return FullSource(public_key)
    if mode is Randomness.OWNER_CRT:
        return OwnerCrtSource(_owner(public_key, private_key))
    if mode is Randomness.OWNER_SHORT_EXPONENT:
        return OwnerShortExponentSource(_owner(public_key, private_key))
    return ShortExponentSource(public_key)
