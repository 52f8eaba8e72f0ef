"""models.toml: the model registry, its validation, and where things live on disk.

The package's ``models.toml`` is the default registry; the user's file (``--config``, the
``ASSISTANT_CONFIG`` variable, or ``$XDG_CONFIG_HOME/assistant/models.toml``) overrides
and extends it table by table. A bad entry is disabled with an error that names the file,
the model and the key; it never stops the other entries from working.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from .core.sampling import SAMPLING_FIELDS, SamplingError, SamplingField, SamplingSettings

MEMORY_CHOICES = ("auto", "speed", "lean")
BACKENDS = ("local", "openai")  # built in; plugins may add more
_BACKEND_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")


def _xdg(var: str, default: str) -> Path:
    v = os.environ.get(var)
    return Path(v) if v else Path.home() / default


def config_dir() -> Path:
    return _xdg("XDG_CONFIG_HOME", ".config") / "assistant"


def data_dir() -> Path:
    """Where conversations and notes live (``ASSISTANT_DATA_DIR`` overrides)."""
    v = os.environ.get("ASSISTANT_DATA_DIR")
    return Path(v) if v else _xdg("XDG_DATA_HOME", ".local/share") / "assistant"


def models_dir() -> Path:
    """The model cache that ``assistant pull`` fills (``ASSISTANT_MODELS_DIR`` overrides)."""
    v = os.environ.get("ASSISTANT_MODELS_DIR")
    return Path(v) if v else _xdg("XDG_CACHE_HOME", ".cache") / "assistant" / "models"


def hf_endpoint() -> str:
    """Where ``hf = "owner/repo"`` sources are read (``HF_ENDPOINT`` overrides, as in huggingface_hub)."""
    return (os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")


SOURCE_KEYS = ("url", "hf", "file", "revision", "wheel", "members", "member", "wheels")
_HF_REPO = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*")


def check_source(src: dict[str, Any], where: str) -> None:
    """ValueError unless ``src`` is a url, hf or wheel source with well-formed values."""
    for key in src:
        if key not in SOURCE_KEYS:
            raise ValueError(f"{where}.source.{key} is not a source setting; allowed: {', '.join(SOURCE_KEYS)}")
    if "url" in src:
        _check(isinstance(src["url"], str) and src["url"].startswith(("http://", "https://")),
               where, "source.url", "an http(s) URL", src["url"])
    if "hf" in src:
        _check(isinstance(src["hf"], str) and _HF_REPO.fullmatch(src["hf"]) is not None,
               where, "source.hf", 'a Hugging Face repo "owner/name"', src["hf"])
        f = src.get("file")
        _check(isinstance(f, str) and bool(f) and not f.startswith("/") and ".." not in f.split("/"),
               where, "source.file", "the file's path inside the repo", f)
    if "revision" in src:
        _check(isinstance(src["revision"], str) and bool(src["revision"]), where, "source.revision",
               "a branch, tag or commit", src["revision"])


def path_file_name(path: str) -> str:
    """The cache file a download is kept as: the last part of a URL's path (or a repo file's),
    percent-escapes decoded. ValueError when that cannot be a file name in the cache (empty,
    hidden, or a path of its own once decoded)."""
    from urllib.parse import unquote

    name = unquote(path.rstrip("/").rsplit("/", 1)[-1])
    if not name or name.startswith(".") or "/" in name or "\\" in name or "\0" in name:
        raise ValueError(f"{path} does not end in a file name (like model.Q4_K_M.gguf)")
    return name


def source_url(src: dict[str, Any]) -> str:
    """The download URL of a ``url`` or ``hf`` source ("" for wheel sources)."""
    if isinstance(src.get("url"), str):
        return str(src["url"])
    if isinstance(src.get("hf"), str) and isinstance(src.get("file"), str):
        from urllib.parse import quote

        rev = str(src.get("revision") or "main")
        return f"{hf_endpoint()}/{src['hf']}/resolve/{quote(rev, safe='')}/{quote(str(src['file']))}"
    return ""


def default_registry_text() -> str:
    return resources.files("assistant").joinpath("models.toml").read_text(encoding="utf-8")


# The origin of an entry made from a .gguf path given on the command line.
AD_HOC_ORIGIN = "command line"


class ConfigError(ValueError):
    """models.toml cannot be read at all."""


@dataclass
class ModelEntry:
    """One validated ``[models.NAME]`` table."""

    name: str
    description: str = ""
    path: str = ""  # explicit file path
    file: str = ""  # file name inside the model cache
    sha256: str = ""
    size: int = 0
    source: dict[str, Any] = field(default_factory=dict)
    prompt_format: str = "auto"
    system_prompt: str = ""
    context_length: int = 4096
    memory: str = "auto"
    threads: int = 0
    stop: list[str] = field(default_factory=list)
    sampling: SamplingSettings = field(default_factory=SamplingSettings)
    max_tokens: int = 1024
    tools: list[str] = field(default_factory=list)
    aliases: list[str] = field(default_factory=list)  # other names API clients may use ("gpt-4o-mini")
    tokenizer_model: str = ""
    backend: str = "local"
    base_url: str = ""
    remote_model: str = ""
    api_key_env: str = ""
    timeout: int = 60  # seconds a remote backend may stay silent
    origin: str = ""  # the file this entry came from

    @property
    def local_path(self) -> Path:
        if self.path:
            return Path(os.path.expanduser(self.path))
        return models_dir() / (self.file or f"{self.name}.gguf")

    @property
    def downloaded(self) -> bool:
        return self.backend != "local" or self.local_path.is_file()


@dataclass
class Registry:
    """All models, the default name, and the problems found while reading."""

    models: dict[str, ModelEntry]
    default: str
    errors: list[str]
    files: list[str]
    plugin_dirs: list[str] = field(default_factory=list)

    def resolve(self, name: str) -> str | None:
        """The model a client's name means: a model's own name or one of its aliases."""
        if name in self.models:
            return name
        for entry in self.models.values():
            if name in entry.aliases:
                return entry.name
        return None

    def get(self, name: str | None) -> ModelEntry:
        """The entry called ``name`` (the default when None); KeyError says what exists."""
        key = name or self.default
        if key in self.models:
            return self.models[key]
        # This entry's own problem, else a problem with a whole file (bad TOML, unreadable).
        bad = [e for e in self.errors if f"models.{key}" in e] or [e for e in self.errors if "models." not in e]
        hint = f" ({bad[0]})" if bad else ""
        raise KeyError(
            f"no usable model named {key!r}{hint}; known: {', '.join(sorted(self.models)) or 'none'}"
        )


def _check(cond: bool, where: str, key: str, what: str, got: Any) -> None:
    if not cond:
        raise ValueError(f"{where}.{key} must be {what}, got {got!r}")


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


_SAMPLING = {f.name: f for f in SAMPLING_FIELDS}


def _sampling_rule(f: SamplingField) -> str:
    """What a value of ``f`` must be, in words ("an integer >= 0", "a number between 0 and 1")."""
    kind = "an integer" if f.kind == "int" else "a number"
    return f"{kind} >= {f.lo:g}" if f.hi >= 1e9 else f"{kind} between {f.lo:g} and {f.hi:g}"


def parse_sampling(raw: Any, where: str, base: SamplingSettings | None = None) -> SamplingSettings:
    """Validate a ``sampling`` table (keys and ranges from SAMPLING_FIELDS) into :class:`SamplingSettings`."""
    _check(isinstance(raw, dict), where, "sampling", "a table", raw)
    s = SamplingSettings(**(base.as_dict() if base else {}))  # type: ignore[arg-type]
    for key, value in raw.items():
        f = _SAMPLING.get(key)
        if f is None:
            raise ValueError(f"{where}.sampling.{key} is not a sampling setting; allowed: {', '.join(_SAMPLING)}")
        ok = _is_num(value) and (f.kind == "float" or float(value).is_integer())
        _check(ok, where + ".sampling", key, _sampling_rule(f), value)
        setattr(s, key, float(value) if f.kind == "float" else int(value))
    try:
        s.validate()
    except SamplingError as e:
        raise ValueError(f"{where}.sampling: {e}") from None
    return s


_STR_KEYS = ("description", "path", "file", "sha256", "prompt_format", "system_prompt", "tokenizer_model",
             "base_url", "api_key_env", "backend", "memory")
_INT_KEYS = {"context_length": (16, 1 << 20), "threads": (0, 1024), "size": (0, 1 << 50),
             "max_tokens": (1, 1 << 20), "timeout": (1, 3600)}
# List settings: (what each item must be, in words; whether an empty string is allowed).
_LIST_KEYS = {"stop": ("a list of non-empty strings", False), "tools": ("a list of tool names", True),
              "aliases": ("a list of non-empty names", False)}
_KNOWN_KEYS = frozenset(_STR_KEYS) | set(_INT_KEYS) | set(_LIST_KEYS) | {"source", "sampling", "model"}


def _set_key(e: ModelEntry, key: str, value: Any, where: str) -> None:
    """Check one setting of a model table and store it on ``e``."""
    if key not in _KNOWN_KEYS:
        raise ValueError(f"{where}.{key} is not a known setting; allowed: {', '.join(sorted(_KNOWN_KEYS))}")
    if key in _STR_KEYS or key == "model":
        _check(isinstance(value, str), where, key, "a string", value)
        setattr(e, "remote_model" if key == "model" else key, value)
    elif key in _INT_KEYS:
        lo, hi = _INT_KEYS[key]
        _check(isinstance(value, int) and not isinstance(value, bool) and lo <= value <= hi,
               where, key, f"an integer between {lo} and {hi}", value)
        setattr(e, key, value)
    elif key in _LIST_KEYS:
        what, empty_ok = _LIST_KEYS[key]
        _check(isinstance(value, list) and all(isinstance(s, str) and (empty_ok or s) for s in value),
               where, key, what, value)
        setattr(e, key, list(value))
    elif key == "source":
        _check(isinstance(value, dict), where, key, "a table (url, hf and file, wheel/members or wheels)", value)
        check_source(value, where)
        e.source = dict(value)
    else:
        e.sampling = parse_sampling(value, where)


def _check_entry(e: ModelEntry, where: str) -> None:
    """Checks across settings, once the table is read; a url/hf source names the cache file."""
    _check(e.memory in MEMORY_CHOICES, where, "memory", f"one of {MEMORY_CHOICES}", e.memory)
    # Backends other than "local" come from plugins (register_backends), which may be loaded
    # from this very file's plugin_dirs, so only the name's shape is checked here; a name no
    # plugin provides is reported when the model is used.
    _check(_BACKEND_NAME.fullmatch(e.backend) is not None, where, "backend",
           f"one of {BACKENDS} or a backend a plugin registers (letters, digits, '-', '_')", e.backend)
    if e.backend == "openai":
        _check(e.base_url.startswith(("http://", "https://")), where, "base_url", "an http(s) URL", e.base_url)
    elif e.backend == "local" and not (e.path or e.file) and source_url(e.source):
        # The cache file takes the downloaded file's name, by the rule `assistant pull URL` uses.
        from urllib.parse import urlsplit

        try:
            e.file = path_file_name(urlsplit(source_url(e.source)).path)
        except ValueError:
            _check(False, where, "source", "a URL ending in a file name", e.source)
    elif e.backend == "local" and not (e.path or e.file):
        raise ValueError(f"{where} needs `path` (a .gguf file), `file` (a name in the model cache) or a url/hf source")
    if e.sha256:
        _check(len(e.sha256) == 64 and all(c in "0123456789abcdef" for c in e.sha256.lower()),
               where, "sha256", "64 hexadecimal digits", e.sha256)


def parse_entry(name: str, raw: Any, origin: str) -> ModelEntry:
    """Validate one model table; ValueError names the key and what is allowed."""
    where = f"{origin}: models.{name}"
    _check(isinstance(raw, dict), f"{origin}: models", name, "a table", raw)
    e = ModelEntry(name=name, origin=origin)
    for key, value in raw.items():
        _set_key(e, key, value, where)
    _check_entry(e, where)
    return e


def _read_toml(text: str, origin: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{origin}: not valid TOML: {err}") from None


def user_config_path(explicit: str | None = None) -> Path:
    if explicit:
        return Path(explicit)
    env = os.environ.get("ASSISTANT_CONFIG")
    return Path(env) if env else config_dir() / "models.toml"


def _user_sources(config: str | None, errors: list[str]) -> list[tuple[str, str]]:
    """(origin, text) of the user's models.toml, if there is one to read."""
    user = user_config_path(config)
    if user.is_file():
        try:
            return [(str(user), user.read_text(encoding="utf-8"))]
        except (OSError, UnicodeDecodeError) as err:
            errors.append(f"{user}: cannot read: {err}")
    elif config:
        errors.append(f"{user}: no such file")
    return []


def _read_document(origin: str, doc: dict[str, Any], reg: Registry) -> None:
    """Fold one file's ``default``, ``plugin_dirs`` and ``[models.*]`` tables into ``reg``."""
    if "default" in doc:
        if isinstance(doc["default"], str):
            reg.default = doc["default"]
        else:
            reg.errors.append(f"{origin}: default must be a model name (a string), got {doc['default']!r}")
    pd = doc.get("plugin_dirs", [])
    if isinstance(pd, list) and all(isinstance(p, str) for p in pd):
        reg.plugin_dirs.extend(os.path.expanduser(p) for p in pd)
    else:
        reg.errors.append(f"{origin}: plugin_dirs must be a list of directory paths")
    raw_models = doc.get("models", {})
    if not isinstance(raw_models, dict):
        reg.errors.append(f"{origin}: models must be a table of [models.NAME] tables")
        return
    for name, raw in raw_models.items():
        try:
            reg.models[name] = parse_entry(name, raw, origin)
        except ValueError as err:
            reg.models.pop(name, None)
            reg.errors.append(str(err))


def load_registry(config: str | None = None) -> Registry:
    """Read the default registry and the user's file; bad entries become ``errors``."""
    reg = Registry(models={}, default="", errors=[], files=[])
    sources = [("models.toml (built in)", default_registry_text())] + _user_sources(config, reg.errors)
    for origin, text in sources:
        try:
            doc = _read_toml(text, origin)
        except ConfigError as err:
            reg.errors.append(str(err))
            continue
        reg.files.append(origin)
        _read_document(origin, doc, reg)
    if reg.default and reg.default not in reg.models:
        reg.errors.append(f"default model {reg.default!r} is not a usable entry")
        reg.default = next(iter(reg.models), "")
    elif not reg.default:
        reg.default = next(iter(reg.models), "")
    return reg


def _looks_like_path(text: str) -> bool:
    return text.endswith(".gguf") or os.sep in text or text.startswith("~") or Path(text).is_file()


def model_entry(name_or_path: str | None, registry: Registry) -> ModelEntry:
    """What ``-m`` names, for every command: a models.toml name (the default when None), or a
    path to a .gguf file, which becomes an ad-hoc local entry named after the file.

    KeyError for an unknown name (listing the known ones); FileNotFoundError naming the path
    for a file that does not exist. A registry entry's own file is not checked here: remote
    entries have none, and ``serve`` starts before a model is pulled.
    """
    key = name_or_path or registry.default
    if key in registry.models or not _looks_like_path(key):
        return registry.get(key)
    p = Path(os.path.expanduser(key))
    if not p.is_file():
        raise FileNotFoundError(f"model file {str(p)!r} does not exist" if not p.exists()
                                else f"model file {str(p)!r} is not a file")
    return ModelEntry(name=p.name, path=str(p), origin=AD_HOC_ORIGIN)


def local_model_file(entry: ModelEntry) -> Path:
    """The GGUF file of a local entry; FileNotFoundError says how to get it."""
    path = entry.local_path
    if path.is_file():
        return path
    if entry.origin == AD_HOC_ORIGIN:
        raise FileNotFoundError(f"model file {str(path)!r} does not exist")
    raise FileNotFoundError(f"model {entry.name!r} is not downloaded yet ({path}); run: assistant pull {entry.name}")


def resolve_model_path(name_or_path: str, registry: Registry | None = None) -> tuple[Path, ModelEntry | None]:
    """A registry name or a path to a .gguf file -> (file path, entry or None for a path)."""
    entry = model_entry(name_or_path, registry or load_registry())
    if entry.backend != "local":
        return Path(), entry
    return local_model_file(entry), (None if entry.origin == AD_HOC_ORIGIN else entry)
