"""``assistant quantize``: requantize a GGUF model's weight matrices to another type.

Every 2-D ``*.weight`` tensor whose rows fit the target block size is dequantized and
quantized again with ggml's reference rounding; norms, biases and everything else are
copied unchanged, as are all metadata (with ``general.file_type`` updated), the alignment
and the tensor order. The output is written to a temporary file and renamed, so a crash
never leaves a half-written model, and the input is never overwritten.
"""

from __future__ import annotations

import os
import sys

import numpy as np

from .core.gguf import GGML_TYPES, T_UINT32, GGUFError, open_gguf
from .core.gguf_writer import TensorToWrite, write_gguf
from .core.quants import QUANTIZE_TYPES, dequantize, quantize

# llama_ftype values written to general.file_type.
FILE_TYPES = {"f32": 0, "f16": 1, "q4_0": 2, "q4_1": 3, "q8_0": 7, "q5_0": 8, "q5_1": 9}


class QuantizeError(RuntimeError):
    pass


def quantize_file(src: str, dst: str, qtype: str, progress: bool = False) -> dict[str, int]:
    if qtype not in QUANTIZE_TYPES:
        raise QuantizeError(f"unknown type {qtype!r}; choose one of {', '.join(QUANTIZE_TYPES)}")
    if os.path.exists(dst) and os.path.samefile(src, dst):
        raise QuantizeError("the output would overwrite the input; choose another file name")
    try:
        f = open_gguf(src)
    except GGUFError as err:
        raise QuantizeError(f"{src}: {err}") from None
    target = QUANTIZE_TYPES[qtype]
    block = GGML_TYPES[target][1]
    metadata = []
    for key, value in f.metadata.items():
        vtype = f.value_types[key]
        if key == "general.file_type":
            value, vtype = FILE_TYPES[qtype], T_UINT32
        metadata.append((key, vtype, value))
    if "general.file_type" not in f.metadata:
        metadata.append(("general.file_type", T_UINT32, FILE_TYPES[qtype]))
    tensors = []
    counts = {"requantized": 0, "copied": 0}
    items = list(f.tensors.values())
    for i, t in enumerate(items):
        raw = f.tensor_data(t.name)
        if t.name.endswith(".weight") and len(t.shape) == 2 and t.shape[-1] % block == 0:
            w = dequantize(t.type_id, raw, t.shape, t.name)
            data = quantize(target, w)
            tensors.append(TensorToWrite(t.name, t.shape, target, data))
            counts["requantized"] += 1
        else:
            tensors.append(TensorToWrite(t.name, t.shape, t.type_id, np.array(raw)))
            counts["copied"] += 1
        if progress:
            done = int(30 * (i + 1) / len(items))
            sys.stderr.write(f"\rquantizing [{'#' * done:<30}] {i + 1}/{len(items)} {t.name[:40]:<40}")
            sys.stderr.flush()
    if progress:
        sys.stderr.write("\nwriting...\n")
    write_gguf(dst, metadata, tensors)
    return counts
