"""``assistant pull`` from where models live: URLs and Hugging Face repos, served here by a
local HTTP server on 127.0.0.1 that hands out a fixture file and misbehaves on request."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from assistant.config import ModelEntry, load_registry, source_url
from assistant.pull import PullError, progress_line, pull, pull_target
from conftest import NEUTRAL_CWD

FIXTURE = Path(__file__).parent / "data" / "tokenizers" / "llama2-spm.vocab.gguf"
PAYLOAD = FIXTURE.read_bytes()
SHA = hashlib.sha256(PAYLOAD).hexdigest()
HALF = len(PAYLOAD) // 2
TOKEN = "hf_test_token"


class Handler(BaseHTTPRequestHandler):
    """Routes: /files/NAME (honours Range), /drop/NAME (the first answer stops halfway),
    /norange/NAME (ignores Range), /redirect/NAME (302 to /files), OWNER/REPO/resolve/main/NAME
    as a Hub (gated-* owners want the bearer token; the Hub redirects to /files), else 404."""

    def log_message(self, *args):  # keep pytest's output clean
        pass

    def do_GET(self):
        srv = self.server
        srv.log.append((self.path, self.headers.get("Range"), self.headers.get("Authorization")))
        parts = self.path.strip("/").split("/")
        if parts[0] == "files":
            return self._send(honour_range=True)
        if parts[0] == "norange":
            return self._send(honour_range=False)
        if parts[0] == "drop":
            if self.path not in srv.dropped:
                srv.dropped.add(self.path)
                return self._send(honour_range=True, stop_at=HALF)
            return self._send(honour_range=True)
        if parts[0] == "redirect":
            return self._redirect(f"/files/{parts[-1]}")
        if len(parts) >= 5 and parts[2:4] == ["resolve", "main"]:
            if parts[0].startswith("gated") and self.headers.get("Authorization") != f"Bearer {TOKEN}":
                return self._status(401, "Unauthorized")
            return self._redirect(f"/files/{parts[-1]}")
        return self._status(404, "Not Found")

    def _status(self, code, reason):
        self.send_response(code, reason)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _redirect(self, where):
        self.send_response(302)
        self.send_header("Location", where)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _send(self, honour_range, stop_at=None):
        start = 0
        rng = self.headers.get("Range")
        if honour_range and rng and rng.startswith("bytes="):
            start = int(rng[6:].split("-")[0])
        if start >= len(PAYLOAD) and honour_range and rng:
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{len(PAYLOAD)}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = PAYLOAD[start:]
        self.send_response(206 if start else 200)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(PAYLOAD) - 1}/{len(PAYLOAD)}")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if stop_at is not None:
            self.wfile.write(body[:stop_at - start])
            self.wfile.flush()
            self.close_connection = True  # the rest never comes
            return
        self.wfile.write(body)


class Server(ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        # A client that stops reading (a refused size, a full disk) breaks our pipe: expected.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


@pytest.fixture
def server():
    srv = Server(("127.0.0.1", 0), Handler)
    srv.log = []
    srv.dropped = set()
    srv.daemon_threads = True
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    srv.url = f"http://127.0.0.1:{srv.server_address[1]}"
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()


@pytest.fixture
def cache(tmp_path, monkeypatch):
    d = tmp_path / "models"
    monkeypatch.setenv("ASSISTANT_MODELS_DIR", str(d))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    return d


def entry(url, sha256="", size=0, name="m"):
    return ModelEntry(name=name, file=f"{name}.gguf", sha256=sha256, size=size, source={"url": url})


def test_pull_a_url_from_the_command_line_with_progress(server, cache):
    url = f"{server.url}/files/llama2-spm.vocab.gguf"
    env = {**os.environ, "ASSISTANT_MODELS_DIR": str(cache)}
    out = subprocess.run([sys.executable, "-m", "assistant", "pull", url], capture_output=True, text=True,
                         env=env, timeout=120, cwd=NEUTRAL_CWD)
    assert out.returncode == 0, out.stderr
    final = cache / "llama2-spm.vocab.gguf"
    assert final.read_bytes() == PAYLOAD and not list(cache.glob("*.partial"))
    assert "MB/s" in out.stderr and "0.7/0.7 MB" in out.stderr and "done" in out.stderr
    assert str(final) in out.stdout and f"assistant chat -m {final}" in out.stdout
    # A second pull finds the file and fetches nothing.
    n = len(server.log)
    again = subprocess.run([sys.executable, "-m", "assistant", "pull", url], capture_output=True, text=True,
                           env=env, timeout=120, cwd=NEUTRAL_CWD)
    assert again.returncode == 0 and len(server.log) == n


def test_dropped_connection_keeps_the_partial_file_and_the_next_pull_resumes(server, cache):
    e = entry(f"{server.url}/drop/m.gguf", sha256=SHA)
    with pytest.raises(PullError, match="connection lost.*run the same pull again to resume"):
        pull(e, retries=0)
    partial = cache / "m.gguf.partial"
    assert partial.stat().st_size == HALF and not (cache / "m.gguf").exists()
    assert pull(e, retries=0).read_bytes() == PAYLOAD
    assert server.log[-1][1] == f"bytes={HALF}-"  # only the second half was asked for
    assert not partial.exists()


def test_dropped_connection_resumes_by_itself(server, cache):
    path = pull(entry(f"{server.url}/drop/m.gguf", sha256=SHA), retries=2)
    assert path.read_bytes() == PAYLOAD
    assert [r for _p, r, _a in server.log] == [None, f"bytes={HALF}-"]


def test_server_that_ignores_range_makes_us_start_over(server, cache):
    cache.mkdir()
    (cache / "m.gguf.partial").write_bytes(b"\xff" * HALF)  # not even the right bytes
    path = pull(entry(f"{server.url}/norange/m.gguf", sha256=SHA))
    assert path.read_bytes() == PAYLOAD
    assert server.log[-1][1] == f"bytes={HALF}-"  # we asked to resume; the 200 restarted it


def test_complete_partial_file_is_finished_without_refetching(server, cache):
    cache.mkdir()
    (cache / "m.gguf.partial").write_bytes(PAYLOAD)  # interrupted just before the rename
    assert pull(entry(f"{server.url}/files/m.gguf", sha256=SHA)).read_bytes() == PAYLOAD


def test_wrong_sha256_removes_the_download(server, cache):
    with pytest.raises(PullError, match="sha256 mismatch.*removed"):
        pull(entry(f"{server.url}/files/m.gguf", sha256="0" * 64))
    assert not list(cache.iterdir())


def test_wrong_size_is_refused_before_downloading(server, cache):
    with pytest.raises(PullError, match=f"is {len(PAYLOAD)} bytes but models.toml says size = 1234"):
        pull(entry(f"{server.url}/files/m.gguf", size=1234))
    assert not list(cache.iterdir())


def test_redirect_is_followed(server, cache):
    assert pull(entry(f"{server.url}/redirect/m.gguf", sha256=SHA)).read_bytes() == PAYLOAD
    assert [p for p, _r, _a in server.log] == ["/redirect/m.gguf", "/files/m.gguf"]


def test_resume_through_a_redirect_keeps_the_range(server, cache):
    cache.mkdir()
    (cache / "m.gguf.partial").write_bytes(PAYLOAD[:HALF])
    assert pull(entry(f"{server.url}/redirect/m.gguf", sha256=SHA)).read_bytes() == PAYLOAD
    assert server.log == [("/redirect/m.gguf", f"bytes={HALF}-", None), ("/files/m.gguf", f"bytes={HALF}-", None)]


def test_gated_repo_from_the_command_line_is_one_clear_line(server, cache):
    env = {**os.environ, "ASSISTANT_MODELS_DIR": str(cache), "HF_ENDPOINT": server.url}
    out = subprocess.run([sys.executable, "-m", "assistant", "pull", "hf:gated-org/Model-GGUF/m.gguf"],
                         capture_output=True, text=True, env=env, timeout=120, cwd=NEUTRAL_CWD)
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert "401" in out.stderr and "HF_TOKEN" in out.stderr
    env["HF_TOKEN"] = TOKEN
    ok = subprocess.run([sys.executable, "-m", "assistant", "pull", "hf:gated-org/Model-GGUF/m.gguf"],
                        capture_output=True, text=True, env=env, timeout=120, cwd=NEUTRAL_CWD)
    assert ok.returncode == 0, ok.stderr
    assert (cache / "m.gguf").read_bytes() == PAYLOAD


def test_hf_source_reads_resolve_main_at_hf_endpoint_with_the_token(server, cache, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    e = ModelEntry(name="g", file="g.gguf", sha256=SHA, source={"hf": "gated-org/Model-GGUF", "file": "m.Q4_K_M.gguf"})
    assert source_url(e.source) == f"{server.url}/gated-org/Model-GGUF/resolve/main/m.Q4_K_M.gguf"
    assert pull(e).read_bytes() == PAYLOAD
    (hub, _r, auth), (cdn, _r2, auth2) = server.log
    assert hub == "/gated-org/Model-GGUF/resolve/main/m.Q4_K_M.gguf" and auth == f"Bearer {TOKEN}"
    assert cdn == "/files/m.Q4_K_M.gguf" and auth2 is None  # the token stays with the Hub


def test_gated_repo_without_token_says_to_set_hf_token(server, cache, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    e = pull_target("hf:gated-org/Model-GGUF/m.gguf", load_registry())
    with pytest.raises(PullError, match=r"401.*HF_TOKEN=hf_"):
        pull(e)
    assert not list(cache.glob("*"))


def test_missing_file_is_a_clear_404(server, cache):
    with pytest.raises(PullError, match=r"not found \(404\); check the repo and file name"):
        pull(entry(f"{server.url}/nothing/here.gguf"))


def test_unreachable_server_is_a_clear_error(cache):
    with pytest.raises(PullError, match="cannot reach 127.0.0.1:9"):
        pull(entry("http://127.0.0.1:9/m.gguf"), retries=0)


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs Linux's /dev/full to simulate a full disk")
def test_full_disk_is_a_clear_error(server, cache):
    cache.mkdir()
    # Writes to /dev/full fail with ENOSPC, exactly as on a full disk.
    (cache / "m.gguf.partial").symlink_to("/dev/full")
    with pytest.raises(PullError, match="the disk is full.*free space in"):
        pull(entry(f"{server.url}/files/m.gguf"))


def test_pull_targets():
    reg = load_registry()
    hf = pull_target("hf:bartowski/Llama-3.2-1B-Instruct-GGUF/sub/Llama-3.2-1B-Instruct-Q4_K_M.gguf", reg)
    assert hf.file == "Llama-3.2-1B-Instruct-Q4_K_M.gguf" and hf.name == "Llama-3.2-1B-Instruct-Q4_K_M"
    assert hf.source == {"hf": "bartowski/Llama-3.2-1B-Instruct-GGUF", "file": "sub/Llama-3.2-1B-Instruct-Q4_K_M.gguf"}
    url = pull_target("https://example.org/x/My%20Model.gguf?download=1", reg)
    assert url.file == "My Model.gguf" and url.source == {"url": "https://example.org/x/My%20Model.gguf?download=1"}
    assert pull_target("smollm2", reg).name == "smollm2"
    for bad, msg in (("hf:owner/repo", "hf:OWNER/REPO/FILE.gguf"), ("https://example.org/", "file name"),
                     ("no-such-model", "no usable model.*or give a URL")):
        with pytest.raises(PullError, match=msg):
            pull_target(bad, reg)


def test_models_toml_url_and_hf_sources(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    cfg = tmp_path / "models.toml"
    cfg.write_text(
        '[models.a]\nsource = { hf = "Qwen/Qwen3-0.6B-GGUF", file = "Qwen3-0.6B-Q8_0.gguf" }\n'
        '[models.b]\nfile = "b.gguf"\nsource = { url = "https://example.org/dl/b.gguf" }\n'
        '[models.c]\nsource = { hf = "no-slash", file = "x.gguf" }\n'
        '[models.d]\nsource = { url = "ftp://example.org/x.gguf" }\n'
        '[models.e]\nsource = { hf = "o/r", file = "x.gguf", mirror = "y" }\n')
    reg = load_registry(str(cfg))
    a = reg.models["a"]
    assert a.file == "Qwen3-0.6B-Q8_0.gguf"  # taken from the source when not given
    assert source_url(a.source) == "https://huggingface.co/Qwen/Qwen3-0.6B-GGUF/resolve/main/Qwen3-0.6B-Q8_0.gguf"
    assert source_url(reg.models["b"].source) == "https://example.org/dl/b.gguf"
    errors = "\n".join(reg.errors)
    assert "models.c.source.hf must be a Hugging Face repo" in errors
    assert "models.d.source.url must be an http(s) URL" in errors
    assert "models.e.source.mirror is not a source setting" in errors
    assert not {"c", "d", "e"} & set(reg.models)


def test_progress_line_shows_speed_and_time_left():
    line = progress_line("m.gguf", 50_000_000, 100_000_000, 10_000_000.0)
    assert "50.0/100.0 MB" in line and "10.0 MB/s" in line and "0:05 left" in line
    assert progress_line("m.gguf", 1, 8_000_000_000, 1_000_000.0).endswith("2:13:19 left")
    assert progress_line("m.gguf", 100, 100, 5e6).endswith("done")
    assert "-.- MB/s" in progress_line("m.gguf", 0, 100, 0.0)


def test_commented_popular_entries_are_valid_when_uncommented(tmp_path, monkeypatch):
    """Uncommenting the popular models in models.toml gives working entries that read
    huggingface.co's resolve/main URLs."""
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    text = (Path(__file__).parents[1] / "models.toml").read_text(encoding="utf-8")
    block = text[text.index("# Popular chat models"):]
    lines = [ln[2:] for ln in block.splitlines() if ln.startswith(("# [models.", "# description", "# source",
                                                                    "# prompt_format", "# context_length"))]
    cfg = tmp_path / "popular.toml"
    cfg.write_text("\n".join(lines) + "\n")
    reg = load_registry(str(cfg))
    assert not [e for e in reg.errors if "popular.toml" in e], reg.errors
    names = {"llama-3.2-1b", "llama-3.2-3b", "qwen3-0.6b", "qwen3-8b", "gemma-2-2b", "phi-3.5-mini",
             "phi-4-mini", "smollm3-3b", "mistral-7b"}
    assert names <= set(reg.models)
    for name in names:
        e = reg.models[name]
        assert e.file.endswith(".gguf") and "~" in e.description and " GB" in e.description
        assert source_url(e.source) == f"https://huggingface.co/{e.source['hf']}/resolve/main/{e.file}"


def test_models_toml_and_pull_name_a_url_s_cache_file_alike(tmp_path):
    """A url source in models.toml and `assistant pull URL` keep the download under the same
    file name (query and fragment dropped, escapes decoded); a URL whose last part decodes to
    a path of its own (%2F) is refused by both, never joined to the cache directory."""
    urls = ["https://example.org/x/My%20Model.gguf?download=1#top", "https://example.org/dl/m.gguf#frag"]
    bad = "https://example.org/dl/x%2F..%2F..%2Fevil.gguf"
    cfg = tmp_path / "models.toml"
    cfg.write_text("".join(f'[models.m{i}]\nsource = {{ url = "{u}" }}\n' for i, u in enumerate(urls + [bad])))
    reg = load_registry(str(cfg))
    for i, u in enumerate(urls):
        assert reg.models[f"m{i}"].file == pull_target(u, reg).file
    assert [reg.models["m0"].file, reg.models["m1"].file] == ["My Model.gguf", "m.gguf"]
    assert "m2" not in reg.models and any("models.m2.source" in e for e in reg.errors)
    with pytest.raises(PullError, match="file name"):
        pull_target(bad, reg)
