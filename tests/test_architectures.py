"""Every architecture against llama.cpp on tiny random-weight fixtures (tests/data/architectures).

Each fixture comes as F32 and as Q8_0; llama.cpp's logits on four teacher-forced sequences
(12, 40, 100 and 200 tokens) and its greedy continuation are the goldens (see that folder's
README). The criteria are issue 17's:

* F32: every logit within 0.3 of llama.cpp's; no top-1 disagreement where llama.cpp's margin
  is >= 0.25 (a float64 reference reaches 0.02-0.13; one wrong detail moves logits 0.7-60);
* Q8_0 (llama.cpp quantizes activations to 8 bits there; we do not): no top-1 disagreement
  where the margin is >= 1.5, at most 3% where it is >= 0.5;
* greedy continuations equal llama.cpp's on the F32 files.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import gguf
import numpy as np
import pytest

from assistant.core.engine import Model
from assistant.core.gguf import open_gguf
from assistant.core.gguf_writer import TensorToWrite, write_gguf
from assistant.core.models import build_model
from assistant.core.ops import Rope

DATA = Path(__file__).resolve().parent / "data" / "architectures"
NAMES = ("llama", "qwen3", "gemma2", "phi3", "phi3-longrope", "smollm3")
MEMORY = ("speed", "lean")
N_SEQ = 4


@lru_cache(maxsize=None)
def goldens(name: str) -> tuple[dict, dict[str, np.ndarray]]:
    meta = json.loads((DATA / f"{name}.json").read_text())
    with np.load(DATA / f"{name}.npz") as z:
        return meta, {k: z[k] for k in z.files}


@lru_cache(maxsize=None)
def head_matrix(name: str) -> np.ndarray:
    """The F32 file's output matrix ``(n_vocab, n_embd)``, read by the gguf package."""
    r = gguf.GGUFReader(str(DATA / f"{name}.gguf"))
    tensors = {t.name: t for t in r.tensors}
    t = tensors.get("output.weight") or tensors["token_embd.weight"]
    return np.asarray(t.data, dtype=np.float64).reshape(int(t.shape[1]), int(t.shape[0]))


def llama_cpp_logits(name: str, stem: str, i: int) -> np.ndarray:
    """llama.cpp's full F32 logits, rebuilt from the final hidden states stored for them
    (within 1e-5; scripts/compact_arch_goldens.py), and checked against its exact top 32."""
    meta, z = goldens(name)
    logits = z[f"{stem}_hidden_{i}"].astype(np.float64) @ head_matrix(name).T
    cap = float(meta["hparams"].get("final_logit_softcapping", 0.0))
    if cap > 0:
        logits = cap * np.tanh(logits / cap)
    top = np.take_along_axis(logits, z[f"{stem}_top_ids_{i}"].astype(np.intp), axis=1)
    assert np.abs(top - z[f"{stem}_top_logits_{i}"]).max() < 1e-3
    return logits


def load(name: str, tag: str, memory: str, n_ctx: int = 256) -> Model:
    fname = f"{name}.gguf" if tag == "f32" else f"{name}.q8_0.gguf"
    return Model(str(DATA / fname), memory=memory, n_ctx=n_ctx)


def runs(name: str, tag: str) -> list[tuple[str, int, int]]:
    """(golden stem, sequence index, n_ctx) of every teacher-forced run of a file."""
    out = [(tag, i, 256) for i in range(N_SEQ)]
    if name == "phi3-longrope":  # n_ctx 512 > original context 256: the long factors
        out += [(f"{tag}_ctx512", i, 512) for i in (1, 3)]
    return out


def top1_check(ours: np.ndarray, z: dict[str, np.ndarray], stem: str, i: int) -> tuple[np.ndarray, np.ndarray]:
    """(llama.cpp's top-1 margin, whether our top-1 differs) per position."""
    vals = z[f"{stem}_top_logits_{i}"]
    margin = vals[:, 0] - vals[:, 1]
    differs = np.argmax(ours, axis=1) != z[f"{stem}_top_ids_{i}"][:, 0]
    return margin, differs


@pytest.mark.parametrize("memory", MEMORY)
@pytest.mark.parametrize("name", NAMES)
def test_f32_logits_agree_with_llama_cpp(name, memory):
    _, z = goldens(name)
    models: dict[int, Model] = {}
    for stem, i, n_ctx in runs(name, "f32"):
        m = models.setdefault(n_ctx, load(name, "f32", memory, n_ctx))
        ours = m.logits(z[f"ids_{i}"].tolist())
        diff = np.abs(ours - llama_cpp_logits(name, stem, i))
        assert diff.max() <= 0.3, (stem, i, float(diff.max()))
        margin, differs = top1_check(ours, z, stem, i)
        assert not np.any(differs & (margin >= 0.25)), (stem, i, np.flatnonzero(differs & (margin >= 0.25)))


@pytest.mark.parametrize("memory", MEMORY)
@pytest.mark.parametrize("name", NAMES)
def test_q8_0_top1_agrees_with_llama_cpp(name, memory):
    _, z = goldens(name)
    models: dict[int, Model] = {}
    margins, differ = [], []
    for stem, i, n_ctx in runs(name, "q8_0"):
        m = models.setdefault(n_ctx, load(name, "q8_0", memory, n_ctx))
        margin, differs = top1_check(m.logits(z[f"ids_{i}"].tolist()), z, stem, i)
        margins.append(margin)
        differ.append(differs)
    margin, differs = np.concatenate(margins), np.concatenate(differ)
    assert not np.any(differs & (margin >= 1.5))
    clear = margin >= 0.5
    assert int(np.sum(differs & clear)) <= 0.03 * int(np.sum(clear))


def greedy(m: Model, prompt: list[int], n: int) -> list[int]:
    """Argmax continuation, one token at a time through the KV cache (the decoding path)."""
    cache = m.net.new_cache(m.n_ctx)
    logits = m.net.forward(np.asarray(prompt, dtype=np.int32), cache)
    out: list[int] = []
    for _ in range(n):
        out.append(int(np.argmax(logits[-1])))
        logits = m.net.forward(np.asarray(out[-1:], dtype=np.int32), cache)
    return out


# gemma2's greedy path runs through near-ties (three candidates within 0.013 at step 7,
# logits ~25) that llama.cpp's F16 KV cache and F16 GELU table decide; emulating those
# roundings still left 0.04 of difference, so there it gets the check below instead.
GREEDY_EXACT = tuple(n for n in NAMES if n != "gemma2")
# A step where llama.cpp's choice trails ours by less than this is a tie, not a disagreement.
NEAR_TIE = 0.02


@pytest.mark.parametrize("memory", MEMORY)
@pytest.mark.parametrize("name", GREEDY_EXACT)
def test_greedy_continuation_equals_llama_cpp(name, memory):
    meta, _ = goldens(name)
    f32 = meta["files"]["f32"]
    assert greedy(load(name, "f32", memory), meta["greedy_prompt"], meta["greedy_n"]) == f32["greedy_ids"]
    if "greedy_ids_ctx512" in f32:
        # llama.cpp continued sequence 1 (40 ids), not greedy_prompt, at n_ctx=512 (long
        # factors); at n_ctx=256 (short factors) our continuation differs from it.
        m = load(name, "f32", memory, n_ctx=512)
        _, z = goldens(name)
        assert greedy(m, z["ids_1"].tolist(), meta["greedy_n"]) == f32["greedy_ids_ctx512"]


@pytest.mark.parametrize("memory", MEMORY)
def test_gemma2_decoding_follows_llama_cpp_greedy_path_up_to_near_ties(memory):
    """Decoding llama.cpp's greedy tokens one at a time, each is our argmax too, except at
    most two steps where it trails ours by less than NEAR_TIE."""
    meta, _ = goldens("gemma2")
    m = load("gemma2", "f32", memory)
    cache = m.net.new_cache(m.n_ctx)
    logits = m.net.forward(np.asarray(meta["greedy_prompt"], dtype=np.int32), cache)
    ties = []
    for step, tok in enumerate(meta["files"]["f32"]["greedy_ids"]):
        row = logits[-1]
        if int(np.argmax(row)) != tok:
            assert float(row.max() - row[tok]) < NEAR_TIE, step
            ties.append(step)
        logits = m.net.forward(np.asarray([tok], dtype=np.int32), cache)
    assert len(ties) <= 2, ties


def test_llama_rope_freqs_are_what_makes_it_agree():
    """Llama 3.1 rope scaling arrives as the ``rope_freqs`` tensor: without its factors the
    fixture's logits move far outside the tolerance, with them they agree."""
    _, z = goldens("llama")
    m = load("llama", "f32", "speed")
    assert m.net.loader.has("rope_freqs.weight")
    ids = z["ids_3"].tolist()  # 200 tokens: positions where the low frequencies matter
    golden = llama_cpp_logits("llama", "f32", 3)
    assert np.abs(m.logits(ids) - golden).max() < 0.3
    a = m.net.args
    plain = Rope(a.head_dim, a.n_rot, a.rope_base)
    for layer in range(a.n_layers):
        m.net.block(layer).attn.rope = plain
    assert np.abs(m.logits(ids) - golden).max() > 0.5


def test_phi3_longrope_factors_follow_the_context_size():
    short, long_ = load("phi3-longrope", "f32", "speed", 256), load("phi3-longrope", "f32", "speed", 512)
    ids = goldens("phi3-longrope")[1]["ids_1"].tolist()
    assert np.abs(short.logits(ids) - long_.logits(ids)).max() > 1.0


# ----------------------------------------------------------------------------- bad files

def altered(tmp_path: Path, name: str, meta: dict | None = None, drop: tuple[str, ...] = ()) -> str:
    """A copy of fixture ``name`` with metadata values replaced and tensors left out."""
    f = open_gguf(str(DATA / f"{name}.gguf"))
    metadata = [(k, f.value_types[k], (meta or {}).get(k, v)) for k, v in f.metadata.items()]
    tensors = [TensorToWrite(t.name, t.shape, t.type_id, np.array(f.tensor_data(t.name)))
               for t in f.tensors.values() if t.name not in drop]
    path = str(tmp_path / f"{name}-altered.gguf")
    write_gguf(path, metadata, tensors)
    return path


def test_unknown_architecture_names_it_and_lists_ours(tmp_path):
    path = altered(tmp_path, "qwen3", {"general.architecture": "mamba2"})
    with pytest.raises(ValueError) as err:
        build_model(open_gguf(path))
    assert str(err.value) == ("architecture 'mamba2' is not supported; supported: "
                              "gemma2, gemma3, llama, phi3, qwen2, qwen3, smollm3")


@pytest.mark.parametrize("name, meta, drop, message", [
    ("llama", {"llama.attention.head_count_kv": 3}, (), "4 heads cannot be grouped over 3 KV heads"),
    ("qwen3", {}, ("blk.1.attn_k_norm.weight",), "needs tensor 'blk.1.attn_k_norm.weight'"),
    ("gemma2", {}, ("blk.3.post_ffw_norm.weight",), "needs tensor 'blk.3.post_ffw_norm.weight'"),
    ("smollm3", {}, ("output_norm.weight",), "tensor 'output_norm.weight' is missing"),
    ("phi3", {"phi3.feed_forward_length": 200}, (), r"'blk.0.ffn_down.weight' has shape \(128, 192\)"),
    ("gemma2", {"gemma2.attention.head_count_kv": 1}, (), r"'blk.0.attn_k.weight' has shape \(64, 64\).*1 KV heads"),
    ("qwen3", {"qwen3.attention.key_length": 16}, (), "rope dimension 32 exceeds the head size 16"),
])
def test_contradictory_file_fails_at_load_with_a_clear_error(tmp_path, name, meta, drop, message):
    path = altered(tmp_path, name, meta, drop)
    with pytest.raises(ValueError, match=message):
        Model(path)


@pytest.mark.parametrize("name", NAMES)
def test_a_pass_over_drafts_gives_each_row_its_decoding_numbers(name, monkeypatch):
    """Prompt lookup may not change an answer, sampled or greedy: in lean mode a pass over a
    few rows (drafts being verified) gives each row exactly what decoding it alone gives
    (products, norms, rope, attention); speed mode's BLAS does not promise that."""
    from assistant.core.engine import Model

    from assistant.core import kernels

    monkeypatch.setattr(kernels, "ATTENTION_BLOCK", 4)  # attention over several blocks, as at long contexts
    path = str(DATA / f"{name}.q8_0.gguf")
    m = Model(path, memory="lean", n_ctx=64)
    assert m.net.rows_exact()
    ids = [int(i) for i in np.random.default_rng(3).integers(3, 200, 30)]
    cache = m.net.new_cache(64)
    m.net.forward(np.asarray(ids[:20], np.int32), cache)  # a prompt (tiles, BLAS attention)
    for rows in (2, 5, 9):
        cache.truncate(20)
        batch = m.net.forward(np.asarray(ids[20:20 + rows], np.int32), cache, all_logits=True)
        cache.truncate(20)
        alone = np.stack([m.net.forward(np.asarray([t], np.int32), cache)[-1] for t in ids[20:20 + rows]])
        np.testing.assert_array_equal(batch, alone)
    assert not Model(path, memory="speed", n_ctx=64).net.rows_exact()

