"""Dequantizers equal gguf.quants (llama.cpp's reference) bit for bit; quantizers match its rounding."""

from __future__ import annotations

import numpy as np
import pytest
from gguf import GGMLQuantizationType as Q
from gguf import quants as ref

from assistant.core.gguf import GGML_TYPES, open_gguf
from assistant.core.quants import QuantError, dequantize, quantize, split_codes
from conftest import REAL_MODELS, real_model_path

TYPES = ["F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "IQ4_NL"]


def _bits(a: np.ndarray) -> np.ndarray:
    """Bit patterns, with every NaN as one canonical NaN (random bytes make NaN scales, and
    a NaN's sign and payload carry no meaning)."""
    a = a.astype(np.float32)
    return np.where(np.isnan(a), np.float32(np.nan), a).view(np.uint32)


@pytest.mark.parametrize("name", TYPES)
def test_random_blocks_match_reference(name):
    tid = Q[name].value
    _n, block, bsize = GGML_TYPES[tid]
    rng = np.random.default_rng(tid)
    rows, cols = 48, 512
    raw = rng.integers(0, 256, size=rows * cols // block * bsize, dtype=np.uint8)
    if name == "F32":  # random bytes would be mostly NaN payloads; use real floats too
        raw = rng.standard_normal(rows * cols).astype(np.float32).view(np.uint8)
    expected = ref.dequantize(raw.reshape(rows, -1), Q[name])
    got = dequantize(tid, raw, (rows, cols))
    assert got.dtype == np.float32 and got.shape == (rows, cols)
    assert np.array_equal(_bits(expected), _bits(got))


@pytest.mark.parametrize("name", ["Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1"])
def test_quantizers_match_reference(name):
    rng = np.random.default_rng(7)
    x = (rng.standard_normal((64, 256)) * rng.uniform(0.01, 10, size=(64, 1))).astype(np.float32)
    x[3] = 0.0  # an all-zero block
    expected = ref.quantize(x, Q[name]).reshape(-1)
    assert np.array_equal(quantize(Q[name].value, x), expected)


@pytest.mark.parametrize("name", ["Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"])
def test_lean_codes_reproduce_weights_exactly(name):
    tid = Q[name].value
    rng = np.random.default_rng(3)
    rows, cols = 16, 512
    if name.endswith("_K"):
        _n, block, bsize = GGML_TYPES[tid]
        raw = rng.integers(0, 256, size=rows * cols // block * bsize, dtype=np.uint8)
    else:
        raw = quantize(tid, rng.standard_normal((rows, cols)).astype(np.float32))
    codes, scales, mins = split_codes(tid, raw, rows, cols)
    g = cols // scales.shape[1]
    assert g == (16 if name in ("Q2_K", "Q3_K", "Q6_K") else 32) and codes.dtype == np.int8
    rebuilt = codes.reshape(rows, cols // g, g).astype(np.float32) * scales[:, :, None]
    if mins is not None:
        rebuilt = rebuilt + mins[:, :, None]
    # Equal values (adding a zero minimum may turn -0.0 into +0.0, which is the same weight).
    want = dequantize(tid, raw, (rows, cols))
    assert np.array_equal(rebuilt.reshape(rows, cols), want, equal_nan=True)


@pytest.mark.parametrize("name", TYPES[3:])
def test_transposed_dequantization_is_bit_identical(name):
    from assistant.core.quants import dequantize_transposed

    tid = Q[name].value
    _n, block, bsize = GGML_TYPES[tid]
    rng = np.random.default_rng(11)
    x = rng.standard_normal((24, 512)).astype(np.float32)
    raw = quantize(tid, x) if name in ("Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1") else \
        rng.integers(0, 256, size=24 * 512 // block * bsize, dtype=np.uint8)
    plain = dequantize(tid, raw, (24, 512))
    assert np.array_equal(_bits(dequantize_transposed(tid, raw, 24, 512)), _bits(np.ascontiguousarray(plain.T)))


def test_unsupported_type_names_type_and_tensor():
    with pytest.raises(QuantError, match=r"blk\.0\.x.*IQ4_XS"):
        dequantize(Q.IQ4_XS.value, np.zeros(136, dtype=np.uint8), (256,), "blk.0.x")


@pytest.mark.real_model
@pytest.mark.slow
@pytest.mark.parametrize("model", sorted(REAL_MODELS))
def test_every_tensor_of_real_models_matches_reference(model):
    f = open_gguf(str(real_model_path(model)))
    checked = 0
    for t in f.tensors.values():
        raw = f.tensor_data(t.name)
        got = dequantize(t.type_id, raw, t.shape, t.name)
        expected = ref.dequantize(raw.reshape(t.shape[:-1] + (-1,)), Q(t.type_id))
        assert np.array_equal(_bits(expected), _bits(got)), t.name
        checked += 1
    assert checked == len(f.tensors)
