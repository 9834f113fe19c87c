"""Wire form of messages: ``len(header) || header (JSON) || raw array buffers``.

The header holds the envelope (job id, sequence number, message type), the scalar fields and,
for each array field, its dtype and shape. Only a short list of dtypes is accepted, so a
malformed or hostile payload fails with :class:`ProtocolError` instead of being interpreted.
"""

from __future__ import annotations

import dataclasses
import json
import struct
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from vfl.errors import ProtocolError
from vfl.protocol.messages import MESSAGE_TYPES, TYPE_OF, Message, MessageType

_ALLOWED_DTYPES = {"<f4", "<f8", "<i8", "|b1"}
_BYTES = "bytes"  # opaque byte fields (e.g. serialised ciphertexts) travel as raw buffers
_LEN = struct.Struct("<I")
M = TypeVar("M")


@dataclass(frozen=True)
class Envelope:
    """A message with the routing fields every message carries."""

    job_id: str
    seq: int
    message: Message


def encode(envelope: Envelope) -> bytes:
    """Serialise an envelope to bytes."""
    msg = envelope.message
    fields: dict[str, Any] = {}
    arrays: list[dict[str, Any]] = []
    buffers: list[bytes] = []
    for f in dataclasses.fields(msg):
        value = getattr(msg, f.name)
        if isinstance(value, bytes):
            arrays.append({"name": f.name, "dtype": _BYTES, "shape": [len(value)]})
            buffers.append(value)
        elif isinstance(value, np.ndarray):
            arr = np.ascontiguousarray(value)
            arr = arr.astype(arr.dtype.newbyteorder("<")) if arr.dtype.byteorder == ">" else arr
            arrays.append({"name": f.name, "dtype": arr.dtype.str, "shape": list(arr.shape)})
            buffers.append(arr.tobytes())
        else:
            fields[f.name] = value
    header = json.dumps(
        {
            "job": envelope.job_id,
            "seq": envelope.seq,
            "type": TYPE_OF[type(msg)].value,
            "fields": fields,
            "arrays": arrays,
        }
    ).encode()
    return b"".join([_LEN.pack(len(header)), header, *buffers])


def decode(data: bytes) -> Envelope:
    """Parse bytes made by :func:`encode`.

    Raises:
        ProtocolError: truncated data, bad header, unknown type or dtype, size mismatch.
    """
    try:
        (n,) = _LEN.unpack_from(data, 0)
        header = json.loads(data[_LEN.size : _LEN.size + n])
        cls = MESSAGE_TYPES[MessageType(header["type"])]
        kwargs = dict(header["fields"])
        offset = _LEN.size + n
        for spec in header["arrays"]:
            arr, offset = _read_array(data, offset, spec)
            kwargs[spec["name"]] = arr
        if offset != len(data):
            raise ProtocolError(f"{len(data) - offset} trailing bytes after the last array")
        return Envelope(job_id=str(header["job"]), seq=int(header["seq"]), message=cls(**kwargs))
    except ProtocolError:
        raise
    except (struct.error, ValueError, KeyError, TypeError) as exc:
        raise ProtocolError(f"malformed message: {exc}") from exc


def _read_array(data: bytes, offset: int, spec: dict[str, Any]) -> tuple[np.ndarray | bytes, int]:
    """One array buffer at ``offset``; returns it and the offset after it."""
    if spec["dtype"] == _BYTES:
        size = int(spec["shape"][0])
        if size < 0 or offset + size > len(data):
            raise ProtocolError(f"bytes field '{spec['name']}' is truncated")
        return data[offset : offset + size], offset + size
    if spec["dtype"] not in _ALLOWED_DTYPES:
        raise ProtocolError(f"array '{spec['name']}' has unsupported dtype {spec['dtype']}")
    dtype = np.dtype(spec["dtype"])
    shape = tuple(int(s) for s in spec["shape"])
    size = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if offset + size > len(data):
        raise ProtocolError(f"array '{spec['name']}' is truncated")
    arr = np.frombuffer(data, dtype=dtype, count=size // dtype.itemsize, offset=offset)
    return arr.reshape(shape).copy(), offset + size


def encode_control(message: Message, *, job_id: str = "") -> bytes:
    """A control message (sent once, outside the protocol's numbered steps) in an envelope
    of its own: sequence 0; the sealed session already binds job, phase and order."""
    return encode(Envelope(job_id=job_id, seq=0, message=message))


def decode_control(data: bytes, cls: type[M]) -> M:
    """The message of ``data``, which must be a ``cls``.

    Raises:
        ProtocolError: malformed, or a message of another type (named).
    """
    message = decode(data).message
    if not isinstance(message, cls):
        raise ProtocolError(f"a {type(message).__name__}, not a {cls.__name__}")
    return message
