"""Round trips and rejections of the msgpack tensor codec."""

from __future__ import annotations

import msgpack
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hiertrain_edge.errors import ProtocolError
from hiertrain_edge.wire.codec import DTYPES, PROTOCOL_VERSION, decode, encode

TRAINING_DTYPES = [
    torch.float32,
    torch.float16,
    torch.bfloat16,
    torch.int64,
    torch.bool,
    torch.uint8,
]


def _sample(dtype: torch.dtype, shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    if dtype == torch.bool:
        return torch.randint(0, 2, shape, generator=gen).bool()
    if dtype.is_floating_point:
        return torch.randn(shape, generator=gen).to(dtype)
    return torch.randint(0, 200, shape, generator=gen).to(dtype)


def roundtrip(t: torch.Tensor) -> torch.Tensor:
    return decode(encode({"type": "t", "x": t}))["x"]


def assert_same(a: torch.Tensor, b: torch.Tensor) -> None:
    assert a.dtype == b.dtype and a.shape == b.shape
    # Compare bytes, so NaN payloads and -0.0 count too.
    assert torch.equal(a.reshape(-1).view(torch.uint8), b.reshape(-1).view(torch.uint8))


@pytest.mark.parametrize("dtype", TRAINING_DTYPES, ids=str)
@pytest.mark.parametrize("shape", [(), (0,), (3, 0, 2), (7,), (2, 3, 4), (1, 1, 28, 28)])
def test_codec_roundtrip_every_dtype_and_shape(dtype, shape):
    t = _sample(dtype, shape)
    assert_same(roundtrip(t), t)


@pytest.mark.parametrize("dtype", TRAINING_DTYPES, ids=str)
def test_codec_roundtrip_non_contiguous(dtype):
    t = _sample(dtype, (4, 6, 5))
    for view in (t.transpose(0, 2), t[:, ::2], t[..., 1:4].permute(2, 0, 1)):
        assert not view.is_contiguous()
        assert_same(roundtrip(view), view.contiguous())


def test_codec_roundtrip_nested_and_plain_values():
    a, b = torch.arange(6).reshape(2, 3), torch.ones(2, dtype=torch.bfloat16)
    msg = {
        "type": "fwd",
        "step": 4,
        "gid": None,
        "units": {"3": {"w": a}},
        "xs": [a, b],
        "loss": 0.25,
        "name": "é",
    }
    out = decode(encode(msg))
    assert out["v"] == PROTOCOL_VERSION and out["step"] == 4 and out["gid"] is None
    assert out["loss"] == 0.25 and out["name"] == "é"
    assert_same(out["units"]["3"]["w"], a)
    assert_same(out["xs"][0], a) and assert_same(out["xs"][1], b) is None


def test_codec_sends_large_tensors_without_copy():
    t = torch.randn(1 << 20)
    frames = encode({"type": "t", "x": t})
    assert np.shares_memory(frames[1], t.numpy())


def test_codec_byte_order_is_honoured():
    t = torch.arange(5, dtype=torch.float32)
    header = msgpack.packb(
        {
            "v": PROTOCOL_VERSION,
            "type": "t",
            "x": msgpack.ExtType(1, msgpack.packb([1, "float32", [5], ">"])),
        }
    )
    out = decode([header, t.numpy().astype(">f4").tobytes()])["x"]
    assert torch.equal(out, t)


@settings(max_examples=150, deadline=None)
@given(
    dtype=st.sampled_from(sorted(DTYPES)),
    shape=st.lists(st.integers(0, 5), max_size=4),
    seed=st.integers(0, 2**16),
    transpose=st.booleans(),
)
def test_codec_roundtrip_property(dtype, shape, seed, transpose):
    t = _sample(DTYPES[dtype], tuple(shape), seed)
    if transpose and t.dim() >= 2:
        t = t.transpose(0, -1)
    assert_same(roundtrip(t), t.contiguous())


def _header(**fields):
    return msgpack.packb({"v": PROTOCOL_VERSION, "type": "t", **fields})


def _ext(index, dtype, shape, order="<"):
    return msgpack.ExtType(1, msgpack.packb([index, dtype, shape, order]))


@pytest.mark.parametrize(
    ("frames", "message"),
    [
        ([], "empty message: expected a header frame"),
        ([b"\xc1"], "header is not valid msgpack"),
        ([msgpack.packb([1, 2])], "header must be a msgpack map, got list"),
        ([msgpack.packb({"v": 99, "type": "t"})], "protocol version 99 not supported"),
        ([msgpack.packb({"v": PROTOCOL_VERSION, "type": 3})], "message type must be a string"),
        ([_header(x=_ext(1, "complex64", [2])), b"\0" * 16], "dtype 'complex64' is not allowed"),
        ([_header(x=_ext(1, "float32", [3])), b"\0" * 8], "needs 12 bytes, frame 1 has 8"),
        ([_header(x=_ext(2, "float32", [1])), b"\0" * 4], "tensor frame index 2 out of range"),
        ([_header(x=_ext(1, "float32", [-1])), b""], "tensor shape must be a list of ints"),
        ([_header(x=_ext(1, "uint8", [1], "?")), b"\0"], "byte order must be '<' or '>'"),
        ([_header(), b"extra"], "frames [1] are not referenced by the header"),
        (
            [_header(x=_ext(1, "uint8", [1]), y=_ext(1, "uint8", [1])), b"\0"],
            "tensor frame 1 referenced twice",
        ),
        ([_header(x=msgpack.ExtType(9, b""))], "unknown msgpack extension type 9"),
    ],
)
def test_codec_rejects_malformed_input(frames, message):
    with pytest.raises(ProtocolError, match=message.replace("[", r"\[").replace("]", r"\]")):
        decode(frames)


def test_codec_rejects_oversized_message():
    with pytest.raises(
        ProtocolError, match="message of 1055 bytes exceeds the limit of 1000 bytes"
    ):
        decode(encode({"type": "t", "x": torch.zeros(256)}), max_bytes=1000)


def test_codec_refuses_to_encode_unknown_objects():
    with pytest.raises(ProtocolError, match="cannot encode a object in a message"):
        encode({"type": "t", "x": object()})
    with pytest.raises(ProtocolError, match="dtype torch.complex64 cannot travel"):
        encode({"type": "t", "x": torch.zeros(2, dtype=torch.complex64)})
