"""Regenerate llama.cpp's golden outputs for the real models, with llama-cpp-python.

Runs in a scratch virtual environment outside the project (llama-cpp-python is not one of
its dependencies), then scripts/compact_goldens.py turns the output into tests/data/golden/:

    python3 -m venv /tmp/llamacpp/venv
    /tmp/llamacpp/venv/bin/pip install numpy llama-cpp-python==0.3.36
    /tmp/llamacpp/venv/bin/python scripts/llamacpp_goldens.py /tmp/golden [MODEL ...]
    .venv/bin/python scripts/compact_goldens.py /tmp/golden

The inputs (tokenizer texts, prompts, kinds) are read from the committed
tests/data/golden/<model>.json, so a rerun recomputes llama.cpp's side of the same cases.
Chat prompts are stored already rendered (the GGUF's own template, add_generation_prompt).
Models come from the model cache that `assistant pull --all` fills ($ASSISTANT_MODELS_DIR,
default ~/.cache/assistant/models). Settings: llama.cpp's defaults (float16 KV cache, no
flash attention), n_ctx 2048, n_batch 512, 2 threads, greedy, at most 48 tokens per case,
stopping after an end-of-generation token (which is kept in greedy_ids).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
from llama_cpp import Llama

REPO = Path(__file__).resolve().parents[1]
MODELS = {  # golden name -> file in the model cache
    "smollm2-135m-instruct-q4_1": "SmolLM2-135M-Instruct.Q4_1.gguf",
    "qwen2.5-coder-0.5b-instruct-q4_k_m": "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
    "gemma-3-270m-q4_k_m": "gemma-3-270m-q4_k_m.gguf",
}
MAX_TOKENS = 48
EOG_PIECES = ("<|im_end|>", "<|endoftext|>", "<end_of_turn>", "<eos>", "</s>")


def last_logits(llm: Llama) -> np.ndarray:
    return np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(llm.n_vocab(),)).astype(np.float32)


def generate(llm: Llama, case: dict, index: int, full: dict) -> dict:
    ids = llm.tokenize(case["prompt"].encode(), add_bos=True, special=True)
    llm.reset()
    llm.eval(ids)
    out, top5 = [], []
    for step in range(MAX_TOKENS):
        logits = last_logits(llm)
        if step == 0:
            full[f"case{index}"] = logits
        order = np.argsort(-logits, kind="stable")[:5]
        top5.append([[int(t), round(float(logits[t]), 4)] for t in order])
        tok = int(order[0])
        out.append(tok)
        piece = llm.detokenize([tok], special=True).decode("utf-8", "replace")
        if tok == llm.token_eos() or piece in EOG_PIECES:
            break
        llm.eval([tok])
    text = llm.detokenize([t for t in out if t != llm.token_eos()]).decode("utf-8", "replace")
    for piece in EOG_PIECES:
        text = text.removesuffix(piece)
    return {"kind": case["kind"], "prompt": case["prompt"], "prompt_ids": ids, "greedy_ids": out,
            "greedy_text": text, "top5_per_step": top5}


def main() -> None:
    out_dir = Path(sys.argv[1] if len(sys.argv) > 1 else "golden-out")
    only = sys.argv[2:]  # golden names to redo; all by default
    out_dir.mkdir(parents=True, exist_ok=True)
    cache = Path(os.environ.get("ASSISTANT_MODELS_DIR", Path.home() / ".cache/assistant/models"))
    for name, file in MODELS.items():
        if only and name not in only:
            continue
        old = json.loads((REPO / "tests/data/golden" / f"{name}.json").read_text(encoding="utf-8"))
        llm = Llama(model_path=str(cache / file), n_ctx=2048, n_batch=512, n_threads=2, n_threads_batch=2,
                    seed=0, verbose=False)
        tokenize = []
        for c in old["tokenize"]:
            raw = c["text"].encode()
            tokenize.append({"text": c["text"],
                             "ids_plain": llm.tokenize(raw, add_bos=False, special=False),
                             "ids_special": llm.tokenize(raw, add_bos=False, special=True),
                             "ids_with_bos": llm.tokenize(raw, add_bos=True, special=False)})
        full: dict[str, np.ndarray] = {}
        cases = [generate(llm, c, i, full) for i, c in enumerate(old["generate"])]
        keep = {k: old[k] for k in ("model", "file_sha256", "arch", "add_bos", "bos_id", "eos_id", "n_vocab")}
        (out_dir / f"{name}.json").write_text(json.dumps({**keep, "tokenize": tokenize, "generate": cases},
                                                         ensure_ascii=False, indent=1), encoding="utf-8")
        np.savez_compressed(out_dir / f"{name}.logits.npz", **full)
        print(f"{name}: {len(tokenize)} tokenizer cases, {len(cases)} generation cases")
        del llm


if __name__ == "__main__":
    main()
