"""The msgpack wire format: one header frame, then one raw buffer frame per tensor.

A message is a msgpack map with the protocol version `v` and a `type`. Every tensor
inside it (at any depth) is replaced in the header by a msgpack extension that holds
[frame index, dtype, shape, byte order]; its bytes travel as their own ZeroMQ frame,
handed to ZeroMQ without a copy and read back as a view of the received frame without a
copy. Nothing is ever unpickled.

Two rules follow from the absence of copies (see docs/wire-performance.md):

- A decoded tensor is a view of the received frame's memory. The runtime treats it as
  read-only: it copies before writing (weights are copied into parameters, optimizer
  state is cloned). `writable()` gives an owning copy where one is needed.
- A tensor handed to `encode` may still be read by ZeroMQ's I/O thread after `send`
  returns (frames of at least `ZERO_COPY_MIN_BYTES`); it must not be changed in place
  until the peer has answered the message.
"""

from __future__ import annotations

import sys
import threading
import warnings
from collections.abc import Sequence
from typing import Any

import msgpack
import numpy as np
import torch

from hiertrain_edge.errors import ProtocolError

PROTOCOL_VERSION = 1
_TENSOR_EXT = 1
DEFAULT_MAX_MESSAGE_BYTES = 1 << 30  # 1 GiB: VGG-11's weights are 37 MiB, activations less
# The header holds only ids, settings and tensor descriptors (a VGG-11 state's is ~3 KiB);
# the cap keeps a hostile header from expanding into gigabytes of Python objects.
MAX_HEADER_BYTES = 4 << 20
MAX_TENSOR_NDIM = 16
MAX_TENSOR_ELEMENTS = 1 << 40  # keeps torch's stride arithmetic far from int64 overflow
# Below this size a frame is copied into ZeroMQ's message on send: cheaper than the
# zero-copy bookkeeping (a reference held until ZeroMQ's I/O thread releases it). The
# value is pyzmq's own default (zmq.COPY_THRESHOLD), which the transport keeps.
ZERO_COPY_MIN_BYTES = 1 << 16

# The allow-list: every dtype training, labels and masks use, and nothing else.
DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "float64": torch.float64,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "int64": torch.int64,
    "int32": torch.int32,
    "int16": torch.int16,
    "int8": torch.int8,
    "uint8": torch.uint8,
    "bool": torch.bool,
}
_NAMES = {dt: name for name, dt in DTYPES.items()}
_NATIVE_ORDER = "<" if sys.byteorder == "little" else ">"
# Same-size integer views: numpy has no bfloat16, and bool is read back as bytes.
_VIEW_AS = {torch.bfloat16: torch.int16, torch.bool: torch.uint8}
# Per dtype name, looked up once per tensor: the torch dtype, bytes per element (allocating a
# tensor to ask costs microseconds), and the numpy dtype a received buffer is read as, in
# native and in swapped byte order (numpy builds a shaped view of a buffer in one call;
# torch needs frombuffer and then reshape, several times slower).
_DECODE: dict[str, tuple[torch.dtype, int, np.dtype, np.dtype, torch.dtype | None]] = {}
for _name, _dt in DTYPES.items():
    _np = torch.empty((), dtype=_VIEW_AS.get(_dt, _dt)).numpy().dtype
    _DECODE[_name] = (_dt, _np.itemsize, _np, _np.newbyteorder(), _dt if _dt in _VIEW_AS else None)
# Tensor descriptors already built, by (frame index, dtype name, shape): a step sends the
# same shapes again and again. Cleared when full, so a stream of new shapes stays bounded.
_DESCRIPTORS_CACHED = 4096
# Received descriptors already read and found valid, by their bytes: what a descriptor says
# (dtype, shape, byte order) does not depend on the message it came in, so one seen before
# is not parsed and checked again; its frame index and its frame's length are still checked
# in every message. Cleared when full; longer descriptors are never kept.
_READ_CACHED = 4096
_READ_MAX_BYTES = 128
_read: dict[bytes, tuple[Any, ...]] = {}

# Received tensors are views of ZeroMQ frames (or of the caller's bytes); the runtime copies
# before it writes (weights are copied into parameters), so the warnings would only be noise.
warnings.filterwarnings("ignore", message="The given buffer is not writable")
warnings.filterwarnings("ignore", message="The given NumPy array is not writable")


class _Encoder(threading.local):
    """One msgpack packer per thread, reused: building one per message costs more than
    packing a small header. `buffers` collects the current message's tensor frames."""

    def __init__(self) -> None:
        self.buffers: list[Any] = []
        self.header = msgpack.Packer(default=self.tensor, use_bin_type=True)
        self.descriptors: dict[tuple[int, str, tuple[int, ...]], msgpack.ExtType] = {}

    def tensor(self, obj: Any) -> Any:
        """msgpack's hook for what it cannot pack itself: a tensor becomes a descriptor."""
        if not isinstance(obj, torch.Tensor):
            if not isinstance(obj, np.ndarray):
                raise ProtocolError(f"cannot encode a {type(obj).__name__} in a message")
            obj = torch.from_numpy(obj)
        name = _NAMES.get(obj.dtype)
        if name is None:
            raise ProtocolError(f"dtype {obj.dtype} cannot travel; allowed: {', '.join(DTYPES)}")
        buffers = self.buffers
        buffers.append(_tensor_buffer(obj))
        key = (len(buffers), name, obj.shape)
        ext = self.descriptors.get(key)
        if ext is None:
            if len(self.descriptors) >= _DESCRIPTORS_CACHED:
                self.descriptors.clear()
            meta = msgpack.packb([key[0], name, list(key[2]), _NATIVE_ORDER])
            ext = self.descriptors[key] = msgpack.ExtType(_TENSOR_EXT, meta)
        return ext


_encoder = _Encoder()


def _tensor_buffer(t: torch.Tensor) -> np.ndarray:
    """A contiguous CPU numpy view of `t`'s bytes (copies only when it must)."""
    if not t.is_contiguous():
        t = t.contiguous()
    try:
        # One more torch call in the common case (a CPU tensor without autograd history);
        # numpy refuses the rest, which take the slow path below.
        return t.numpy()
    except (RuntimeError, TypeError):
        t = t.detach().cpu().resolve_conj().resolve_neg().contiguous()
        view_as = _VIEW_AS.get(t.dtype)  # numpy has no bfloat16
        return (t if view_as is None else t.view(view_as)).numpy()


def encode(msg: dict[str, Any]) -> list[Any]:
    """Encode a message into frames: [header, buffer, buffer, ...]."""
    if "type" not in msg:
        raise ProtocolError(f"message has no 'type' field: keys {sorted(msg)}")
    enc = _encoder
    enc.buffers = buffers = []
    try:
        header = enc.header.pack({"v": PROTOCOL_VERSION, **msg})
    except BaseException:
        # A failed pack leaves the packer's buffer half written; the next one starts clean.
        enc.header.reset()
        raise
    finally:
        enc.buffers = []
    return [header, *buffers]


def _read_descriptor(data: bytes, frames: int) -> tuple[Any, ...]:
    """A tensor descriptor's (frame index, dtype name, shape, element count, byte order,
    dtype info), checked in the order a hostile one is best refused in: nothing is
    multiplied before the rank is known to be small.

    Raises:
        ProtocolError: the descriptor is malformed, or its dtype, frame index (against a
            message of `frames` frames), shape or byte order is not allowed.
    """
    try:
        index, name, shape, order = msgpack.unpackb(data)
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise ProtocolError(f"malformed tensor descriptor: {exc}") from exc
    info = _DECODE.get(name) if isinstance(name, str) else None
    if info is None:
        raise ProtocolError(f"dtype {name!r} is not allowed; expected one of {', '.join(DTYPES)}")
    if not isinstance(index, int) or not 1 <= index < frames:
        raise ProtocolError(f"tensor frame index {index!r} out of range 1..{frames - 1}")
    if not isinstance(shape, list):
        raise ProtocolError(f"tensor shape must be a list of ints >= 0, got {shape!r}")
    # The rank first: multiplying a hostile header's thousands of 64-bit sizes would
    # build ever larger integers, seconds of work for one message.
    if len(shape) > MAX_TENSOR_NDIM:
        raise ProtocolError(
            f"tensor shape of {len(shape)} dimensions is too large: at most "
            f"{MAX_TENSOR_NDIM} dimensions"
        )
    count = 1
    span = 1  # torch's strides multiply every dimension, zeros counted as one
    for d in shape:
        if type(d) is not int or d < 0:  # bool is a subclass of int, and not a size
            raise ProtocolError(f"tensor shape must be a list of ints >= 0, got {shape!r}")
        count *= d
        span *= d or 1
    if order != "<" and order != ">":
        raise ProtocolError(f"byte order must be '<' or '>', got {order!r}")
    if span > MAX_TENSOR_ELEMENTS:
        raise ProtocolError(
            f"tensor shape {shape} is too large: at most {MAX_TENSOR_NDIM} dimensions "
            f"spanning at most {MAX_TENSOR_ELEMENTS} elements"
        )
    return index, name, shape, count, order, info


def writable(t: torch.Tensor) -> torch.Tensor:
    """An owning copy of a decoded tensor, for code that must change it in place."""
    return t.clone()


def decode(frames: Sequence[Any], max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> dict[str, Any]:
    """Decode frames into a message, validating everything a hostile peer could lie about.

    Frames are bytes-like (bytes, memoryview, zmq.Frame); decoded tensors are views of
    them and keep them alive.

    Raises:
        ProtocolError: the frames are not a well-formed message of this protocol version.
    """
    if not frames:
        raise ProtocolError("empty message: expected a header frame")
    views = [memoryview(f) for f in frames]
    total = 0
    for v in views:
        total += v.nbytes
    if total > max_bytes:
        raise ProtocolError(f"message of {total} bytes exceeds the limit of {max_bytes} bytes")
    if views[0].nbytes > MAX_HEADER_BYTES:
        raise ProtocolError(
            f"header of {views[0].nbytes} bytes exceeds the limit of {MAX_HEADER_BYTES} bytes"
        )
    used = [False] * len(views)

    def ext_hook(code: int, data: bytes) -> Any:
        if code != _TENSOR_EXT:
            raise ProtocolError(f"unknown msgpack extension type {code}; expected {_TENSOR_EXT}")
        read = _read.get(data)
        if read is None:
            read = _read_descriptor(data, len(views))
            if len(data) <= _READ_MAX_BYTES:
                if len(_read) >= _READ_CACHED:
                    _read.clear()
                _read[data] = read
        index, name, shape, count, order, info = read
        if not isinstance(index, int) or not 1 <= index < len(views):
            raise ProtocolError(f"tensor frame index {index!r} out of range 1..{len(views) - 1}")
        if used[index]:
            raise ProtocolError(f"tensor frame {index} referenced twice")
        dtype, itemsize, native, swapped, view_as = info
        buf = views[index]
        if count * itemsize != buf.nbytes:
            raise ProtocolError(
                f"tensor {name}{shape} needs {count * itemsize} bytes, "
                f"frame {index} has {buf.nbytes}"
            )
        used[index] = True
        if count == 0:
            return torch.empty(shape, dtype=dtype)
        if order == _NATIVE_ORDER:
            t = torch.from_numpy(np.ndarray(shape, native, buf))
        else:  # a copy in native order
            t = torch.from_numpy(np.ndarray(shape, swapped, buf).astype(native))
        return t if view_as is None else t.view(view_as)

    try:
        msg = msgpack.unpackb(views[0], ext_hook=ext_hook, raw=False, strict_map_key=True)
    except ProtocolError:
        raise
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise ProtocolError(f"header is not valid msgpack: {exc}") from exc
    if not isinstance(msg, dict):
        raise ProtocolError(f"header must be a msgpack map, got {type(msg).__name__}")
    if msg.get("v") != PROTOCOL_VERSION:
        raise ProtocolError(
            f"protocol version {msg.get('v')!r} not supported; "
            f"this build speaks {PROTOCOL_VERSION}"
        )
    if not isinstance(msg.get("type"), str):
        raise ProtocolError(f"message type must be a string, got {msg.get('type')!r}")
    if not all(used[1:]):
        unused = [i for i in range(1, len(used)) if not used[i]]
        raise ProtocolError(f"frames {unused} are not referenced by the header")
    return msg
