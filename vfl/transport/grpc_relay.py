"""The coordinator's relay: a mutual-TLS gRPC service that moves opaque frames between parties.

Two unary RPCs on service ``vfl.Relay``, carried as raw bytes (no protobuf codegen; the payload is
the framing of :mod:`vfl.transport.framing`):

1. ``Send(frame)``: the caller, identified by the common name of its verified client certificate,
   must be in ``allowed_parties`` and must equal the header's ``from``; the frame goes into the
   bounded mailbox ``(job, to, from)``. A full mailbox answers RESOURCE_EXHAUSTED (back-pressure);
   a frame the same sender session already delivered is acknowledged and dropped (safe re-send).
2. ``Recv(request)``: long-polls the caller's own mailbox for frames from the named sender, for at
   most ``min(wait_s, max_poll_s)`` seconds, and answers one frame or empty bytes.
3. ``Join(request)``: JSON ``{job}`` (empty = whatever this coordinator serves); answers JSON
   ``{job, parties, plan}``, ``plan`` being the job plan text the coordinator hands out (or
   null). The caller's certificate has been checked against the job's parties by then.
4. ``Heartbeat(status)``: a :class:`~vfl.transport.board.Heartbeat`; answers every party's
   age and state from the :class:`~vfl.transport.board.JobBoard`.
5. ``Status(empty)``: the board for an operator's ``vfl status`` (any admitted party's
   certificate), without counting as a join or a heartbeat of the caller; it adds the
   caller's own published progress and the others' epoch number
   (:meth:`~vfl.transport.board.JobBoard.encode_view`).

Every RPC names the job; a frame or request for any job but the one served is refused.

With ``active`` (E, the party every passive party works with) the relay keeps the passive
parties apart: a passive party's join, heartbeat and status replies name only E and itself,
and a frame it sends to, or a poll it makes for, any party but E is refused exactly as one
for a name outside the job, so a partner learns nothing of another partner from the relay,
not even that it exists. E sees every party. Without ``active`` (two parties) every party
sees the other.

The relay reads headers only; bodies are never decoded. What the coordinator learns is exactly
:meth:`RelayServer.stats`: bytes per (sender, recipient) pair, plus timing. Mailboxes live in
memory: frames not yet received are lost if the coordinator restarts, and the parties resume
from their protocol checkpoints (clients simply retry until the relay is back). Which parties
finished survives a restart when the board has a state file (``state_file``).
"""

from __future__ import annotations

import collections
import json
import os
import struct
import threading
import time
from concurrent import futures
from pathlib import Path
from typing import Any, BinaryIO

import grpc

from vfl.errors import FrameError, TransportError
from vfl.storage import open_private_append, storage_error
from vfl.transport.admission import (
    HEARTBEAT_KEY,
    INSTANCE_KEY,
    Admission,
    alive_window_s,
    decode_liveness,
)
from vfl.transport.board import Heartbeat, JobBoard, PartyState
from vfl.transport.framing import (
    FrameHeader,
    decode_recv_request,
    peek_header,
)

SERVICE = "vfl.Relay"
SEND_METHOD = f"/{SERVICE}/Send"
RECV_METHOD = f"/{SERVICE}/Recv"
JOIN_METHOD = f"/{SERVICE}/Join"
HEARTBEAT_METHOD = f"/{SERVICE}/Heartbeat"
STATUS_METHOD = f"/{SERVICE}/Status"
# One frame carries one protocol chunk; 64 MiB bounds a chunk with room for the header.
MAX_MESSAGE_BYTES = 64 * 1024 * 1024 + 64 * 1024
GRPC_OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
]

_Box = tuple[str, str, str]  # (job, recipient, sender)
_CAPTURE_LEN = struct.Struct(">I")


def _complete_length(data: bytes) -> int:
    """The length of the longest prefix of ``data`` made of whole capture records."""
    at = 0
    while at + _CAPTURE_LEN.size <= len(data):
        (n,) = _CAPTURE_LEN.unpack_from(data, at)
        if at + _CAPTURE_LEN.size + n > len(data):
            break
        at += _CAPTURE_LEN.size + n
    return at


def open_capture(path: Path) -> BinaryIO:
    """Open the relay capture to append to, mode 0600: each coordinator start adds its frames
    after those of earlier starts. A record cut short by a kill is dropped first, so the
    file stays a sequence of whole ``u32 length || frame`` records.

    Raises:
        StorageError: the file cannot be created, read or written.
    """
    handle = open_private_append(path)
    try:
        size = os.fstat(handle.fileno()).st_size
        whole = _complete_length(path.read_bytes()) if size else 0
        if whole != size:
            handle.truncate(whole)
    except OSError as exc:
        handle.close()
        raise storage_error(path, exc) from exc
    return handle


def read_capture(data: bytes) -> list[bytes]:
    """Split a relay capture (``u32 length || frame`` records) back into frames."""
    frames, at = [], 0
    while at + _CAPTURE_LEN.size <= len(data):
        (n,) = _CAPTURE_LEN.unpack_from(data, at)
        frames.append(data[at + _CAPTURE_LEN.size : at + _CAPTURE_LEN.size + n])
        at += _CAPTURE_LEN.size + n
    return frames


class _Mailboxes:
    """Bounded FIFO per (job, recipient, sender), with duplicate-drop and byte counters."""

    def __init__(self, limit_bytes: int, capture: BinaryIO | None = None) -> None:
        self._limit = limit_bytes
        self._capture = capture
        self._cond = threading.Condition()
        self._boxes: dict[_Box, collections.deque[bytes]] = collections.defaultdict(
            collections.deque
        )
        self._used: dict[_Box, int] = collections.defaultdict(int)
        self._last_seq: dict[tuple[str, str, str, str], int] = {}
        self._bytes: dict[tuple[str, str], int] = collections.defaultdict(int)
        self._closed = False

    def put(self, header: FrameHeader, frame: bytes) -> bool:
        """Queue ``frame``; False when the mailbox is full. Duplicates are accepted and dropped.

        An empty mailbox always takes one frame, so a chunk above the limit still moves.
        """
        box = (header.job, header.recipient, header.sender)
        session = (header.job, header.sender, header.recipient, header.session)
        with self._cond:
            if self._last_seq.get(session, -1) >= header.seq:
                return True
            if self._used[box] + len(frame) > self._limit and self._boxes[box]:
                return False
            self._boxes[box].append(frame)
            self._used[box] += len(frame)
            self._last_seq[session] = header.seq
            self._bytes[(header.sender, header.recipient)] += len(frame)
            if self._capture is not None:
                self._capture.write(_CAPTURE_LEN.pack(len(frame)) + frame)
                self._capture.flush()
            self._cond.notify_all()
        return True

    def take(self, box: _Box, wait_s: float) -> bytes:
        """Pop the oldest frame of ``box``, waiting up to ``wait_s``; empty bytes if none."""
        deadline = time.monotonic() + wait_s
        with self._cond:
            while not self._boxes[box] and not self._closed:
                left = deadline - time.monotonic()
                if left <= 0:
                    return b""
                self._cond.wait(left)
            if not self._boxes[box]:
                return b""
            frame = self._boxes[box].popleft()
            self._used[box] -= len(frame)
            return frame

    def close(self) -> None:
        """Wake every waiting long-poll so the server can stop promptly."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def byte_counts(self) -> dict[tuple[str, str], int]:
        """Frame bytes accepted per (sender, recipient)."""
        with self._cond:
            return dict(self._bytes)


class RelayServer:
    """Mutual-TLS relay between the parties of a job; see the module docstring for the RPCs."""

    def __init__(
        self,
        bind: str = "127.0.0.1:0",
        *,
        ca_pem: bytes,
        cert_pem: bytes,
        key_pem: bytes,
        allowed_parties: set[str],
        job_id: str,
        plan: str | None = None,
        mailbox_limit_bytes: int = 256 * 1024 * 1024,
        max_poll_s: float = 2.0,
        max_workers: int = 16,
        capture: BinaryIO | None = None,
        state_file: Path | None = None,
        plan_fingerprint: str = "",
        active: str | None = None,
    ) -> None:
        """``capture``, if given, receives a copy of every relayed frame (for audits/tests).
        ``active``, if given, is the one party the others may reach (see the module docstring).

        ``state_file``, if given, keeps the board's finished parties across restarts for this
        job and ``plan_fingerprint`` (see :class:`~vfl.transport.board.JobBoard`).

        Raises:
            CheckpointError: ``state_file`` is unreadable, corrupted or of a newer format.
        """
        if mailbox_limit_bytes <= 0 or max_poll_s <= 0:
            raise ValueError("mailbox_limit_bytes and max_poll_s must be positive")
        if active is not None and active not in allowed_parties:
            raise ValueError(f"active party '{active}' is not one of {sorted(allowed_parties)}")
        self._active = active
        self._bind = bind
        self.job_id, self._plan = job_id, plan
        self.board = JobBoard(
            job_id, allowed_parties, state_file=state_file, plan_fingerprint=plan_fingerprint
        )
        self._creds = grpc.ssl_server_credentials(
            [(key_pem, cert_pem)], root_certificates=ca_pem, require_client_auth=True
        )
        self._allowed = frozenset(allowed_parties)
        self._admission = Admission(job_id)
        self._max_poll_s = max_poll_s
        self._max_workers = max_workers
        self._boxes = _Mailboxes(mailbox_limit_bytes, capture)
        self._server: Any = None

    def start(self) -> int:
        """Bind and serve; returns the bound port (useful with port 0).

        Raises:
            TransportError: the address is taken or not local.
        """
        if self._server is not None:
            raise RuntimeError("relay server already started")
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=self._max_workers, thread_name_prefix="relay"),
            # no SO_REUSEPORT: a second process must not share the coordinator's port
            options=[*GRPC_OPTIONS, ("grpc.so_reuseport", 0)],
        )
        handler = grpc.method_handlers_generic_handler(
            SERVICE,
            {
                "Send": grpc.unary_unary_rpc_method_handler(self._send),
                "Recv": grpc.unary_unary_rpc_method_handler(self._recv),
                "Join": grpc.unary_unary_rpc_method_handler(self._join),
                "Heartbeat": grpc.unary_unary_rpc_method_handler(self._heartbeat),
                "Status": grpc.unary_unary_rpc_method_handler(self._status),
            },
        )
        server.add_generic_rpc_handlers((handler,))
        try:
            port = int(server.add_secure_port(self._bind, self._creds))
        except RuntimeError:  # grpc's only signal for a failed bind
            port = 0
        if port == 0:
            raise TransportError(
                f"coordinator cannot listen on {self._bind}: address in use or not local. "
                "Fix: stop the other process on that port or choose another in the config"
            )
        server.start()
        self._server = server
        return port

    def stop(self, grace_s: float = 0.5) -> None:
        """Stop serving; pending long-polls return empty at once. Idempotent."""
        self._boxes.close()
        if self._server is not None:
            self._server.stop(grace_s).wait()
            self._server = None

    def visible(self, caller: str) -> frozenset[str]:
        """The parties ``caller`` may reach and see: all for E (or without ``active``),
        E and itself for a passive party."""
        if self._active is None or caller == self._active:
            return self._allowed
        return frozenset({self._active, caller})

    def _unreachable(self, context: Any, caller: str, name: str, role: str) -> None:
        """Abort as for a name outside the job, whether or not ``name`` is another partner."""
        if name not in self.visible(caller):
            context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, f"{role} '{name}' is not a party of this job"
            )

    def stats(self) -> dict[tuple[str, str], int]:
        """Frame bytes relayed per (sender, recipient): all the relay learns besides timing."""
        return self._boxes.byte_counts()

    def _caller(self, context: Any, *, joining: bool = False) -> str:
        """The verified party name of the caller, or abort with PERMISSION_DENIED (another
        party) or ALREADY_EXISTS (another process of a party already joined, see
        :mod:`vfl.transport.admission`)."""
        auth = context.auth_context()
        names = [n.decode() for n in auth.get("x509_common_name", [])]
        sans = {n.decode() for n in auth.get("x509_subject_alternative_name", [])}
        name = names[0] if names else ""
        if not name or (sans and name not in sans) or name not in self._allowed:
            context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                f"party '{name or '?'}' is not allowed in this job (allowed: "
                f"{', '.join(sorted(self._allowed))})",
            )
        self._admit(name, context, joining=joining)
        return name

    def _admit(self, name: str, context: Any, *, joining: bool) -> None:
        """Abort with ALREADY_EXISTS unless this process may speak for party ``name``."""
        meta = {k: v for k, v in context.invocation_metadata() if isinstance(v, str)}
        every_s, lost_s = decode_liveness(meta.get(HEARTBEAT_KEY, ""))
        status = self.board.status().get(name)
        refusal = self._admission.admit(
            name,
            meta.get(INSTANCE_KEY, ""),
            alive_window_s(every_s, lost_s),
            joining=joining,
            silent_s=None if status is None else status.age_s,
            finished=status is not None and status.state is not PartyState.RUNNING,
        )
        if refusal is not None:
            context.abort(grpc.StatusCode.ALREADY_EXISTS, refusal)

    def _send(self, frame: bytes, context: Any) -> bytes:
        caller = self._caller(context)
        try:
            header = peek_header(frame)
        except FrameError as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        self._check_job(header.job, context)
        if header.sender != caller:
            context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                f"party '{caller}' sent a frame claiming to be from '{header.sender}'",
            )
        self._unreachable(context, caller, header.recipient, "recipient")
        if not self._boxes.put(header, frame):
            context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"mailbox of '{header.recipient}' is full; retry after it reads",
            )
        return b""

    def _recv(self, request: bytes, context: Any) -> bytes:
        caller = self._caller(context)
        try:
            req = decode_recv_request(request)
        except FrameError as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        self._check_job(req.job, context)
        self._unreachable(context, caller, req.sender, "sender")
        wait = min(req.wait_s, self._max_poll_s)
        remaining = context.time_remaining()
        if remaining is not None:
            wait = max(0.0, min(wait, remaining - 0.05))
        return self._boxes.take((req.job, caller, req.sender), wait)

    def _check_job(self, job: str, context: Any) -> None:
        if job != self.job_id:
            context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                f"this coordinator serves job '{self.job_id}', not '{job}'",
            )

    def _join(self, request: bytes, context: Any) -> bytes:
        caller = self._caller(context, joining=True)
        try:
            fields = json.loads(request.decode() or "{}")
        except (UnicodeDecodeError, json.JSONDecodeError):
            fields = None
        if not isinstance(fields, dict) or not isinstance(fields.get("job", ""), str):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "join request must be JSON {job}")
        if fields.get("job"):
            self._check_job(fields["job"], context)
        self.board.join(caller)
        reply = {"job": self.job_id, "parties": sorted(self.visible(caller)), "plan": self._plan}
        return json.dumps(reply).encode()

    def _heartbeat(self, request: bytes, context: Any) -> bytes:
        caller = self._caller(context)
        try:
            beat = Heartbeat.decode(request)
        except FrameError as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        self._check_job(beat.job, context)
        self.board.beat(caller, beat)
        return self.board.encode_status(self.visible(caller))

    def _status(self, request: bytes, context: Any) -> bytes:
        """The board as JSON ``{job, parties}``; the caller's own entry is left untouched."""
        caller = self._caller(context)
        return self.board.encode_view(caller, self.visible(caller))
