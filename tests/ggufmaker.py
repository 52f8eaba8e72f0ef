"""Tiny random GGUF models for tests, written with the `gguf` package's writer (an
independent implementation from ours: it makes fixtures, our reader must read them)."""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np
from gguf import GGMLQuantizationType as Q

BYTE_CHARS = None


def _bpe_vocab() -> tuple[list[str], list[int], list[str]]:
    """A byte-level BPE vocab: 3 control tokens, the 256 byte symbols, a few merges."""
    from assistant.core.tokenizer import BYTE_TO_UNICODE

    tokens = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    types = [3, 3, 3]
    tokens += BYTE_TO_UNICODE
    types += [1] * 256
    merges = ["Ġ t", "h e", "Ġt he", "i n", "Ġ a", "e r", "o n", "Ġ w", "r e", "a t"]
    for m in merges:
        tokens.append(m.replace(" ", ""))
        types.append(1)
    return tokens, types, merges


def _spm_vocab() -> tuple[list[str], list[float], list[int]]:
    tokens = ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>", "\n\n"]
    types = [3, 3, 3, 2, 3, 3, 4]
    scores = [0.0] * len(tokens)
    for b in range(256):
        tokens.append(f"<0x{b:02X}>")
        types.append(6)
        scores.append(0.0)
    words = ["▁", "e", "t", "a", "o", "▁t", "he", "▁the", "▁a", "in", "▁w", "er", "on", "h", "n", "i", "r", "w"]
    for i, w in enumerate(words):
        tokens.append(w)
        types.append(1)
        scores.append(-float(i))
    return tokens, scores, types


def _quantize(w: np.ndarray, qtype: Q) -> tuple[np.ndarray, Q]:
    if qtype == Q.F32:
        return w.astype(np.float32), qtype
    return gguf.quants.quantize(w.astype(np.float32), qtype), qtype


def make_model(path: Path, arch: str = "llama", n_layers: int = 2, dim: int = 64, n_heads: int = 4,
               n_kv: int = 2, ffn: int = 96, qtype: Q = Q.F32, seed: int = 0, tied: bool = True,
               n_ctx: int = 256) -> Path:
    """Write a tiny random model of ``arch`` (llama, qwen2 or gemma3) and return its path."""
    rng = np.random.default_rng(seed)
    w = gguf.GGUFWriter(str(path), arch)
    head_dim = 32 if arch == "gemma3" else dim // n_heads
    w.add_block_count(n_layers)
    w.add_context_length(n_ctx)
    w.add_embedding_length(dim)
    w.add_feed_forward_length(ffn)
    w.add_head_count(n_heads)
    w.add_head_count_kv(n_kv)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_freq_base(10000.0)
    if arch == "gemma3":
        w.add_key_length(head_dim)
        w.add_value_length(head_dim)
        w.add_sliding_window(8)
        tokens, scores, types = _spm_vocab()
        w.add_tokenizer_model("llama")
        w.add_tokenizer_pre("default")
        w.add_token_list(tokens)
        w.add_token_scores(scores)
        w.add_token_types(types)
        w.add_bos_token_id(2)
        w.add_eos_token_id(1)
        w.add_add_bos_token(True)
        w.add_add_space_prefix(False)
    else:
        tokens, types, merges = _bpe_vocab()
        w.add_tokenizer_model("gpt2")
        w.add_tokenizer_pre("qwen2" if arch == "qwen2" else "smollm")
        w.add_token_list(tokens)
        w.add_token_types(types)
        w.add_token_merges(merges)
        w.add_bos_token_id(1)
        w.add_eos_token_id(2)
        w.add_add_bos_token(False)
    n_vocab = len(tokens)
    w.add_vocab_size(n_vocab)

    def mat(rows: int, cols: int, scale: float = 0.08) -> np.ndarray:
        return (rng.standard_normal((rows, cols)) * scale).astype(np.float32)

    def add(name: str, arr: np.ndarray, quant: bool = True) -> None:
        data, t = _quantize(arr, qtype if quant and arr.ndim == 2 else Q.F32)
        if t == Q.F32:
            w.add_tensor(name, data)
        else:
            w.add_tensor(name, data, raw_shape=data.shape, raw_dtype=t)

    add("token_embd.weight", mat(n_vocab, dim, 0.5))
    add("output_norm.weight", (1 + 0.1 * rng.standard_normal(dim)).astype(np.float32), False)
    if not tied:
        add("output.weight", mat(n_vocab, dim))
    for i in range(n_layers):
        p = f"blk.{i}."
        add(p + "attn_norm.weight", (1 + 0.1 * rng.standard_normal(dim)).astype(np.float32), False)
        add(p + "attn_q.weight", mat(n_heads * head_dim, dim))
        add(p + "attn_k.weight", mat(n_kv * head_dim, dim))
        add(p + "attn_v.weight", mat(n_kv * head_dim, dim))
        add(p + "attn_output.weight", mat(dim, n_heads * head_dim))
        add(p + "ffn_norm.weight", (1 + 0.1 * rng.standard_normal(dim)).astype(np.float32), False)
        add(p + "ffn_gate.weight", mat(ffn, dim))
        add(p + "ffn_up.weight", mat(ffn, dim))
        add(p + "ffn_down.weight", mat(dim, ffn))
        if arch == "qwen2":
            for n, size in (("q", n_heads * head_dim), ("k", n_kv * head_dim), ("v", n_kv * head_dim)):
                add(p + f"attn_{n}.bias", (0.1 * rng.standard_normal(size)).astype(np.float32), False)
        if arch == "gemma3":
            add(p + "attn_q_norm.weight", (1 + 0.1 * rng.standard_normal(head_dim)).astype(np.float32), False)
            add(p + "attn_k_norm.weight", (1 + 0.1 * rng.standard_normal(head_dim)).astype(np.float32), False)
            add(p + "post_attention_norm.weight", (1 + 0.1 * rng.standard_normal(dim)).astype(np.float32), False)
            add(p + "post_ffw_norm.weight", (1 + 0.1 * rng.standard_normal(dim)).astype(np.float32), False)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path
