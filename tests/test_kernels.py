"""The quantized products and the decoding attention kernel against float64 references,
on every block type, odd shapes and both paths (numba, and the numpy fallback)."""

from __future__ import annotations

import os
import subprocess
import sys

import gguf
import numpy as np
import pytest
from gguf import GGMLQuantizationType as Q

from assistant.core import kernels
from assistant.core.gguf import GGML_TYPES, open_gguf
from assistant.core.quants import dequantize
from assistant.core.weights import Linear, QuantLinear, WeightLoader
from conftest import NEUTRAL_CWD

TYPES = ["Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "F16"]
# Byte offsets of each block's float16 scale fields: random bytes there would be inf/NaN.
F16_FIELDS = {"Q4_0": (0,), "Q4_1": (0, 2), "Q5_0": (0,), "Q5_1": (0, 2), "Q8_0": (0,),
              "Q2_K": (80, 82), "Q3_K": (108,), "Q4_K": (0, 2), "Q5_K": (0, 2), "Q6_K": (208,)}


@pytest.fixture(params=["numba", "numpy"])
def path(request, monkeypatch):
    """Run a test on the numba kernels and again on the numpy fallback."""
    if request.param == "numba" and not kernels.HAVE_NUMBA:
        pytest.skip("numba is not importable here")
    if request.param == "numpy":
        monkeypatch.setattr(kernels, "HAVE_NUMBA", False)
    return request.param


def random_matrix(name: str, rows: int, cols: int, seed: int) -> np.ndarray:
    """Raw bytes ``(rows, row_bytes)`` of a ``name`` matrix with random codes and sane scales."""
    rng = np.random.default_rng(seed)
    if name == "F16":
        return rng.standard_normal((rows, cols)).astype(np.float16).view(np.uint8)
    _n, block, bsize = GGML_TYPES[Q[name].value]
    raw = rng.integers(0, 256, size=(rows * cols // block, bsize), dtype=np.uint8)
    for off in F16_FIELDS[name]:
        raw[:, off:off + 2] = rng.uniform(-0.1, 0.1, size=(raw.shape[0], 1)).astype(np.float16).view(np.uint8)
    return raw.reshape(rows, -1)


def write_gguf(path, tensors: dict[str, tuple[str, np.ndarray, int]]) -> str:
    """A GGUF holding raw matrices ``{name: (type, raw bytes, cols)}``."""
    w = gguf.GGUFWriter(str(path), "llama")
    for tname, (qname, raw, cols) in tensors.items():
        rows = raw.shape[0]
        if qname == "F16":
            w.add_tensor(tname, raw.view(np.float16).reshape(rows, cols))
        else:
            w.add_tensor(tname, raw, raw_shape=(rows, raw.shape[1]), raw_dtype=Q[qname])
    w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()
    return str(path)


def dense(name: str, raw: np.ndarray, cols: int) -> np.ndarray:
    """The matrix ``(rows, cols)`` as float64, from our bit-exact dequantizer."""
    return dequantize(Q[name].value, raw.reshape(-1), (raw.shape[0], cols)).astype(np.float64)


def as_multiplied(lin: QuantLinear, x: np.ndarray) -> np.ndarray:
    """x as the product sees it, in float64: on the integer kernels rows are rounded to int8
    per group first (llama.cpp's Q8_0); float16 weights and the float kernels take x as it is."""
    if not kernels.INT8_ACTIVATIONS or lin.half is not None:
        return x.astype(np.float64)
    tiles = lin.nibs if lin.nibs is not None else lin.codes
    g = x.shape[1] // tiles.shape[1]
    xq, dx, _ = kernels.quantize_rows(x, g)
    t = x.shape[0]
    return (xq[:t].reshape(t, -1, g) * dx[:t, :, None].astype(np.float64)).reshape(t, -1)


@pytest.mark.parametrize("name", TYPES)
@pytest.mark.parametrize("n_out", [64, 100, 320])
@pytest.mark.parametrize("t_rows", [1, 7, 20, 37])
def test_product_matches_float64(tmp_path, path, name, n_out, t_rows):
    cols = 512
    raw = random_matrix(name, n_out, cols, seed=n_out + t_rows)
    f = open_gguf(write_gguf(tmp_path / "m.gguf", {"w": (name, raw, cols)}))
    lin = WeightLoader(f, "lean").linear(["w"])
    assert isinstance(lin, QuantLinear)
    assert (lin.nibs is not None) == (name in ("Q4_0", "Q4_1", "Q4_K", "Q2_K", "Q3_K"))  # packed 4-bit
    if name != "F16":  # the legacy formats' scales are float16 in the file: kept as such
        assert lin.scales.dtype == (np.uint16 if name in ("Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0") else np.float32)
    x = np.random.default_rng(1).standard_normal((t_rows, cols)).astype(np.float32)
    y = lin(x)
    w = dense(name, raw, cols).T
    ref = as_multiplied(lin, x) @ w
    assert y.shape == (t_rows, n_out) and y.dtype == np.float32
    assert np.abs(y - ref).max() <= 1e-4 * max(1.0, np.abs(ref).max())
    # Rounding x to int8 moves the product by well under 1% of its scale.
    exact = x.astype(np.float64) @ w
    assert np.abs(y - exact).max() <= 1e-2 * max(1.0, np.abs(exact).max())


def test_fused_mixed_types_permuted_with_bias(tmp_path, path):
    """q/k/v fused the way Q4_K_M files mix them (Q4_K's 32-groups beside Q6_K's 16), with
    a row permutation on the first two and a bias."""
    cols = 256
    parts = {"q": ("Q4_K", 128), "k": ("Q5_0", 64), "v": ("Q6_K", 64)}
    raws = {n: random_matrix(t, r, cols, seed=i) for i, (n, (t, r)) in enumerate(parts.items())}
    bias = {n + ".bias": np.random.default_rng(9).standard_normal(r).astype(np.float32) for n, (_t, r) in parts.items()}
    gpath = tmp_path / "f.gguf"
    w = gguf.GGUFWriter(str(gpath), "llama")
    for n, (t, r) in parts.items():
        w.add_tensor(n, raws[n], raw_shape=raws[n].shape, raw_dtype=Q[t])
        w.add_tensor(n + ".bias", bias[n + ".bias"])
    w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()
    perm_q = np.random.default_rng(2).permutation(128)
    perm_k = np.random.default_rng(3).permutation(64)
    lin = WeightLoader(open_gguf(str(gpath)), "lean").linear(["q", "k", "v"], [perm_q, perm_k, None],
                                                             ["q.bias", "k.bias", "v.bias"])
    mats = [dense("Q4_K", raws["q"], cols)[perm_q], dense("Q5_0", raws["k"], cols)[perm_k], dense("Q6_K", raws["v"], cols)]
    b = np.concatenate([bias["q.bias"][perm_q], bias["k.bias"][perm_k], bias["v.bias"]])
    x = np.random.default_rng(4).standard_normal((3, cols)).astype(np.float32)
    ref = as_multiplied(lin, x) @ np.concatenate(mats).T + b
    assert np.abs(lin(x) - ref).max() <= 1e-4 * np.abs(ref).max()


def test_f32_matrices_stay_float32(tmp_path):
    raw = np.random.default_rng(0).standard_normal((64, 64)).astype(np.float32)
    gpath = tmp_path / "f32.gguf"
    w = gguf.GGUFWriter(str(gpath), "llama")
    w.add_tensor("w", raw)
    w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()
    lin = WeightLoader(open_gguf(str(gpath)), "lean").linear(["w"])
    assert type(lin) is Linear


@pytest.mark.parametrize("name", ["Q4_0", "Q4_K", "Q6_K", "F16"])
@pytest.mark.parametrize("bad", [np.inf, np.nan])
def test_corrupt_scales_are_refused_at_load(tmp_path, name, bad):
    raw = random_matrix(name, 64, 256, seed=0)
    off = 0 if name == "F16" else F16_FIELDS[name][0]
    raw[5, off:off + 2] = np.array([bad], dtype=np.float16).view(np.uint8)
    f = open_gguf(write_gguf(tmp_path / "bad.gguf", {"w": (name, raw, 256)}))
    with pytest.raises(ValueError, match="inf or NaN"):
        WeightLoader(f, "lean").linear(["w"])


def attention_ref(q, k, v, n, k0, scale, softcap):
    group = q.shape[0] // k.shape[0]
    keys = np.repeat(k[:, k0:n], group, axis=0).astype(np.float64)
    vals = np.repeat(v[:, k0:n], group, axis=0).astype(np.float64)
    s = np.einsum("hd,hsd->hs", q.astype(np.float64), keys) * scale
    if softcap:
        s = softcap * np.tanh(s / softcap)
    p = np.exp(s - s.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    return np.einsum("hs,hsd->hd", p, vals)


@pytest.mark.parametrize("heads,kv,hd,n,k0,softcap", [
    (9, 3, 64, 577, 0, 0.0),   # SmolLM2's groups of 3
    (14, 2, 64, 33, 0, 0.0),   # Qwen's groups of 7
    (4, 1, 256, 600, 89, 0.0),  # Gemma's one KV head, a sliding window
    (4, 2, 32, 1, 0, 0.0),     # the first token sees only itself
    (4, 2, 32, 50, 10, 5.0),   # Gemma 2's soft-capped scores
])
def test_decode_attention_matches_float64(path, heads, kv, hd, n, k0, softcap):
    rng = np.random.default_rng(n)
    q = rng.standard_normal((heads, hd)).astype(np.float32)
    k = rng.standard_normal((kv, n + 7, hd)).astype(np.float32)  # cache longer than n
    v = rng.standard_normal((kv, n + 7, hd)).astype(np.float32)
    scale = 1.0 / np.sqrt(hd)
    out = kernels.attend_one(q, k, v, n, k0, scale, softcap)
    assert out.shape == (heads, hd) and out.dtype == np.float32
    assert np.abs(out - attention_ref(q, k, v, n, k0, scale, softcap)).max() < 1e-5


def test_numpy_fallback_runs_a_model_and_says_so_once(tmp_path):
    """Where numba cannot be imported (a stand-in package that fails to import, as on a
    brand-new Python), the numpy path computes the same logits and one warning says so."""
    from gguf import GGMLQuantizationType as QT
    from ggufmaker import make_model

    model = str(make_model(tmp_path / "q.gguf", arch="llama", qtype=QT.Q4_1, seed=3))
    broken = tmp_path / "broken" / "numba"
    broken.mkdir(parents=True)
    (broken / "__init__.py").write_text("raise ImportError('no wheel for this Python')\n")
    code = ("import sys, numpy as np\n"
            "from assistant.core.engine import Model\n"
            "from assistant.core import kernels\n"
            "m = Model(sys.argv[1], memory='lean', n_ctx=32)\n"
            "np.save(sys.argv[2], m.logits([5, 17, 42, 99, 7]))\n"
            "c = m.net.new_cache(8); m.net.forward(np.array([5], np.int32), c)\n"
            "print(kernels.status()['kernels'])\n")
    outs = []
    for pythonpath in (str(broken.parent), ""):
        env = dict(os.environ, PYTHONPATH=pythonpath, ASSISTANT_INT8="0")  # float32 activations in both
        env.pop("ASSISTANT_NO_NUMBA", None)
        out = tmp_path / f"l{len(outs)}.npy"
        r = subprocess.run([sys.executable, "-c", code, model, str(out)], env=env, cwd=NEUTRAL_CWD,
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
        outs.append((np.load(out), r.stdout.strip(), r.stderr))
    (fallback, kind_fb, err_fb), (fast, kind_fast, err_fast) = outs
    assert kind_fb == "numpy" and kind_fast == ("numba" if kernels.HAVE_NUMBA else "numpy")
    assert err_fb.count("numba cannot be imported (no wheel for this Python)") == 1
    np.testing.assert_allclose(fallback, fast, atol=1e-4, rtol=0)


def test_f16_product_takes_large_activations(path):
    """Activations of 1e5 (seen entering feed-forward projections) stay finite in the F16 kernel."""
    rng = np.random.default_rng(0)
    half = rng.standard_normal((1, 64, 64)).astype(np.float16)
    x = rng.standard_normal((2, 64)).astype(np.float32)
    x[0, 3] = 1e5
    y = np.empty((2, 64), dtype=np.float32)
    kernels.hmatmul(x, half.view(np.uint16), y)
    ref = x.astype(np.float64) @ half[0].astype(np.float64)
    assert np.all(np.isfinite(y)) and np.abs(y - ref).max() <= 1e-5 * np.abs(ref).max()


def test_two_threads_share_the_kernels():
    """Two models generating at once (one worker thread each) enter the kernels concurrently."""
    import threading

    nibs = np.random.default_rng(1).integers(0, 256, size=(16, 8, 16, 64), dtype=np.uint8)
    sc = np.ones((16, 8, 64), dtype=np.float32)
    x = np.ones((1, 256), dtype=np.float32)
    want = np.empty((1, 1024), dtype=np.float32)
    kernels.qmatmul(x, nibs, 8.0, sc, kernels_no_mins(), want)
    errors = []

    def work():
        y = np.empty_like(want)
        for _ in range(50):
            kernels.qmatmul(x, nibs, 8.0, sc, kernels_no_mins(), y)
            if not np.array_equal(y, want):
                errors.append("mismatch")

    threads = [threading.Thread(target=work) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


def kernels_no_mins():
    return np.zeros((0, 0, 0), dtype=np.float32)


@pytest.mark.parametrize("name", TYPES)
def test_tied_embedding_rows_come_from_the_tiles_exactly(tmp_path, name):
    """A tied embedding's lookups read the output head's tiles (the file's pages are then not
    held beside them) and give the file's values exactly, padding rows and all."""
    cols, n_out = 256, 100
    raw = random_matrix(name, n_out, cols, seed=5)
    f = open_gguf(write_gguf(tmp_path / "m.gguf", {"token_embd.weight": (name, raw, cols)}))
    from_file = WeightLoader(f, "lean").rows("token_embd.weight", np.array([0, 63, 64, 99, 5], np.int32))
    loader = WeightLoader(f, "lean")
    head = loader.output_head("token_embd.weight")
    assert isinstance(head, QuantLinear)
    ids = np.array([0, 63, 64, 99, 5], np.int32)
    got = loader.rows("token_embd.weight", ids)
    assert got.dtype == np.float32 and got.shape == (5, cols)
    np.testing.assert_array_equal(got, from_file)
    np.testing.assert_array_equal(got, dense(name, raw, cols)[ids].astype(np.float32))
    with pytest.raises(IndexError):
        loader.rows("token_embd.weight", np.array([100], np.int32))


@pytest.mark.skipif(not kernels.HAVE_NUMBA, reason="numba is not importable here")
def test_no_kernel_compiles_after_load(tmp_path):
    """Loading a lean model loads every kernel it will call (so numba's compiler pages can be
    released): generating afterwards adds no compiled signature, on plain and lookup decoding,
    after a prompt long enough for the prompt-row products (more than 16 tokens)."""
    from gguf import GGMLQuantizationType as QT
    from ggufmaker import make_model

    from assistant.core.engine import GenerationSettings, Model
    from assistant.core.sampling import SamplingSettings

    def signatures() -> int:
        return sum(len(v.signatures) for v in vars(kernels).values() if hasattr(v, "signatures"))

    for qtype in (QT.Q4_1, QT.Q8_0, QT.Q5_0, QT.F16):
        m = Model(str(make_model(tmp_path / f"{qtype.name}.gguf", arch="llama", qtype=qtype, seed=2)),
                  memory="lean", n_ctx=64)
        before = signatures()
        for lookup in (False, True):
            settings = GenerationSettings(max_tokens=12, ignore_eos=True, lookup_decoding=lookup,
                                          sampling=SamplingSettings(temperature=0))
            list(m.generate([5, 6, 7] * 8, settings))
        assert signatures() == before, qtype.name
    assert kernels.release_compiler_pages() >= 0


def test_a_models_thread_count_gives_way_to_the_users(monkeypatch):
    """models.toml's `threads` applies only when neither --threads nor ASSISTANT_THREADS chose."""
    import threadpoolctl

    monkeypatch.setattr(threadpoolctl, "threadpool_limits", lambda *a, **k: None)  # leave BLAS as it is
    monkeypatch.setattr(kernels, "_threads", 0)
    monkeypatch.setattr(kernels, "_threads_chosen", False)
    kernels.set_threads(1, default=True)
    assert kernels._threads in (0, 1) and not kernels._threads_chosen  # (0 without numba)
    kernels.set_threads(2)
    assert kernels._threads_chosen
    kernels.set_threads(1, default=True)
    assert kernels._threads == (2 if kernels.HAVE_NUMBA else 0)


@pytest.mark.parametrize("four_bit", [True, False])
@pytest.mark.parametrize("t_rows,g", [(1, 32), (6, 16), (33, 32), (64, 16)])
@pytest.mark.parametrize("half_scales", [False, True])
def test_integer_product_matches_its_rounded_activations(path, four_bit, t_rows, g, half_scales):
    """The prompt rows' integer product equals float64 math on the activations as rounded
    to int8 per group (scale = max |x| / 127), with or without minimums, scales float32 or
    float16 bits; rows not a multiple of the kernel's tile of 4 are padded and cut off, and
    an all-zero group gives zero codes."""
    rng = np.random.default_rng(t_rows + g)
    n_in, chunks = 8 * g, 3
    codes = rng.integers(-8, 8, (chunks, n_in // g, g, kernels.W)).astype(np.int8) if four_bit else \
        rng.integers(-128, 128, (chunks, n_in // g, g, kernels.W)).astype(np.int8)
    tiles = kernels.pack_nibbles(codes, 8) if four_bit else codes
    scales = rng.uniform(0.001, 0.01, (chunks, n_in // g, kernels.W)).astype(np.float32)
    if half_scales:
        scales = scales.astype(np.float16).astype(np.float32)
    x = rng.standard_normal((t_rows, n_in)).astype(np.float32)
    x[0, 5] = 40.0  # an outlier sets its group's scale
    x[-1, g:2 * g] = 0.0
    stored = (lambda a: a.astype(np.float16).view(np.uint16)) if half_scales else (lambda a: a)
    for mins in (np.zeros((0, 0, 0), np.float32), rng.uniform(-0.01, 0.01, scales.shape).astype(np.float32)):
        if half_scales:
            mins = mins.astype(np.float16).astype(np.float32)
        y = np.full((t_rows, chunks * kernels.W), np.nan, dtype=np.float32)
        kernels.qgemm_int8(x, tiles, 8.0, stored(scales), stored(mins), y)
        xq, dx, xs = kernels.quantize_rows(x, g)
        assert xq.shape[0] % kernels.QT == 0 and not xq[t_rows:].any()
        xg = x.reshape(t_rows, -1, g)
        np.testing.assert_allclose(dx[:t_rows], np.abs(xg).max(axis=2) / 127, rtol=1e-6)
        assert np.abs(xq[:t_rows].reshape(t_rows, -1, g) * dx[:t_rows, :, None] - xg).max() <= dx.max() / 2 + 1e-6
        w = codes.astype(np.float64) * scales[:, :, None, :]
        if mins.size:
            w += mins[:, :, None, :]
        w = w.transpose(1, 2, 0, 3).reshape(n_in, -1)
        rounded = (xq[:t_rows].reshape(t_rows, -1, g) * dx[:t_rows, :, None].astype(np.float64)).reshape(t_rows, -1)
        ref = rounded @ w
        assert np.abs(y - ref).max() <= 1e-5 * np.abs(ref).max()


def test_integer_product_portable_form(tmp_path):
    """Where the CPU has no VNNI the same kernel compiles to plain vector integer math. Run it,
    then the host's form, sharing one disk cache: the form is part of the compiled signature
    (a marker argument's type), so neither loads the other's code, and both give the same
    numbers (4-bit and int8 codes, groups of 32 and 16, with and without minimums)."""
    code = ("import sys, numpy as np\n"
            "from assistant.core import kernels\n"
            "rng = np.random.default_rng(0)\n"
            "ys = []\n"
            "for codes, g in ((rng.integers(0, 256, (2, 4, 16, 64), dtype=np.uint8), 32),\n"
            "                 (rng.integers(-128, 128, (2, 8, 16, 64), dtype=np.int8), 16)):\n"
            "    sc = rng.uniform(0.001, 0.01, (2, codes.shape[1], 64)).astype(np.float32)\n"
            "    x = rng.standard_normal((20, 128)).astype(np.float32)\n"
            "    for mins in (sc, np.zeros((0, 0, 0), np.float32)):\n"
            "        for t in (9, 20):  # decoding rows, prompt tiles\n"
            "            y = np.empty((t, 128), np.float32)\n"
            "            kernels.qgemm_int8(x[:t], codes, 8.0, sc, mins, y)\n"
            "            ys.append(y[:9])\n"
            "np.save(sys.argv[1], np.stack(ys))\n"
            "sigs = kernels._qgemm_nb.signatures + kernels._qrows_nb.signatures\n"
            "print(kernels.HAVE_VNNI, sorted({str(s[-1]) for s in sigs}))\n")
    outs = []
    for no_vnni in ("1", ""):
        env = dict(os.environ, ASSISTANT_NO_VNNI=no_vnni, NUMBA_CACHE_DIR=str(tmp_path / "cache"))
        out = tmp_path / f"y{no_vnni}.npy"
        r = subprocess.run([sys.executable, "-c", code, str(out)], env=env, cwd=NEUTRAL_CWD,
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
        outs.append((np.load(out), r.stdout.strip()))
    (portable, said_portable), (native, said_native) = outs
    assert said_portable == "False ['int8']"
    assert said_native == ("True ['uint8']" if kernels.HAVE_VNNI else "False ['int8']")
    np.testing.assert_allclose(portable, native, rtol=0, atol=1e-5 * np.abs(native).max())
    for ys in (portable, native):  # decoding rows and prompt tiles give a row the same numbers
        np.testing.assert_array_equal(ys[0::2], ys[1::2])


@pytest.mark.parametrize("qtype", ["Q4_1", "Q8_0"])
def test_prompt_rows_take_the_integer_kernel(tmp_path, monkeypatch, qtype):
    """A long prompt in lean mode runs its products on the integer kernel (when enabled) and
    its logits stay within the rounding of int8 activations of the float path's."""
    from gguf import GGMLQuantizationType as QT
    from ggufmaker import make_model

    from assistant.core.engine import Model

    path = str(make_model(tmp_path / "q.gguf", arch="llama", qtype=QT[qtype], seed=4))
    ids = [int(i) for i in np.random.default_rng(0).integers(3, 250, 40)]
    calls = []
    real = kernels.qgemm_int8
    monkeypatch.setattr(kernels, "qgemm_int8", lambda *a: calls.append(1) or real(*a))
    monkeypatch.setattr(kernels, "INT8_ACTIVATIONS", False)
    floats = Model(path, memory="lean", n_ctx=64).logits(ids)
    assert not calls
    monkeypatch.setattr(kernels, "INT8_ACTIVATIONS", True)
    ints = Model(path, memory="lean", n_ctx=64).logits(ids)
    assert calls
    assert np.abs(ints - floats).max() <= 0.02 * np.abs(floats).max()
    assert (ints.argmax(-1) == floats.argmax(-1)).mean() >= 0.9


@pytest.mark.skipif(not kernels.HAVE_NUMBA, reason="the numpy fallback multiplies with BLAS (gemv or gemm)")
@pytest.mark.parametrize("name", ["Q4_0", "Q4_1", "Q5_1", "Q8_0", "Q2_K", "Q3_K", "Q4_K", "Q6_K"])
def test_a_rows_product_does_not_depend_on_the_rows_beside_it(tmp_path, name):
    """Drafts verified together must give the numbers one-at-a-time decoding gives (prompt
    lookup may not change an answer): every row of a 1..16-row product equals that row alone.
    On the integer kernels it also equals the row inside a prompt chunk (tiles, 17+ rows)."""
    cols = 512
    raw = random_matrix(name, 200, cols, seed=3)
    lin = WeightLoader(open_gguf(write_gguf(tmp_path / "m.gguf", {"w": (name, raw, cols)})), "lean").linear(["w"])
    x = np.random.default_rng(5).standard_normal((24, cols)).astype(np.float32)
    alone = np.concatenate([lin(x[i:i + 1]) for i in range(24)])
    for t in (2, 3, 4, 5, 9, 16):
        np.testing.assert_array_equal(lin(x[:t]), alone[:t])
    if kernels.INT8_ACTIVATIONS:
        np.testing.assert_array_equal(lin(x), alone)


@pytest.mark.skipif(not kernels.HAVE_NUMBA, reason="the vectorized exp is numba code")
def test_attention_exp_is_exact_to_float32():
    """Decoding attention's own exp (a polynomial that vectorizes) against float64 over the
    range softmax feeds it (scores minus their max: -200 .. 0); underflow stays finite."""
    import numba

    @numba.njit(fastmath=True)  # as the kernel compiles it
    def run(row, m):
        return kernels._exp_shifted(row, row.shape[0], m, np.empty(row.shape[0], np.int32))

    x = np.concatenate([np.linspace(-200.0, 0.0, 20001), [0.0, -1e-8, -87.3, -88.7, -1e30]]).astype(np.float32)
    row = x + np.float32(3.0)
    total = run(row, np.float32(3.0))
    d = (x + np.float32(3.0)) - np.float32(3.0)  # the differences as the kernel sees them
    want = np.exp(d.astype(np.float64))
    near = d > -10  # the weights that count: within float32 rounding of exp's argument there
    assert np.all(np.isfinite(row)) and np.all(row >= 0)
    assert np.abs(row[near] / want[near] - 1).max() < 1e-6
    assert np.abs(row - want).max() < 2e-7  # and within 2e-7 of the largest weight elsewhere
    assert abs(total / want.sum() - 1) < 1e-6


@pytest.mark.parametrize("heads,kv,hd,pos,t,window,softcap", [
    (9, 3, 64, 577, 5, 0, 0.0),    # SmolLM2 verifying 4 drafts
    (14, 2, 64, 30, 16, 0, 0.0),   # Qwen, 16 rows over a short cache
    (4, 1, 256, 600, 9, 512, 0.0),  # Gemma's sliding window: each row's window starts later
    (4, 2, 32, 0, 3, 0, 0.0),      # the first rows of a sequence
    (4, 2, 32, 45, 7, 4, 5.0),     # a window shorter than the rows, soft-capped scores
    (4, 1, 64, 40, 16, 4, 0.0),    # blocks of 4: rows whose window starts in a later block
])
@pytest.mark.parametrize("block", [64, 4])
def test_several_rows_attend_like_one_at_a_time(path, monkeypatch, heads, kv, hd, pos, t, window, softcap, block):
    """Rows verified together (one kernel call, each KV block read once for all of them) give
    each row's own causal attention: row r sees keys up to pos + r (its last `window`). Small
    blocks make many of them, some with no position for a given row."""
    monkeypatch.setattr(kernels, "ATTENTION_BLOCK", block)
    rng = np.random.default_rng(pos + t)
    q = rng.standard_normal((heads, t, hd)).astype(np.float32)
    k = rng.standard_normal((kv, pos + t + 5, hd)).astype(np.float32)
    v = rng.standard_normal((kv, pos + t + 5, hd)).astype(np.float32)
    scale = 1.0 / np.sqrt(hd)
    out = kernels.attend_rows(q, k, v, pos, window, scale, softcap)
    assert out.shape == (t, heads * hd) and out.dtype == np.float32
    for r in range(t):
        k0 = max(0, pos + r + 1 - window) if window > 0 else 0
        want = attention_ref(q[:, r], k, v, pos + r + 1, k0, scale, softcap)
        assert np.abs(out[r] - want.reshape(-1)).max() < 1e-5, r
