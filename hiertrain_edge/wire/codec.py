"""The msgpack wire format: one header frame, then one raw buffer frame per tensor.

A message is a msgpack map with the protocol version `v` and a `type`. Every tensor
inside it (at any depth) is replaced in the header by a msgpack extension that holds
[frame index, dtype, shape, byte order]; its bytes travel as their own ZeroMQ frame,
handed to ZeroMQ without a copy and read back with `torch.frombuffer` without a copy.
Nothing is ever unpickled.
"""

from __future__ import annotations

import sys
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
# Same-size integer views: numpy has no bfloat16, and bool goes out as bytes.
_VIEW_AS = {torch.bfloat16: torch.int16, torch.bool: torch.uint8}
# Bytes per element, looked up once: allocating a tensor to ask costs microseconds per message.
_ITEMSIZE = {name: torch.empty((), dtype=dt).element_size() for name, dt in DTYPES.items()}

# Received tensors are read-only views of ZeroMQ frames; the runtime copies before it
# writes (weights are copied into parameters), so the warning would only be noise.
warnings.filterwarnings("ignore", message="The given buffer is not writable")


def _tensor_buffer(t: torch.Tensor) -> np.ndarray:
    """A flat, contiguous, CPU byte-compatible view of `t` (copies only when it must)."""
    t = t.detach()
    if t.device.type != "cpu":
        t = t.cpu()
    if not t.is_contiguous():
        t = t.contiguous()
    view_as = _VIEW_AS.get(t.dtype)
    if view_as is not None:
        t = t.view(view_as)
    # Flattened by numpy, not torch: the same view at a fraction of torch's dispatch cost.
    return t.numpy().reshape(-1)


def encode(msg: dict[str, Any]) -> list[Any]:
    """Encode a message into frames: [header, buffer, buffer, ...]."""
    if "type" not in msg:
        raise ProtocolError(f"message has no 'type' field: keys {sorted(msg)}")
    buffers: list[Any] = []

    def default(obj: Any) -> Any:
        if isinstance(obj, np.ndarray):
            obj = torch.from_numpy(obj)
        if isinstance(obj, torch.Tensor):
            name = _NAMES.get(obj.dtype)
            if name is None:
                raise ProtocolError(
                    f"dtype {obj.dtype} cannot travel; allowed: {', '.join(DTYPES)}"
                )
            buffers.append(_tensor_buffer(obj))
            meta = msgpack.packb([len(buffers), name, list(obj.shape), _NATIVE_ORDER])
            return msgpack.ExtType(_TENSOR_EXT, meta)
        raise ProtocolError(f"cannot encode a {type(obj).__name__} in a message")

    header = msgpack.packb({"v": PROTOCOL_VERSION, **msg}, default=default, use_bin_type=True)
    return [header, *buffers]


def _byteswap(t: torch.Tensor) -> torch.Tensor:
    size = t.element_size()
    if size == 1:
        return t
    raw = t.reshape(-1).view(torch.uint8).reshape(-1, size).flip(1).contiguous()
    return raw.view(t.dtype).reshape(t.shape)


def decode(frames: Sequence[Any], max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> dict[str, Any]:
    """Decode frames into a message, validating everything a hostile peer could lie about.

    Raises:
        ProtocolError: the frames are not a well-formed message of this protocol version.
    """
    if not frames:
        raise ProtocolError("empty message: expected a header frame")
    views = [memoryview(f.buffer if hasattr(f, "buffer") else f) for f in frames]
    total = sum(v.nbytes for v in views)
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
        try:
            index, name, shape, order = msgpack.unpackb(data)
        except (ValueError, TypeError, msgpack.UnpackException) as exc:
            raise ProtocolError(f"malformed tensor descriptor: {exc}") from exc
        if name not in DTYPES:
            raise ProtocolError(
                f"dtype {name!r} is not allowed; expected one of {', '.join(DTYPES)}"
            )
        if not isinstance(index, int) or not 1 <= index < len(views):
            raise ProtocolError(f"tensor frame index {index!r} out of range 1..{len(views) - 1}")
        if used[index]:
            raise ProtocolError(f"tensor frame {index} referenced twice")
        if not isinstance(shape, list) or not all(
            isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
        ):
            raise ProtocolError(f"tensor shape must be a list of ints >= 0, got {shape!r}")
        if order not in ("<", ">"):
            raise ProtocolError(f"byte order must be '<' or '>', got {order!r}")
        dtype = DTYPES[name]
        count = 1
        span = 1  # torch's strides multiply every dimension, zeros counted as one
        for d in shape:
            count *= d
            span *= max(d, 1)
        if len(shape) > MAX_TENSOR_NDIM or span > MAX_TENSOR_ELEMENTS:
            raise ProtocolError(
                f"tensor shape {shape} is too large: at most {MAX_TENSOR_NDIM} dimensions "
                f"spanning at most {MAX_TENSOR_ELEMENTS} elements"
            )
        itemsize = _ITEMSIZE[name]
        buf = views[index]
        if count * itemsize != buf.nbytes:
            raise ProtocolError(
                f"tensor {name}{shape} needs {count * itemsize} bytes, "
                f"frame {index} has {buf.nbytes}"
            )
        used[index] = True
        if count == 0:
            return torch.empty(shape, dtype=dtype)
        t = torch.frombuffer(buf, dtype=dtype).reshape(shape)
        return t if order == _NATIVE_ORDER else _byteswap(t)

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
