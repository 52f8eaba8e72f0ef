"""The inference core: tiny random models of each architecture, then the real ones
against llama.cpp's golden logits and a float64 reference."""

from __future__ import annotations

import numpy as np
import pytest

from assistant.core.engine import Model
from assistant.core.gguf import open_gguf
from assistant.core.models import build_model
from conftest import REAL_MODELS, golden, golden_top32, real_model_path
from reference import reference_logits

ARCHS = ("llama", "qwen2", "gemma3")


@pytest.mark.parametrize("arch", ARCHS)
def test_tiny_model_shapes_and_dtypes(tiny_models, arch):
    m = Model(str(tiny_models[arch]), n_ctx=64)
    ids = [5, 17, 42, 99, 7, 3, 250, 11]
    logits = m.logits(ids)
    assert logits.shape == (len(ids), m.n_vocab)
    assert logits.dtype == np.float32
    assert np.all(np.isfinite(logits))
    cache = m.net.new_cache(16)
    m.net.forward(np.array(ids[:3], dtype=np.int32), cache)
    assert all(k.dtype == np.float32 for k in cache.k)


@pytest.mark.parametrize("arch", ARCHS)
def test_cache_and_batching_give_the_same_logits(tiny_models, arch):
    m = Model(str(tiny_models[arch]), n_ctx=64)
    ids = np.array([5, 17, 42, 99, 7, 3, 250, 11, 60, 61, 62, 63], dtype=np.int32)
    full = m.logits(list(ids))
    # One token at a time through the KV cache.
    cache = m.net.new_cache(32)
    steps = np.concatenate([m.net.forward(ids[i:i + 1], cache) for i in range(len(ids))])
    np.testing.assert_allclose(steps, full, atol=2e-4, rtol=0)
    # Uneven prefill chunks.
    m.net.prefill_chunk = 5
    cache = m.net.new_cache(32)
    chunked = m.net.forward(ids, cache, all_logits=True)
    np.testing.assert_allclose(chunked, full, atol=2e-4, rtol=0)


@pytest.mark.parametrize("arch", ARCHS)
def test_tiny_model_matches_float64_reference(tiny_models, arch):
    ids = [5, 17, 42, 99, 7, 3, 250, 11, 12, 13, 14, 15]  # longer than gemma's window of 8
    ours = Model(str(tiny_models[arch]), n_ctx=64).logits(ids)
    ref = reference_logits(str(tiny_models[arch]), ids)
    assert np.abs(ours - ref).max() < 1e-3


@pytest.mark.parametrize("arch", ARCHS)
def test_lean_mode_matches_speed_mode(tmp_path, arch, monkeypatch):
    """Lean mode's float32 kernels give speed mode's logits; its integer kernels (int8
    activations, as llama.cpp rounds them) stay within that rounding."""
    from gguf import GGMLQuantizationType as Q
    from ggufmaker import make_model

    from assistant.core import kernels

    path = make_model(tmp_path / "q.gguf", arch=arch, qtype=Q.Q4_1, seed=5)
    ids = [5, 17, 42, 99, 7]
    speed = Model(str(path), memory="speed", n_ctx=32).logits(ids)
    monkeypatch.setattr(kernels, "INT8_ACTIVATIONS", False)
    lean = Model(str(path), memory="lean", n_ctx=32).logits(ids)
    np.testing.assert_allclose(lean, speed, atol=1e-4, rtol=0)
    monkeypatch.setattr(kernels, "INT8_ACTIVATIONS", True)
    ints = Model(str(path), memory="lean", n_ctx=32).logits(ids)
    assert np.abs(ints - speed).max() <= 0.02 * np.abs(speed).max()
    assert (ints.argmax(-1) == speed.argmax(-1)).mean() >= 0.8


def test_unknown_architecture_lists_supported(tmp_path):
    import gguf

    w = gguf.GGUFWriter(str(tmp_path / "x.gguf"), "mamba")
    w.add_tensor("token_embd.weight", np.zeros((4, 32), dtype=np.float32))
    w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()
    with pytest.raises(ValueError, match="'mamba' is not supported; supported: gemma2, gemma3, llama, phi3, qwen2, qwen3, smollm3"):
        build_model(open_gguf(str(tmp_path / "x.gguf")))


# ----------------------------------------------------------------------------- real models

_models: dict = {}


def real(name):
    if name not in _models:
        _models.clear()  # keep one real model in memory at a time
        _models[name] = Model(str(real_model_path(name)), n_ctx=512, name=name)
    return _models[name]


@pytest.mark.real_model
@pytest.mark.slow
@pytest.mark.parametrize("model", sorted(REAL_MODELS))
def test_teacher_forced_agreement_with_llama_cpp(model):
    """Top-1 equal wherever llama.cpp leads by >= 0.5; its top-5 logits within 1.5; at the
    first step its top-32 logits within 1.5, and no other token of ours above its 32nd + 1.5
    (what the whole-vocabulary bound implies outside the top 32 that the goldens keep)."""
    m = real(model)
    g = golden(model)
    top_ids, top_logits = golden_top32(model)
    assert len(top_ids) == len(g["generate"])
    checked = 0
    for ci, case in enumerate(g["generate"]):
        ids = case["prompt_ids"] + case["greedy_ids"]
        logits = m.logits(ids)
        p = len(case["prompt_ids"])
        first = logits[p - 1]
        assert np.abs(first[top_ids[ci]] - top_logits[ci]).max() < 1.5, ci
        rest = np.delete(first, top_ids[ci])
        assert rest.max() < top_logits[ci].min() + 1.5, ci
        for step, top5 in enumerate(case["top5_per_step"]):
            row = logits[p - 1 + step]
            if top5[0][1] - top5[1][1] >= 0.5:
                assert int(np.argmax(row)) == top5[0][0], (ci, step)
                checked += 1
            for tid, lg in top5:
                assert abs(float(row[tid]) - lg) <= 1.5, (ci, step, tid)
    assert checked > 50


@pytest.mark.real_model
@pytest.mark.slow
@pytest.mark.parametrize("model", sorted(REAL_MODELS))
def test_real_model_matches_float64_reference(model, monkeypatch):
    """The float32 kernels reproduce the float64 reference; the integer ones (int8
    activations: 2-5% of the logits' scale on these prompts) keep every top choice."""
    from assistant.core import kernels

    m = real(model)
    ids = golden(model)["generate"][1]["prompt_ids"]
    ref = reference_logits(str(real_model_path(model)), ids)
    monkeypatch.setattr(kernels, "INT8_ACTIVATIONS", False)
    assert np.abs(m.logits(ids) - ref).max() < 0.05
    monkeypatch.setattr(kernels, "INT8_ACTIVATIONS", True)
    ints = m.logits(ids)
    assert np.abs(ints - ref).max() < 0.06 * np.abs(ref).max()
    assert np.array_equal(ints.argmax(-1), ref.argmax(-1))


@pytest.mark.real_model
@pytest.mark.parametrize("model", sorted(REAL_MODELS))
def test_greedy_generation_matches_llama_cpp(model):
    """Greedy decoding through the KV cache reproduces llama.cpp's tokens up to the first
    near-tie (where llama.cpp's own top-2 are within 0.5, either choice is right)."""
    from assistant.core.engine import GenerationSettings
    from assistant.core.sampling import SamplingSettings

    m = real(model)
    compared = 0
    for case in golden(model)["generate"][:4]:
        margins = [s[0][1] - s[1][1] for s in case["top5_per_step"]]
        n = next((i for i, x in enumerate(margins) if x < 0.5), len(margins))
        if n == 0:
            continue
        m.reset()
        out = [p.token for p in m.generate(case["prompt_ids"], GenerationSettings(
            max_tokens=n, sampling=SamplingSettings(temperature=0), ignore_eos=True)) if not p.done]
        assert out == case["greedy_ids"][:n]
        compared += n
    assert compared >= 5


@pytest.mark.real_model
@pytest.mark.parametrize("model", ["qwen2.5-coder", "gemma3-270m"])
def test_lean_k_quants_are_exact_and_small(model, monkeypatch):
    """Q4_K_M files (Q4_K, Q6_K and friends) stay int8 codes in lean mode: every matrix,
    fused ones mixing 32- and 16-row groups included, and give speed mode's logits (within
    int8 activations' rounding on the integer kernels)."""
    from assistant.core import kernels
    from assistant.core.gguf import open_gguf
    from assistant.core.weights import QuantLinear

    path = str(real_model_path(model))
    ids = [1, 2, 3, 100, 200, 300, 400, 500]
    lean = Model(path, memory="lean", n_ctx=32)
    want = Model(path, memory="speed", n_ctx=32).logits(ids)
    monkeypatch.setattr(kernels, "INT8_ACTIVATIONS", False)
    got = lean.logits(ids)
    np.testing.assert_allclose(got, want, atol=2e-3 * np.abs(want).max(), rtol=0)
    assert np.array_equal(np.argmax(got, axis=-1), np.argmax(want, axis=-1))
    monkeypatch.setattr(kernels, "INT8_ACTIVATIONS", True)
    ints = lean.logits(ids)
    assert np.abs(ints - want).max() < 0.06 * np.abs(want).max()
    assert (np.argmax(ints, axis=-1) == np.argmax(want, axis=-1)).mean() >= 0.85
    for b in lean.net._blocks:
        assert len(b.linears()) == 4  # q/k/v, output, gate/up, down
        for lin in b.linears():
            assert isinstance(lin, QuantLinear)
    assert isinstance(lean.net.head(), QuantLinear)
    f = open_gguf(path)
    file_weight_bytes = sum(t.n_bytes for t in f.tensors.values())
    assert lean.net.weight_bytes <= 2.5 * file_weight_bytes
