"""`-m` takes a models.toml name or a .gguf path in every command, and every command turns
the project's errors (a broken GGUF, a missing file, an unknown name) into one line
`Error: ...` with a non-zero exit, never a traceback. Subprocesses, tiny generated models."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import urllib.request

import pytest

from conftest import NEUTRAL_CWD


def cli(*args, stdin="", timeout=300):
    return subprocess.run([sys.executable, "-m", "assistant", *args], capture_output=True, text=True, input=stdin,
                          timeout=timeout, cwd=NEUTRAL_CWD, env={**os.environ, "ASSISTANT_DEBUG": "0"})


@pytest.fixture(scope="module")
def model_file(tiny_models):
    return str(tiny_models["llama"])


@pytest.fixture(scope="module")
def text_file(tmp_path_factory):
    p = tmp_path_factory.mktemp("ppl") / "t.txt"
    p.write_text("the quick brown fox jumps over the lazy dog " * 8)
    return str(p)


@pytest.fixture(scope="module")
def broken(model_file, tmp_path_factory):
    """A truncated file, one with a bad magic, and one whose tensor count is absurd."""
    d = tmp_path_factory.mktemp("broken")
    good = open(model_file, "rb").read()
    files = {"truncated": good[: len(good) // 2], "bad-magic": b"GGUX" + good[4:],
             "huge-count": good[:8] + struct.pack("<Q", 1 << 60) + good[16:]}
    for name, data in files.items():
        (d / f"{name}.gguf").write_bytes(data)
    return {name: str(d / f"{name}.gguf") for name in files}


# Every command that takes a model, as argument lists with {m} for the model and a check
# that its success output came from that model.
COMMANDS = {
    "run": ["run", "-m", "{m}", "-p", "hello", "-n", "3", "--temperature", "0", "--json"],
    "chat": ["chat", "-m", "{m}", "-n", "3", "--temperature", "0"],
    "bench": ["bench", "-m", "{m}", "--prompt", "8", "--gen", "3", "--reps", "1", "--json"],
    "info": ["info", "-m", "{m}", "--json"],
    "info-argument": ["info", "{m}", "--json"],
    "perplexity": ["perplexity", "-m", "{m}", "{text}", "--ctx", "16", "--chunks", "1"],
    "tokenize": ["tokenize", "{m}", "hello world"],
}
ERROR_MESSAGES = {"truncated": "lies outside the file", "bad-magic": "bad magic b'GGUX' at offset 0",
                  "huge-count": "tensor count 1152921504606846976 at offset 8 exceeds"}


def _args(cmd, model, text):
    return [a.replace("{m}", model).replace("{text}", text) for a in COMMANDS[cmd]]


def _assert_one_line_error(out, *needles):
    assert out.returncode != 0, out.stdout
    assert "Traceback" not in out.stderr, out.stderr
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), out.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.mark.parametrize("cmd", sorted(COMMANDS))
def test_every_command_takes_a_gguf_path(cmd, model_file, text_file):
    out = cli(*_args(cmd, model_file, text_file), stdin="hi\n/quit\n")
    assert out.returncode == 0, out.stderr
    if cmd == "run":
        assert json.loads(out.stdout)["model"] == os.path.basename(model_file)
        assert len(json.loads(out.stdout)["tokens"]) == 3
    elif cmd == "chat":
        assert f"Chatting with {os.path.basename(model_file)}" in out.stdout
    elif cmd == "bench":
        assert json.loads(out.stdout)["decode_tps"] > 0
    elif cmd.startswith("info"):
        assert json.loads(out.stdout)["architecture"] == "llama"
    elif cmd == "perplexity":
        assert "perplexity:" in out.stdout
    else:
        assert "->" in out.stdout


@pytest.mark.parametrize("cmd", sorted(COMMANDS))
def test_a_missing_file_is_named(cmd, tmp_path, text_file):
    missing = str(tmp_path / "no-such-model.gguf")
    _assert_one_line_error(cli(*_args(cmd, missing, text_file), stdin="/quit\n"), f"model file '{missing}' does not exist")


@pytest.mark.parametrize("cmd", sorted(COMMANDS))
def test_an_unknown_name_lists_the_known_ones(cmd, text_file):
    _assert_one_line_error(cli(*_args(cmd, "no-such-model", text_file), stdin="/quit\n"),
                           "no usable model named 'no-such-model'", "smollm2")


# Commands that must not get as far as a model: serve checks the file before it listens.
ONLY_BROKEN = {"serve": ["serve", "-m", "{m}", "--port", "0"],
               "quantize": ["quantize", "{m}", "{m}.q8_0.gguf", "--type", "q8_0"]}


@pytest.mark.parametrize("kind", sorted(ERROR_MESSAGES))
@pytest.mark.parametrize("cmd", sorted(COMMANDS) + sorted(ONLY_BROKEN))
def test_broken_files_give_one_line_errors(cmd, kind, broken, text_file):
    args = [a.replace("{m}", broken[kind]) for a in ONLY_BROKEN[cmd]] if cmd in ONLY_BROKEN \
        else _args(cmd, broken[kind], text_file)
    _assert_one_line_error(cli(*args, stdin="hi\n/quit\n", timeout=60), ERROR_MESSAGES[kind])


def test_serve_serves_a_gguf_path(model_file):
    """`serve -m FILE.gguf` serves that file under its file name (the llama-server habit)."""
    proc = subprocess.Popen([sys.executable, "-m", "assistant", "serve", "-m", model_file, "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=NEUTRAL_CWD)
    try:
        line = proc.stdout.readline()
        name = os.path.basename(model_file)
        assert f"assistant is running on {name}: open http://127.0.0.1:" in line, line + proc.stderr.read()
        url = line.split("open ")[1].strip().rstrip("/")
        with urllib.request.urlopen(url + "/v1/models", timeout=30) as r:
            assert name in [m["id"] for m in json.load(r)["data"]]
        body = json.dumps({"prompt": "hello", "max_tokens": 3, "temperature": 0}).encode()
        req = urllib.request.Request(url + "/v1/completions", data=body, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=120) as r:
            answer = json.load(r)
        assert answer["model"] == name and answer["usage"]["completion_tokens"] == 3
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_config_and_pull_errors_are_one_line(broken, tmp_path):
    """A models.toml entry naming a broken file, a TOML syntax error, an entry pull cannot fetch."""
    cfg = tmp_path / "models.toml"
    cfg.write_text(f'[models.broken]\npath = "{broken["bad-magic"]}"\n[models.nosource]\nfile = "nosource.gguf"\n'
                   f'[models.badkey]\npath = "x.gguf"\ncontext_length = "long"\n')
    _assert_one_line_error(cli("--config", str(cfg), "run", "-m", "broken", "-p", "hi"), "bad magic")
    _assert_one_line_error(cli("--config", str(cfg), "serve", "-m", "broken", "--port", "0"), "bad magic")
    _assert_one_line_error(cli("--config", str(cfg), "pull", "nosource"), "has no source that pull understands")
    _assert_one_line_error(cli("--config", str(cfg), "info", "badkey"),
                           "models.badkey.context_length must be an integer")
    bad_toml = tmp_path / "bad.toml"
    bad_toml.write_text("models = [\n")
    _assert_one_line_error(cli("--config", str(bad_toml), "chat", "-m", "mine"), "no usable model named 'mine'",
                           "bad.toml: not valid TOML")
