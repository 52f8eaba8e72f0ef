"""The numeric building blocks: the decoding fast paths agree with the general ones."""

from __future__ import annotations

import math

import numpy as np
import pytest

from assistant.core.ops import Rope, attention, rms_norm


def test_single_row_rms_norm_matches_the_batched_one():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((5, 576)).astype(np.float32)
    w = rng.standard_normal(576).astype(np.float32)
    batched = rms_norm(x, w, 1e-5)
    for i in range(5):
        one = rms_norm(x[i:i + 1], w, 1e-5)
        assert one.dtype == np.float32
        np.testing.assert_allclose(one[0], batched[i], rtol=2e-6, atol=2e-6)


def test_rotation_matrix_path_matches_elementwise_rope():
    """Decoding rotates one row per head with a cached rotation matrix; prefill rotates
    elementwise. Both must agree, with partial rotary dims left alone."""
    rng = np.random.default_rng(2)
    for head_dim, n_rot in ((64, 64), (128, 64)):
        rope = Rope(head_dim, n_rot, 10000.0)
        x = rng.standard_normal((6, 40, head_dim)).astype(np.float32)
        whole = rope.apply(x.copy(), 100)  # elementwise: positions 100 .. 139
        for t in (0, 17, 39):
            one = rope.apply(x[:, t:t + 1].copy(), 100 + t)  # matrix path
            np.testing.assert_allclose(one[:, 0], whole[:, t], rtol=1e-5, atol=1e-5)
        same = rope.apply(x[:, :3].copy(), 120, same_position=True)  # parallel rows at one position
        np.testing.assert_allclose(same[:, 2], rope.apply(x[:, 2:3].copy(), 120)[:, 0], rtol=1e-6, atol=1e-6)


def _reference_attention(q, k, v, pos, scale, window=0, softcap=0.0):
    """Plain float64 causal grouped-query attention, one query row at a time."""
    n_heads, t, hd = q.shape
    group = n_heads // k.shape[0]
    out = np.zeros((t, n_heads, hd))
    for h in range(n_heads):
        kh, vh = k[h // group].astype(np.float64), v[h // group].astype(np.float64)
        for i in range(t):
            p = pos + i
            lo = max(0, p - window + 1) if window else 0
            s = kh[lo:p + 1] @ q[h, i].astype(np.float64) * scale
            if softcap:
                s = softcap * np.tanh(s / softcap)
            w = np.exp(s - s.max())
            out[i, h] = (w / w.sum()) @ vh[lo:p + 1]
    return out.reshape(t, n_heads * hd)


def test_attention_matches_a_float64_reference():
    """Causal grouped-query attention, with and without a sliding window, for prompt
    chunks after cached positions (computed in row blocks, each against only the keys it
    can see) and for one decoding row (query groups of 2-3 heads padded to 4 rows)."""
    rng = np.random.default_rng(3)
    for n_heads, n_kv, hd, pos, t, window in (
            (6, 2, 16, 40, 200, 0), (4, 1, 32, 10, 90, 37), (4, 1, 16, 100, 130, 50),  # prompt chunks, row blocks
            (4, 1, 16, 300, 200, 150),  # window band and causal triangle masked apart
            (6, 3, 16, 99, 1, 0), (9, 3, 16, 50, 1, 0), (6, 2, 16, 60, 1, 20),  # decoding rows padded to 4
            (14, 2, 16, 30, 1, 0), (4, 4, 16, 30, 1, 0)):  # 7 and 1 rows: not padded
        s = pos + t
        q = rng.standard_normal((n_heads, t, hd)).astype(np.float32)
        k = rng.standard_normal((n_kv, s, hd)).astype(np.float32)
        v = rng.standard_normal((n_kv, s, hd)).astype(np.float32)
        got = attention(q, k, v, pos, 1 / math.sqrt(hd), window)
        assert got.dtype == np.float32 and got.shape == (t, n_heads * hd)
        np.testing.assert_allclose(got, _reference_attention(q, k, v, pos, 1 / math.sqrt(hd), window),
                                   rtol=2e-5, atol=2e-5)


def test_soft_capped_attention_matches_a_float64_reference():
    """Gemma 2's soft-cap on the scaled scores, before the mask: in a windowed prompt chunk
    and in a decoding row padded to 4."""
    rng = np.random.default_rng(4)
    for n_heads, n_kv, hd, pos, t, window in ((4, 2, 32, 20, 150, 8), (4, 2, 32, 60, 1, 8), (4, 2, 32, 60, 1, 0)):
        q = (3 * rng.standard_normal((n_heads, t, hd))).astype(np.float32)  # scores well past the cap
        k = rng.standard_normal((n_kv, pos + t, hd)).astype(np.float32)
        v = rng.standard_normal((n_kv, pos + t, hd)).astype(np.float32)
        got = attention(q, k, v, pos, 1 / math.sqrt(hd), window, softcap=5.0)
        want = _reference_attention(q, k, v, pos, 1 / math.sqrt(hd), window, softcap=5.0)
        np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-5)
        assert np.abs(got - _reference_attention(q, k, v, pos, 1 / math.sqrt(hd), window)).max() > 0.1


def test_gated_activations_match_float64_without_overflow_warnings():
    """GELU runs as x / (1 + exp(-2z)), the same function as 0.5 x (1 + tanh(z)), and SiLU
    as x / (1 + exp(-x)); huge negative inputs must give -0, not warnings or NaN."""
    import warnings

    from assistant.core.ops import gelu_tanh, swiglu

    rng = np.random.default_rng(5)
    x = (rng.standard_normal((64, 300)) * 4).astype(np.float32)
    x[0, :8] = [-1e4, -100, -30, -10, 0, 10, 100, 1e4]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = gelu_tanh(x)
    x64 = x.astype(np.float64)
    with np.errstate(over="ignore"):
        ref = 0.5 * x64 * (1 + np.tanh(math.sqrt(2 / math.pi) * (x64 + 0.044715 * x64 ** 3)))
    assert got.dtype == np.float32 and np.isfinite(got).all()
    np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-6)
    up = rng.standard_normal(x.shape).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        silu = swiglu(np.concatenate([x, up], axis=1), x.shape[1])
    with np.errstate(over="ignore"):
        ref = x64 / (1 + np.exp(-x64)) * up
    assert np.isfinite(silu).all()
    np.testing.assert_allclose(silu, ref, rtol=1e-6, atol=1e-6)


def test_attention_masks_cached_for_long_prompts_stay_bounded():
    """Every layer of a chunk reuses its masks, but a long prompt's masks (one per row
    block and chunk) must not pile up."""
    from assistant.core import ops

    rng = np.random.default_rng(6)
    n_ctx, hd = 6000, 8
    k = rng.standard_normal((1, n_ctx, hd)).astype(np.float32)
    v = rng.standard_normal((1, n_ctx, hd)).astype(np.float32)
    for pos in range(0, n_ctx - 256, 256):
        q = rng.standard_normal((2, 256, hd)).astype(np.float32)
        attention(q, k[:, :pos + 256], v[:, :pos + 256], pos, 0.3)
        held = sum(m.nbytes for m in list(ops._masks.values()))
        assert held <= 8 << 20, (pos, held)


@pytest.mark.parametrize("heads,kv,window,softcap", [
    (14, 2, 0, 0.0),   # Qwen's groups of 7: one KV head per thread
    (9, 3, 0, 0.0),    # SmolLM2's 3 KV heads over 2 threads: each group cut in two
    (4, 1, 40, 0.0),   # Gemma's one KV head, a sliding window
    (4, 2, 0, 30.0),   # Gemma 2's soft-capped scores
])
def test_prompt_attention_on_threads_matches_one_call(monkeypatch, heads, kv, window, softcap):
    """Prompt attention split over the kernels' threads (heads, or parts of a group, per
    thread) gives what one call gives, for any number of threads."""
    from assistant.core import kernels, transformer

    rng = np.random.default_rng(heads)
    t, pos, hd = 160, 900, 16  # above ATTENTION_THREADS_MIN (mypyc compiles the constant in)
    assert t * (pos + t) >= transformer.ATTENTION_THREADS_MIN
    q = rng.standard_normal((heads, t, hd)).astype(np.float32)
    k = rng.standard_normal((kv, pos + t, hd)).astype(np.float32)
    v = rng.standard_normal((kv, pos + t, hd)).astype(np.float32)
    want = attention(q, k, v, pos, 0.25, window, softcap)
    for n in (1, 2, 3):
        monkeypatch.setattr(kernels, "thread_count", lambda n=n: n)
        monkeypatch.setattr(transformer, "_pools", {})  # so the check below sees this call's pool
        got = transformer._attend_on_threads(q, k, v, pos, 0.25, window, softcap)
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
        assert (n in transformer._pools) == (n > 1)  # the split ran on a pool of n threads
