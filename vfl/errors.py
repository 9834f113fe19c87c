"""Named errors. Every user mistake surfaces as one of these, never as a bare traceback.

The CLI catches :class:`VflError` and prints its message; the message alone must tell the user
what is wrong, where (file, key, column, party) and how to fix it.
"""

from __future__ import annotations

from collections.abc import Mapping


class VflError(Exception):
    """Base class for errors caused by input or environment, reported to the user verbatim."""


class ConfigError(VflError, ValueError):
    """A config file is unreadable, has an unknown key, a wrong type or a missing value.

    The message names the file, the dotted key and the fix.
    """

    def __init__(self, file: str, key: str, problem: str, fix: str) -> None:
        self.file, self.key, self.problem, self.fix = file, key, problem, fix
        super().__init__(f"{file}: key '{key}': {problem}. Fix: {fix}")


class DataError(VflError, ValueError):
    """A data file is missing, unreadable, lacks a column or holds a bad value.

    The message names the file, the column (and row or id where known) and the fix.
    """

    def __init__(self, file: str, column: str | None, problem: str, fix: str) -> None:
        self.file, self.column, self.problem, self.fix = file, column, problem, fix
        where = f"{file}: column '{column}'" if column else file
        super().__init__(f"{where}: {problem}. Fix: {fix}")


class ProtocolError(VflError):
    """A message broke the protocol: wrong type, step, sequence number, shape or job id."""


class ParameterMismatch(ProtocolError):
    """The two parties' agreed parameters differ; the message names each field on both sides.

    Fatal: the job stops on both sides.
    """


class UnknownCipherSuite(VflError, ValueError):
    """A cipher-suite name that no suite of :data:`vfl.protocol.suites.SUITES` has; the
    message lists the known ones (a job plan reports it as ``ConfigError`` on ``train.cipher``).
    """


class ChannelTimeout(VflError, TimeoutError):
    """The other party did not answer within the timeout."""


class FrameError(ProtocolError):
    """A relay frame or request is malformed: bad length, JSON, field or name."""


class TransportError(VflError):
    """The transport cannot reach or is refused by the coordinator; the message names the fix."""


class MalformedCiphertext(ProtocolError, ValueError):
    """A serialised ciphertext is not a valid residue of its key: 0, ``>= n^2`` or not coprime
    to ``n``. The message names the position and the key; the sender is faulty or hostile."""


class StorageError(VflError, OSError):
    """A file or directory could not be written (disk full, no permission, read-only, a file
    in the way). The message names the path and the fix; the previous file is left intact.
    """

    def __init__(self, file: str, problem: str, fix: str) -> None:
        self.file, self.problem, self.fix = file, problem, fix
        super().__init__(f"{file}: {problem}. Fix: {fix}")


class CheckpointError(VflError):
    """A checkpoint is corrupted, of another job or party, of a newer format, or the two
    parties' checkpoints cannot be reconciled. The message names the file and the fix.
    """


class EnvelopeError(ProtocolError):
    """A sealed E-P envelope is for another job, direction or phase, or is malformed."""


class ReplayError(EnvelopeError):
    """A sealed envelope's sequence number was already received: a replay or duplicate."""


class ReorderError(EnvelopeError):
    """A sealed envelope's sequence number skips ahead: reordered or dropped in transit."""


class TamperError(ProtocolError):
    """A relayed envelope failed authentication: altered, or not sealed by the pinned peer."""


class PeerLost(ChannelTimeout):
    """The other party stopped sending heartbeats (or reported a failure); names the party."""


class PlaintextRefused(ParameterMismatch):
    """A party was asked to run the plaintext protocol without enabling it in its own config.

    Fatal, like any parameter mismatch: the message names the party and the config key.
    """


class ShardError(VflError):
    """A model shard is missing, corrupted, of another job, or loaded without (or with the
    wrong) partner shard. The message names the file and the fix."""


class Interrupted(BaseException):
    """The process was asked to stop (SIGINT or SIGTERM) and stopped cleanly.

    Like :class:`KeyboardInterrupt` it is no :class:`VflError` (nothing was wrong with the
    input) and passes ``except Exception``; unlike it, the command-line framework does not
    turn it into "Aborted!". The message says what was kept and how to resume,
    and the CLI exits with ``128 + signum`` (130 for SIGINT, 143 for SIGTERM).
    """

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.signum = signum

    def again(self, message: str) -> Interrupted:
        """The same stop, with a message that says more (what was kept, how to resume)."""
        return Interrupted(message, self.signum)


class SecurityFloorError(ParameterMismatch):
    """A job plan asks for less security than a party's own config accepts: a Paillier key
    below its ``[party] min_key_bits``, or short-exponent re-randomisation it does not allow.

    Fatal, like any parameter mismatch: the message names the party, the plan key, the party
    config key and the fix.
    """


def field_differences(
    mine: Mapping[str, object], theirs: Mapping[str, object], *, me: str, peer: str
) -> list[str]:
    """``"key: <me> has <a>, <peer> has <b>"`` for every key whose values differ.

    Keys are taken from both mappings, in sorted order; a key one side lacks shows as
    ``<missing>``. Values are shown with ``repr``, so ``'x25519'`` and ``2048`` read as sent.
    """
    lines = []
    for key in sorted(set(mine) | set(theirs)):
        a, b = mine.get(key, _MISSING), theirs.get(key, _MISSING)
        if a != b:
            lines.append(f"{key}: {me} has {_shown(a)}, {peer} has {_shown(b)}")
    return lines


_MISSING = object()


def _shown(value: object) -> str:
    return "<missing>" if value is _MISSING else repr(value)


class ExecutorUnavailable(VflError, RuntimeError):
    """The configured ``[executor]`` cannot be used: the Ray extra is missing or the cluster
    cannot be reached. The message names the party, the address and the fix."""


class TaskLost(VflError, RuntimeError):
    """A task's worker died more often than the executor re-runs it; names the party and the
    task, so a lost worker never yields a silent wrong result."""
