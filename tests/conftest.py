"""Shared fixtures: hermetic data directories, tiny generated models, the real models."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parent / "data"  # reference data kept in the repository
GOLDEN = DATA / "golden"  # llama.cpp's outputs for the real models (see data/README.md)
PULL_HINT = "run `bash scripts/dev.sh test` or `assistant pull --all` to fetch it"

# Subprocesses run `python -m assistant` from here, never from the repository root (where
# the source tree would shadow the installed, compiled package).
NEUTRAL_CWD = tempfile.gettempdir()

# Tests never load third-party plugins from the environment unless they ask to.
os.environ.setdefault("ASSISTANT_LOAD_PLUGINS", "0")

REAL_MODELS = {
    "smollm2": ("SmolLM2-135M-Instruct.Q4_1.gguf", "smollm2-135m-instruct-q4_1"),
    "qwen2.5-coder": ("qwen2.5-coder-0.5b-instruct-q4_k_m.gguf", "qwen2.5-coder-0.5b-instruct-q4_k_m"),
    "gemma3-270m": ("gemma-3-270m-q4_k_m.gguf", "gemma-3-270m-q4_k_m"),
}


def _models_dir() -> Path:
    from assistant.config import models_dir

    return models_dir()


def missing_setup(why: str) -> None:
    """Something scripts/dev.sh test sets up is missing (a model, chromium, the example plugin):
    skip with `why`, or fail under dev.sh itself (ASSISTANT_DEV_SETUP=1), which set it up."""
    if os.environ.get("ASSISTANT_DEV_SETUP") == "1":
        pytest.fail(why)
    pytest.skip(why)


def real_model_path(name: str) -> Path:
    """Path of a real model; missing, the test skips naming the command that fetches it."""
    path = _models_dir() / REAL_MODELS[name][0]
    if not path.is_file():
        missing_setup(f"real model {name} is not downloaded ({path}); {PULL_HINT}")
    return path


def golden(name: str) -> dict:
    """llama.cpp's tokenizer and generation cases for a real model."""
    return json.loads((GOLDEN / f"{REAL_MODELS[name][1]}.json").read_text(encoding="utf-8"))


def golden_top32(name: str) -> tuple:
    """llama.cpp's 32 largest first-step logits per generation case: (ids, float32 logits),
    each (n_cases, 32), descending."""
    import numpy as np

    with np.load(GOLDEN / f"{REAL_MODELS[name][1]}.top32.npz") as z:
        return z["ids"].astype(np.int64), z["logits"].astype(np.float32)


@pytest.fixture(autouse=True)
def _real_model_present(request):
    """A `real_model` test that loads the default model some other way (a server, the CLI)
    skips like real_model_path when it was not pulled."""
    if request.node.get_closest_marker("real_model") is not None:
        real_model_path("smollm2")


@pytest.fixture(autouse=True)
def _hermetic(tmp_path, monkeypatch):
    """Every test gets its own data and config directories (the model cache is shared)."""
    models = _models_dir()
    monkeypatch.setenv("ASSISTANT_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("ASSISTANT_MODELS_DIR", str(models))
    monkeypatch.delenv("ASSISTANT_CONFIG", raising=False)


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    """Tiny random models of each architecture: {arch: path}."""
    from ggufmaker import make_model

    d = tmp_path_factory.mktemp("tiny")
    return {arch: make_model(d / f"{arch}.gguf", arch=arch, seed=i, tied=(arch != "qwen2"))
            for i, arch in enumerate(("llama", "qwen2", "gemma3"))}


@pytest.fixture(scope="session")
def smollm2_path():
    return real_model_path("smollm2")


@pytest.fixture(scope="session")
def smollm2(smollm2_path):
    from assistant.core.engine import Model

    return Model(str(smollm2_path), memory="speed", n_ctx=2048, name="smollm2")
