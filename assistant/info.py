"""``assistant info``: a readable summary of a GGUF model file."""

from __future__ import annotations

from collections import Counter
from typing import Any

from .config import ModelEntry
from .diagnostics import kernels_line
from .core.gguf import open_gguf


def model_summary(path: str, entry: ModelEntry | None = None) -> dict[str, Any]:
    f = open_gguf(path)
    arch = f.architecture
    p = arch + "."
    quant_bytes: Counter[str] = Counter()
    quant_count: Counter[str] = Counter()
    n_params = 0
    for t in f.tensors.values():
        quant_bytes[t.type_name] += t.n_bytes
        quant_count[t.type_name] += 1
        n_params += t.n_elements
    tokens = f.get_strings("tokenizer.ggml.tokens")
    from .loading import choose_memory_mode
    from .core.kernels import status as kernel_status

    return {
        "path": path,
        "name": f.get_str("general.name", ""),
        "architecture": arch,
        "gguf_version": f.version,
        "file_bytes": f.file_size,
        "parameters": n_params,
        "layers": f.get_int(p + "block_count", 0),
        "embedding": f.get_int(p + "embedding_length", 0),
        "heads": f.get_int(p + "attention.head_count", 0),
        "kv_heads": f.get_int(p + "attention.head_count_kv", 0),
        "ffn": f.get_int(p + "feed_forward_length", 0),
        "context_length": f.get_int(p + "context_length", 0),
        "rope_base": f.get_float(p + "rope.freq_base", 10000.0),
        "vocab_size": len(tokens),
        "tokenizer": f.get_str("tokenizer.ggml.model", ""),
        "pre_tokenizer": f.get_str("tokenizer.ggml.pre", ""),
        "chat_template": bool(f.get_str("tokenizer.chat_template", "")),
        "tensors": len(f.tensors),
        "quant_mix": {k: {"tensors": quant_count[k], "bytes": quant_bytes[k]} for k in sorted(quant_bytes)},
        "memory_mode": choose_memory_mode(entry.memory if entry else "auto", n_params),
        "kernels": kernel_status(),
        "model_entry": entry.name if entry else None,
    }


def render_summary(s: dict[str, Any]) -> str:
    rows = [
        ("file", s["path"]), ("name", s["name"]), ("architecture", s["architecture"]),
        ("parameters", f"{s['parameters'] / 1e6:.1f} M"), ("file size", f"{s['file_bytes'] / 1e6:.1f} MB"),
        ("layers", s["layers"]), ("embedding", s["embedding"]), ("heads / kv heads", f"{s['heads']} / {s['kv_heads']}"),
        ("feed-forward", s["ffn"]), ("context (trained)", s["context_length"]), ("rope base", s["rope_base"]),
        ("vocabulary", f"{s['vocab_size']} ({s['tokenizer']}, pre={s['pre_tokenizer'] or '-'})"),
        ("chat template", "yes" if s["chat_template"] else "no"), ("memory mode (auto)", s["memory_mode"]),
        ("kernels", kernels_line(s["kernels"])),
    ]
    width = max(len(k) for k, _ in rows)
    out = [f"{k:<{width}}  {v}" for k, v in rows]
    out.append("")
    out.append(f"{'type':<8}{'tensors':>9}{'MB':>10}")
    for t, d in s["quant_mix"].items():
        out.append(f"{t:<8}{d['tensors']:>9}{d['bytes'] / 1e6:>10.1f}")
    return "\n".join(out)
