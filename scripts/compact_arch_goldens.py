"""Copy the architecture fixtures and llama.cpp's goldens into tests/data/architectures/, compactly.

    python scripts/compact_arch_goldens.py [SHARED_DIR]    # default: ../shared beside the repo

llama.cpp's goldens hold full float32 logits (2048 per position): 47 MB for six models, more
than the test data may take. The tests need two things from them:

* every logit of the F32 files (the "within 0.3" check). Logits are ``head @ h`` for a
  final hidden state ``h`` of only ``n_embd`` (64-128) numbers, and the head is in the
  fixture: ``h`` is solved back by least squares from llama.cpp's logits (through
  ``cap * atanh(logit / cap)`` when the model soft-caps them), and stored in float32.
  Rebuilding the logits from it reproduces llama.cpp's to about 1e-4 (checked here, and
  the largest error is written to the README table);
* the top logits of every file (top-1 margins, the Q8_0 criteria, the worst top-5
  difference): the first ``TOP_K`` per position, exact float32 values and their ids.

Output per NAME: ``NAME.gguf``, ``NAME.q8_0.gguf`` (byte copies), ``NAME.npz`` (``ids_<i>``,
``<tag>_hidden_<i>`` for the F32 file, ``<tag>_top_ids_<i>`` / ``<tag>_top_logits_<i>`` for
both; tags ``f32``, ``q8_0`` and for phi3-longrope also ``f32_ctx512``, ``q8_0_ctx512``) and
``NAME.json`` (llama.cpp's settings, hparams, sha256s, greedy continuations).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from assistant.core.gguf import open_gguf  # noqa: E402
from assistant.core.weights import WeightLoader  # noqa: E402

TOP_K = 32
# Largest allowed error of the rebuilt F32 logits (the tests' tolerance is 0.3).
MAX_REBUILD_ERROR = 1e-3
OUT = REPO / "tests" / "data" / "architectures"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def head_matrix(gguf: Path) -> np.ndarray:
    f = open_gguf(str(gguf))
    name = "output.weight" if "output.weight" in f.tensors else "token_embd.weight"
    return WeightLoader(f).tensor(name).astype(np.float64)  # (n_vocab, n_embd)


def final_softcap(gguf: Path) -> float:
    f = open_gguf(str(gguf))
    return f.get_float(f.architecture + ".final_logit_softcapping", 0.0)


def solve_hidden(head: np.ndarray, logits: np.ndarray, cap: float) -> tuple[np.ndarray, float]:
    """The float32 hidden states ``(T, n_embd)`` whose logits are ``logits``, and the largest error."""
    z = logits.astype(np.float64)
    if cap > 0:
        z = cap * np.arctanh(z / cap)
    h, *_ = np.linalg.lstsq(head, z.T, rcond=None)  # (n_embd, T)
    h32 = h.T.astype(np.float32)
    rebuilt = h32.astype(np.float64) @ head.T
    if cap > 0:
        rebuilt = cap * np.tanh(rebuilt / cap)
    return h32, float(np.max(np.abs(rebuilt - logits)))


def top_k(logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ids = np.argsort(-logits, axis=1, kind="stable")[:, :TOP_K]
    return ids.astype(np.int16), np.take_along_axis(logits, ids, axis=1).astype(np.float32)


def convert(name: str, fixtures: Path, golden: Path) -> dict:
    src = np.load(golden / f"{name}.npz")
    meta = json.loads((golden / f"{name}.json").read_text())
    out: dict[str, np.ndarray] = {}
    for key in src.files:
        if key.startswith("ids_"):
            out[key] = src[key]
    worst = 0.0
    for tag, fname in (("f32", f"{name}.gguf"), ("q8_0", f"{name}.q8_0.gguf")):
        shutil.copyfile(fixtures / fname, OUT / fname)
        head = head_matrix(fixtures / fname) if tag == "f32" else None
        cap = final_softcap(fixtures / fname)
        for key in src.files:
            if "_logits_" not in key or key.split("_logits_")[0].split("_ctx")[0] != tag:
                continue
            logits = src[key]
            stem, i = key.rsplit("_logits_", 1)  # stem: f32, q8_0, f32_ctx512, q8_0_ctx512
            ids, vals = top_k(logits)
            out[f"{stem}_top_ids_{i}"] = ids
            out[f"{stem}_top_logits_{i}"] = vals
            if head is not None:
                h, err = solve_hidden(head, logits, cap)
                if err > MAX_REBUILD_ERROR:
                    raise SystemExit(f"{name} {key}: logits rebuilt from hidden states err {err:.2e}")
                out[f"{stem}_hidden_{i}"] = h
                worst = max(worst, err)
    np.savez_compressed(OUT / f"{name}.npz", **out)
    files = {}
    for tag, info in meta["files"].items():
        files[tag] = {k: v for k, v in info.items() if k != "top1"}
        if sha256(OUT / info["file"]) != info["sha256"]:
            raise SystemExit(f"{info['file']}: sha256 differs from the golden's")
    compact = {k: v for k, v in meta.items() if k not in ("files", "sequences", "npz_keys", "npz_extra")}
    compact["files"] = files
    compact["rebuild_max_error"] = worst
    (OUT / f"{name}.json").write_text(json.dumps(compact, indent=1) + "\n")
    return {"name": name, "rebuild": worst}


def main() -> None:
    shared = Path(sys.argv[1]) if len(sys.argv) > 1 else REPO.parent / "shared"
    fixtures = shared / "fixtures" / "architectures"
    golden = shared / "golden" / "architectures"
    OUT.mkdir(parents=True, exist_ok=True)
    for path in sorted(fixtures.glob("*.q8_0.gguf")):
        name = path.name[: -len(".q8_0.gguf")]
        r = convert(name, fixtures, golden)
        print(f"{name}: F32 logits rebuilt within {r['rebuild']:.2e}")
    total = sum(p.stat().st_size for p in OUT.iterdir())
    print(f"{OUT}: {total / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
