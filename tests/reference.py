"""A float64 reference forward pass, simple and slow, written from the GGUF tensors
directly (ggml's NORM rope for llama, NEOX for qwen2/gemma3), to check the engine."""

from __future__ import annotations

import math

import numpy as np

from assistant.core.gguf import open_gguf
from assistant.core.quants import dequantize


def _t(f, name):
    info = f.tensors[name]
    return dequantize(info.type_id, f.tensor_data(name), info.shape, name).astype(np.float64)


def _rms(x, w, eps):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def _rope(x, pos, base, neox):
    # x: (T, heads, hd)
    t, h, d = x.shape
    out = x.copy()
    for p in range(t):
        for i in range(d // 2):
            theta = (pos[p]) * base ** (-2.0 * i / d)
            c, s = math.cos(theta), math.sin(theta)
            if neox:
                a, b = x[p, :, i], x[p, :, i + d // 2]
                out[p, :, i], out[p, :, i + d // 2] = a * c - b * s, a * s + b * c
            else:
                a, b = x[p, :, 2 * i], x[p, :, 2 * i + 1]
                out[p, :, 2 * i], out[p, :, 2 * i + 1] = a * c - b * s, a * s + b * c
    return out


def reference_logits(path: str, ids: list[int]) -> np.ndarray:
    f = open_gguf(path)
    arch = f.architecture
    g = lambda k, d=None: f.metadata.get(f"{arch}.{k}", d)  # noqa: E731
    dim, n_layers = g("embedding_length"), g("block_count")
    nh, nkv = g("attention.head_count"), g("attention.head_count_kv")
    hd = g("attention.key_length", dim // nh)
    eps = g("attention.layer_norm_rms_epsilon")
    base = g("rope.freq_base", 10000.0)
    window = g("attention.sliding_window", 0) if arch == "gemma3" else 0
    emb = _t(f, "token_embd.weight")
    x = emb[ids]
    if arch == "gemma3":
        x = x * math.sqrt(dim)
    T = len(ids)
    pos = list(range(T))
    for layer in range(n_layers):
        p = f"blk.{layer}."
        h = _rms(x, _t(f, p + "attn_norm.weight"), eps)
        q = h @ _t(f, p + "attn_q.weight").T
        k = h @ _t(f, p + "attn_k.weight").T
        v = h @ _t(f, p + "attn_v.weight").T
        if arch == "qwen2":
            q += _t(f, p + "attn_q.bias")
            k += _t(f, p + "attn_k.bias")
            v += _t(f, p + "attn_v.bias")
        q = q.reshape(T, nh, hd)
        k = k.reshape(T, nkv, hd)
        v = v.reshape(T, nkv, hd)
        local = arch == "gemma3" and window > 0 and (layer + 1) % 6 != 0
        if arch == "gemma3":
            q = _rms(q, _t(f, p + "attn_q_norm.weight"), eps)
            k = _rms(k, _t(f, p + "attn_k_norm.weight"), eps)
        b = 10000.0 if local else base
        q = _rope(q, pos, b, arch != "llama")
        k = _rope(k, pos, b, arch != "llama")
        out = np.zeros((T, nh, hd))
        for head in range(nh):
            kv = head // (nh // nkv)
            s = q[:, head] @ k[:, kv].T / math.sqrt(hd)
            for i in range(T):
                for j in range(T):
                    if j > i or (local and i - j >= window):
                        s[i, j] = -np.inf
            s = np.exp(s - s.max(axis=1, keepdims=True))
            s /= s.sum(axis=1, keepdims=True)
            out[:, head] = s @ v[:, kv]
        a = out.reshape(T, nh * hd) @ _t(f, p + "attn_output.weight").T
        if arch == "gemma3":
            a = _rms(a, _t(f, p + "post_attention_norm.weight"), eps)
        x = x + a
        h = _rms(x, _t(f, p + "ffn_norm.weight"), eps)
        gate = h @ _t(f, p + "ffn_gate.weight").T
        up = h @ _t(f, p + "ffn_up.weight").T
        if arch == "gemma3":
            act = 0.5 * gate * (1 + np.tanh(math.sqrt(2 / math.pi) * (gate + 0.044715 * gate ** 3)))
        else:
            act = gate / (1 + np.exp(-gate))
        y = (act * up) @ _t(f, p + "ffn_down.weight").T
        if arch == "gemma3":
            y = _rms(y, _t(f, p + "post_ffw_norm.weight"), eps)
        x = x + y
    x = _rms(x, _t(f, "output_norm.weight"), eps)
    head_w = _t(f, "output.weight") if "output.weight" in f.tensors else emb
    return x @ head_w.T
