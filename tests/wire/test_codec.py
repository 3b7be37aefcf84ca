"""Round trips and rejections of the msgpack tensor codec."""

from __future__ import annotations

import threading

import msgpack
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hiertrain_edge.errors import ProtocolError
from hiertrain_edge.wire import codec
from hiertrain_edge.wire.codec import (
    DTYPES,
    PROTOCOL_VERSION,
    decode,
    encode,
    writable,
)

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


def test_codec_rejects_a_huge_rank_before_multiplying_sizes():
    # 20000 sizes of 2**64 - 1: multiplying them first took seconds for one 180 KB header.
    shape = [2**64 - 1] * 20000
    with pytest.raises(ProtocolError) as err:
        decode([_header(x=_ext(1, "float32", shape)), b"\0" * 4])
    assert str(err.value) == (
        "tensor shape of 20000 dimensions is too large: at most 16 dimensions"
    )


def test_codec_decoded_tensors_are_views_of_the_frames():
    t = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    header, buffer = encode({"type": "t", "x": t})
    frame = bytearray(memoryview(buffer).cast("B"))
    out = decode([header, frame])["x"]
    assert np.shares_memory(out.numpy(), np.frombuffer(frame, dtype=np.uint8))
    owned = writable(out)
    assert not np.shares_memory(owned.numpy(), np.frombuffer(frame, dtype=np.uint8))
    owned += 1
    assert torch.equal(out, t) and torch.equal(owned, t + 1)


def test_codec_descriptors_stay_right_past_the_cache(monkeypatch):
    monkeypatch.setattr(codec, "_DESCRIPTORS_CACHED", 8)
    for i in range(20):
        a, b = torch.zeros(i % 7 + 1, i + 1), torch.ones(i + 1, dtype=torch.int64)
        out = decode(encode({"type": "t", "a": a, "b": b}))
        assert_same(out["a"], a) and assert_same(out["b"], b) is None
        # The same shapes in the other order: the frame index is part of the descriptor.
        out = decode(encode({"type": "t", "b": a, "a": b}))
        assert_same(out["b"], a) and assert_same(out["a"], b) is None


def test_codec_checks_a_known_descriptor_against_every_message(monkeypatch):
    """A descriptor read once is not parsed again, but its frame index and its frame's
    length are checked in every message it comes in."""
    monkeypatch.setattr(codec, "_read", {})
    header, frame = encode({"type": "t", "x": torch.ones(2, 3)})
    assert torch.equal(decode([header, frame])["x"], torch.ones(2, 3))
    assert len(codec._read) == 1
    with pytest.raises(ProtocolError) as short:
        decode([header, bytes(20)])
    assert str(short.value) == "tensor float32[2, 3] needs 24 bytes, frame 1 has 20"
    with pytest.raises(ProtocolError) as missing:
        decode([header])
    assert str(missing.value) == "tensor frame index 1 out of range 1..0"
    ext = msgpack.unpackb(header)["x"]  # the descriptor, as an ExtType
    twice = msgpack.packb({"v": PROTOCOL_VERSION, "type": "t", "x": ext, "y": ext})
    with pytest.raises(ProtocolError) as again:
        decode([twice, frame])
    assert str(again.value) == "tensor frame 1 referenced twice"


def test_codec_keeps_a_bounded_number_of_read_descriptors(monkeypatch):
    monkeypatch.setattr(codec, "_read", {})
    monkeypatch.setattr(codec, "_READ_CACHED", 8)
    for i in range(20):
        t = torch.zeros(i + 1)
        assert torch.equal(decode(encode({"type": "t", "x": t}))["x"], t)
        assert len(codec._read) <= 8


def test_codec_encodes_cleanly_after_a_failed_encode():
    with pytest.raises(ProtocolError):
        encode({"type": "t", "x": torch.ones(3), "y": object()})
    frames = encode({"type": "t", "z": torch.full((2,), 7)})
    assert len(frames) == 2
    assert torch.equal(decode(frames)["z"], torch.full((2,), 7))


def test_codec_encodes_from_several_threads():
    def work(seed: int, out: list[bool]) -> None:
        for i in range(200):
            t = _sample(torch.float32, (seed + 1, i % 5 + 1), seed * 1000 + i)
            got = decode(encode({"type": "t", "i": i, "x": t, "y": t[:1]}))
            out.append(got["i"] == i and torch.equal(got["x"], t) and torch.equal(got["y"], t[:1]))

    results: list[list[bool]] = [[] for _ in range(4)]
    threads = [threading.Thread(target=work, args=(k, results[k])) for k in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert [len(r) for r in results] == [200] * 4 and all(all(r) for r in results)


def test_codec_sends_autograd_and_negated_tensors_by_value():
    leaf = torch.arange(4, dtype=torch.float32).requires_grad_()
    assert_same(roundtrip(leaf * 2), torch.arange(4, dtype=torch.float32) * 2)
    base = torch.arange(4, dtype=torch.float32)
    negated = torch._neg_view(base)
    assert negated.is_neg()
    assert_same(roundtrip(negated), -base)
