"""Decode speed and peak memory at the scale people chat at: a random-weight ~1.1B llama
in Q4_0 (TinyLlama's shape), ours beside llama.cpp, in one run.

    python benchmarks/synthetic_scale.py [--gen 64] [--prompt 128] [--rounds 3]

The file (about 620 MB) is written into a temporary directory and removed afterwards.
Weights are random 4-bit codes with small float16 scales: the arithmetic and the bytes
streamed per token are those of a real Q4_0 file, the text it writes is noise. llama.cpp
runs through llama-cpp-python as in compare_llamacpp.py (LLAMA_CPP_PYTHON).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from compare_llamacpp import LLAMA_SNIPPET, OURS_PAIR, sh  # noqa: E402

SHAPE = {"dim": 2048, "layers": 22, "heads": 32, "kv_heads": 4, "ffn": 5632, "vocab": 32000}


def q4_0(rng: np.random.Generator, rows: int, cols: int) -> np.ndarray:
    """Random Q4_0 blocks ``(rows, cols // 32 * 18)``: a float16 scale, 16 bytes of codes."""
    blocks = rng.integers(0, 256, size=(rows * cols // 32, 18), dtype=np.uint8)
    d = (rng.uniform(0.5, 1.5, size=(rows * cols // 32, 1)) / np.sqrt(cols) / 4).astype(np.float16)
    blocks[:, 0:2] = d.view(np.uint8)
    return blocks.reshape(rows, -1)


def write_model(path: str, seed: int = 0) -> None:
    import gguf
    from gguf import GGMLQuantizationType as Q

    s = SHAPE
    rng = np.random.default_rng(seed)
    w = gguf.GGUFWriter(path, "llama")
    w.add_name("synthetic-1.1b")
    w.add_context_length(2048)
    w.add_embedding_length(s["dim"])
    w.add_block_count(s["layers"])
    w.add_feed_forward_length(s["ffn"])
    w.add_head_count(s["heads"])
    w.add_head_count_kv(s["kv_heads"])
    w.add_rope_dimension_count(s["dim"] // s["heads"])
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_freq_base(10000.0)
    # A SentencePiece-style vocabulary: control tokens, the 256 byte pieces, filler pieces.
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    tokens += [f"\u2581w{i}" for i in range(s["vocab"] - len(tokens))]
    types = [2, 3, 3] + [6] * 256 + [1] * (s["vocab"] - 259)
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores([0.0] * 3 + [0.0] * 256 + [-float(i) for i in range(s["vocab"] - 259)])
    w.add_token_types(types)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    hd = s["dim"] // s["heads"]

    def mat(name: str, rows: int, cols: int) -> None:
        raw = q4_0(rng, rows, cols)
        w.add_tensor(name, raw, raw_shape=raw.shape, raw_dtype=Q.Q4_0)

    mat("token_embd.weight", s["vocab"], s["dim"])
    w.add_tensor("output_norm.weight", np.ones(s["dim"], dtype=np.float32))
    mat("output.weight", s["vocab"], s["dim"])
    for i in range(s["layers"]):
        p = f"blk.{i}."
        w.add_tensor(p + "attn_norm.weight", np.ones(s["dim"], dtype=np.float32))
        w.add_tensor(p + "ffn_norm.weight", np.ones(s["dim"], dtype=np.float32))
        mat(p + "attn_q.weight", s["dim"], s["dim"])
        mat(p + "attn_k.weight", s["kv_heads"] * hd, s["dim"])
        mat(p + "attn_v.weight", s["kv_heads"] * hd, s["dim"])
        mat(p + "attn_output.weight", s["dim"], s["dim"])
        mat(p + "ffn_gate.weight", s["ffn"], s["dim"])
        mat(p + "ffn_up.weight", s["ffn"], s["dim"])
        mat(p + "ffn_down.weight", s["dim"], s["ffn"])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompt", type=int, default=128)
    ap.add_argument("--gen", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    llama_py = os.environ.get("LLAMA_CPP_PYTHON", "/tmp/llamacpp/venv/bin/python")
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "synthetic-1.1b.q4_0.gguf")
        t = time.perf_counter()
        write_model(path)
        print(f"wrote {os.path.getsize(path) / 1e6:.0f} MB in {time.perf_counter() - t:.0f} s; shape {SHAPE}")
        env = dict(os.environ, ASSISTANT_THREADS=str(args.threads))
        rows: dict[str, list[float]] = {"decode": [], "prefill": [], "peak RSS": []}
        for r in range(args.rounds):
            mine = sh([sys.executable, "-c", OURS_PAIR, path, str(args.prompt), str(args.gen), "lean"], env=env)
            line = (f"round {r + 1}: ours prefill {mine['prefill_tps']:.1f} tok/s, decode {mine['decode_tps']:.2f} tok/s, "
                    f"peak RSS {mine['peak_rss_mb']:.0f} MB")
            if os.path.exists(llama_py):
                theirs = sh([llama_py, "-c", LLAMA_SNIPPET, path, str(args.prompt), str(args.gen), str(args.threads),
                             "[]", "1"])
                rows["decode"].append(mine["decode_tps"] / theirs["decode_tps"])
                rows["prefill"].append(mine["prefill_tps"] / theirs["prefill_tps"])
                rows["peak RSS"].append(mine["peak_rss_mb"] / theirs["peak_rss_mb"])
                line += (f"; llama.cpp prefill {theirs['prefill_tps']:.1f}, decode {theirs['decode_tps']:.2f}, "
                         f"peak RSS {theirs['peak_rss_mb']:.0f} MB")
            print(line)
        for key, ratios in rows.items():
            if ratios:
                print(f"{key}, ours / llama.cpp: " + ", ".join(f"{x:.2f}x" for x in ratios)
                      + f"; median {statistics.median(ratios):.2f}x")
        from assistant.bench import bytes_per_token, memory_bandwidth_gbs
        from assistant.core.engine import Model

        m = Model(path, n_ctx=args.prompt + args.gen + 8)
        m.net.prepare()
        bw = memory_bandwidth_gbs()
        per_token = bytes_per_token(m, args.prompt + args.gen // 2)
        print(f"memory floor: {per_token / 1e6:.0f} MB per token at {bw:.1f} GB/s = {bw * 1e9 / per_token:.2f} tok/s")


if __name__ == "__main__":
    main()
