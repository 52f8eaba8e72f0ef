"""Convert llama.cpp's golden outputs for the three real models into the compact files the
tests read from tests/data/golden/.

    python scripts/compact_goldens.py [SOURCE_DIR] [--out tests/data/golden]

SOURCE_DIR (default ../shared/golden) holds, per model, what scripts/llamacpp_goldens.py
writes: ``<model>.json`` (tokenizer and generation cases) and ``<model>.logits.npz`` (the full
first-step logits of each generation case, ``case0``..). Written per model:

- ``<model>.json``: the same cases, minified, with the file's sha256 filled in and the
  redundant ``top20_first`` dropped (the .npz holds a longer top list);
- ``<model>.top32.npz`` (compressed): ``ids`` (n_cases, 32) int32, llama.cpp's 32 largest
  first-step logits per case in descending order, and ``logits`` (n_cases, 32) float16, their
  values. float16 keeps ~0.01 of a logit of 20-30; the tests allow 1.5.

Only numpy is needed. Run it again whenever the source goldens are regenerated.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

TOP_K = 32

# sha256 of the GGUF each golden was computed from (models.toml lists the same).
SHA256 = {
    "smollm2-135m-instruct-q4_1": "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    "qwen2.5-coder-0.5b-instruct-q4_k_m": "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    "gemma-3-270m-q4_k_m": "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
}


def top_k(logits: np.ndarray, k: int = TOP_K) -> tuple[np.ndarray, np.ndarray]:
    """The k largest logits, descending, and their token ids."""
    ids = np.argpartition(logits, -k)[-k:]
    ids = ids[np.argsort(-logits[ids], kind="stable")]
    return ids.astype(np.int32), logits[ids].astype(np.float16)


def compact(model: str, src: Path, out: Path) -> list[Path]:
    g = json.loads((src / f"{model}.json").read_text(encoding="utf-8"))
    g["file_sha256"] = g.get("file_sha256") or SHA256[model]
    for case in g["generate"]:
        case.pop("top20_first", None)
    full = np.load(src / f"{model}.logits.npz")
    n = len(g["generate"])
    if sorted(full.files) != sorted(f"case{i}" for i in range(n)):
        raise SystemExit(f"{model}: {full.files} do not match its {n} generation cases")
    pairs = [top_k(full[f"case{i}"].astype(np.float32)) for i in range(n)]
    json_out, npz_out = out / f"{model}.json", out / f"{model}.top32.npz"
    json_out.write_text(json.dumps(g, ensure_ascii=False, separators=(",", ":")) + "\n", encoding="utf-8")
    np.savez_compressed(npz_out, ids=np.stack([p[0] for p in pairs]), logits=np.stack([p[1] for p in pairs]))
    return [json_out, npz_out]


def main() -> None:
    here = Path(__file__).resolve().parents[1]
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("source", nargs="?", default=str(here.parent / "shared" / "golden"))
    ap.add_argument("--out", default=str(here / "tests" / "data" / "golden"))
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for model in SHA256:
        for p in compact(model, Path(args.source), out):
            print(f"{p}: {p.stat().st_size / 1024:.1f} KB")


if __name__ == "__main__":
    main()
