"""The GGUF reader: every value type, the tensor table, and hostile files."""

from __future__ import annotations

import struct
import time

import gguf
import numpy as np
import pytest

from assistant.core.gguf import GGUFError, open_gguf
from assistant.core.gguf_writer import TensorToWrite, write_gguf
from assistant.core import gguf as G


def _write_all_types(path):
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_uint8("t.u8", 200)
    w.add_int8("t.i8", -100)
    w.add_uint16("t.u16", 60000)
    w.add_int16("t.i16", -30000)
    w.add_uint32("t.u32", 4_000_000_000)
    w.add_int32("t.i32", -2_000_000_000)
    w.add_float32("t.f32", 1.5)
    w.add_uint64("t.u64", 2**63 + 5)
    w.add_int64("t.i64", -(2**62))
    w.add_float64("t.f64", 2.25)
    w.add_bool("t.bool", True)
    w.add_string("t.str", "héllo ▁ wörld")
    w.add_array("t.arr_int", [1, 2, 3])
    w.add_array("t.arr_str", ["a", "bé", ""])
    w.add_array("t.arr_nested", [[1, 2], [3]])
    w.add_tensor("a", np.arange(64, dtype=np.float32).reshape(2, 32))
    w.add_tensor("b", np.ones(32, dtype=np.float16))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def test_reads_every_value_type(tmp_path):
    p = tmp_path / "all.gguf"
    _write_all_types(p)
    f = open_gguf(str(p))
    m = f.metadata
    assert f.version == 3 and f.alignment == 32
    assert (m["t.u8"], m["t.i8"], m["t.u16"], m["t.i16"]) == (200, -100, 60000, -30000)
    assert (m["t.u32"], m["t.i32"], m["t.u64"], m["t.i64"]) == (4_000_000_000, -2_000_000_000, 2**63 + 5, -(2**62))
    assert m["t.f32"] == 1.5 and m["t.f64"] == 2.25 and m["t.bool"] is True
    assert m["t.str"] == "héllo ▁ wörld"
    assert list(m["t.arr_int"]) == [1, 2, 3]
    assert m["t.arr_str"] == ["a", "bé", ""]
    assert [list(x) for x in m["t.arr_nested"]] == [[1, 2], [3]]
    a = f.tensors["a"]
    assert a.shape == (2, 32) and a.type_name == "F32" and a.offset % 32 == 0
    data = f.tensor_data("a").view(np.float32).reshape(2, 32)
    assert np.array_equal(data, np.arange(64, dtype=np.float32).reshape(2, 32))
    assert f.tensors["b"].type_name == "F16"


def test_tensor_views_are_zero_copy(tmp_path):
    p = tmp_path / "all.gguf"
    _write_all_types(p)
    f = open_gguf(str(p))
    view = f.tensor_data("a")
    assert not view.flags.owndata  # a view into the map, not a copy
    assert view.base is not None


def test_version_2_is_read(tmp_path):
    p = tmp_path / "v2.gguf"
    _write_all_types(p)
    raw = bytearray(p.read_bytes())
    raw[4:8] = struct.pack("<I", 2)
    p.write_bytes(bytes(raw))
    assert open_gguf(str(p)).version == 2


def test_our_writer_round_trips(tmp_path):
    p = tmp_path / "ours.gguf"
    meta = [("general.architecture", G.T_STRING, "llama"), ("x.count", G.T_UINT32, 7),
            ("x.list", G.T_ARRAY, ["a", "b"]), ("x.scores", G.T_ARRAY, np.array([0.5, -1.0], dtype=np.float32)),
            ("general.alignment", G.T_UINT32, 64)]
    t = np.arange(96, dtype=np.float32).reshape(3, 32)
    write_gguf(str(p), meta, [TensorToWrite("w", (3, 32), 0, t.view(np.uint8).reshape(-1)),
                              TensorToWrite("v", (32,), 0, t[0].view(np.uint8).reshape(-1))])
    f = open_gguf(str(p))
    assert f.alignment == 64 and f.metadata["x.count"] == 7 and f.metadata["x.list"] == ["a", "b"]
    assert all(t.offset % 64 == 0 for t in f.tensors.values())
    assert np.array_equal(f.tensor_data("w").view(np.float32).reshape(3, 32), t)
    # The gguf package (llama.cpp's reader) reads what we wrote.
    r = gguf.GGUFReader(str(p))
    assert [t.name for t in r.tensors] == ["w", "v"]


def _header(n_tensors=0, n_kv=0, version=3):
    return b"GGUF" + struct.pack("<IQQ", version, n_tensors, n_kv)


def _kv(key, vtype, payload):
    k = key.encode()
    return struct.pack("<Q", len(k)) + k + struct.pack("<I", vtype) + payload


def _s(text):
    b = text.encode()
    return struct.pack("<Q", len(b)) + b


def _tensor(name, dims, ttype, offset):
    return _s(name) + struct.pack("<I", len(dims)) + b"".join(struct.pack("<Q", d) for d in dims) + struct.pack("<IQ", ttype, offset)


HOSTILE = {
    "bad magic": (b"GGML" + b"\0" * 40, "bad magic"),
    "unknown version": (_header(version=99) + b"\0" * 8, "unknown GGUF version"),
    "big endian": (b"GGUF" + struct.pack(">I", 3) + b"\0" * 24, "big-endian"),
    "truncated": (_header(0, 1)[:-3] + b"\0" * 7, "truncated|exceeds"),
    "huge kv count": (_header(0, 2**60) + b"\0" * 16, "metadata count"),
    "huge tensor count": (_header(2**60, 0) + b"\0" * 16, "tensor count"),
    "huge string": (_header(0, 1) + struct.pack("<Q", 2**62) + b"k" * 16, "claims"),
    "huge array": (_header(0, 1) + _kv("a", 9, struct.pack("<IQ", 4, 2**61)) + b"\0" * 8, "claims"),
    "huge string array": (_header(0, 1) + _kv("a", 9, struct.pack("<IQ", 8, 2**61)) + b"\0" * 8, "claims"),
    "unknown value type": (_header(0, 1) + _kv("a", 77, b"\0" * 8), "unknown value type"),
    "unknown element type": (_header(0, 1) + _kv("a", 9, struct.pack("<IQ", 55, 1)) + b"\0" * 8, "unknown element type"),
    "duplicate key": (_header(0, 2) + _kv("a", 4, struct.pack("<I", 1)) + _kv("a", 4, struct.pack("<I", 2)) + b"\0" * 8, "duplicate metadata key"),
    "bad alignment": (_header(0, 1) + _kv("general.alignment", 4, struct.pack("<I", 3)) + b"\0" * 8, "power of two"),
    "zero alignment": (_header(0, 1) + _kv("general.alignment", 4, struct.pack("<I", 0)) + b"\0" * 8, "power of two"),
    "too many dims": (_header(1, 0) + _tensor("t", [32, 1, 1, 1, 1], 0, 0) + b"\0" * 64, "dimensions"),
    "zero dim": (_header(1, 0) + _tensor("t", [32, 0], 0, 0) + b"\0" * 64, "zero dimension"),
    "overflowing dims": (_header(1, 0) + _tensor("t", [2**40, 2**40], 0, 0) + b"\0" * 64, "overflow"),
    "unknown tensor type": (_header(1, 0) + _tensor("t", [32], 99, 0) + b"\0" * 64, "unknown ggml type"),
    "data out of bounds": (_header(1, 0) + _tensor("t", [32], 0, 0) + b"\0" * 40, "outside the file"),
    "misaligned data": (_header(1, 0) + _tensor("t", [32], 0, 8) + b"\0" * 400, "not aligned"),
    "duplicate tensor": (_header(2, 0) + _tensor("t", [32], 0, 0) + _tensor("t", [32], 0, 128) + b"\0" * 400, "duplicate tensor"),
    "row not multiple of block": (_header(1, 0) + _tensor("t", [33], 8, 0) + b"\0" * 400, "not a multiple"),
    "invalid utf8 key": (_header(0, 1) + struct.pack("<Q", 2) + b"\xff\xfe" + struct.pack("<I", 4) + b"\0" * 8, "UTF-8"),
    "deep nesting": (_header(0, 1) + _kv("a", 9, struct.pack("<IQ", 9, 1) * 12) + b"\0" * 8, "nested deeper"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_files_raise_specific_errors(tmp_path, case):
    data, pattern = HOSTILE[case]
    p = tmp_path / "bad.gguf"
    p.write_bytes(data)
    with pytest.raises(GGUFError, match=pattern):
        open_gguf(str(p))


def test_missing_file_is_a_gguf_error(tmp_path):
    with pytest.raises(GGUFError, match="cannot open"):
        open_gguf(str(tmp_path / "nope.gguf"))


@pytest.mark.slow
def test_fuzz_mutations_load_or_raise(tiny_models):
    """Thousands of mutated files: each loads or raises GGUFError, quickly and without
    allocating what the header claims."""
    import resource
    import tempfile

    from assistant.core.tokenizer import TokenizerError, tokenizer_from_gguf

    base = bytearray(tiny_models["llama"].read_bytes())
    rng = np.random.default_rng(1234)
    header_len = 4096  # mutate where the parser looks
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    outcomes = {"ok": 0, "error": 0}
    worst = 0.0
    with tempfile.TemporaryDirectory() as d:
        path = f"{d}/fuzz.gguf"
        for i in range(3000):
            data = bytearray(base)
            for _ in range(int(rng.integers(1, 6))):
                kind = rng.integers(0, 4)
                pos = int(rng.integers(0, min(header_len, len(data))))
                if kind == 0:
                    data[pos] = int(rng.integers(0, 256))
                elif kind == 1:  # a large little-endian integer where a count might be
                    data[pos:pos + 8] = struct.pack("<Q", [2**31, 2**32 - 1, 2**63, 2**64 - 1, 1 << 40][int(rng.integers(0, 5))])
                elif kind == 2:
                    del data[pos:pos + int(rng.integers(1, 64))]
                else:
                    data = data[: int(rng.integers(0, len(data)))]
            with open(path, "wb") as fh:
                fh.write(data)
            t0 = time.perf_counter()
            try:
                f = open_gguf(path)
                try:
                    tokenizer_from_gguf(f)
                except (TokenizerError, GGUFError, ValueError):
                    pass
                outcomes["ok"] += 1
            except GGUFError:
                outcomes["error"] += 1
            worst = max(worst, time.perf_counter() - t0)
    rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert outcomes["error"] > 1000 and outcomes["ok"] > 0
    assert worst < 1.0, f"one mutated file took {worst:.2f} s"
    assert (rss1 - rss0) / 1024 < 200, f"fuzzing grew peak memory by {(rss1 - rss0) / 1024:.0f} MB"
