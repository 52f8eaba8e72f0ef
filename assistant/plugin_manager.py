"""The plugin manager: built-in plugins, entry-point plugins and plugin-directory files.

Built-in features are ordinary plugins (``DEFAULT_PLUGINS``). Third-party plugins arrive
through the ``assistant`` entry-point group, or as ``.py`` files in a directory listed in
models.toml's ``plugin_dirs``. A plugin that fails to import or to register is reported
by name and skipped; the application keeps running. ``ASSISTANT_LOAD_PLUGINS=0`` loads
only the built-ins (tests use it to stay hermetic).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import os
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import pluggy

from . import hookspecs

DEFAULT_PLUGINS = (
    "assistant.plugins.formats",
    "assistant.plugins.calculator",
    "assistant.plugins.clock",
    "assistant.plugins.notes",
    "assistant.plugins.openai_backend",
)


@dataclass
class PluginInfo:
    name: str
    origin: str  # "builtin", "entry point <dist>", or a file path
    hooks: list[str] = field(default_factory=list)
    error: str = ""


class Plugins:
    """A pluggy manager plus what was loaded, from where, and what failed."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager("assistant")
        self.pm.add_hookspecs(hookspecs)
        self.infos: dict[str, PluginInfo] = {}
        self._loaded = False

    def register(self, module: object, name: str, origin: str) -> None:
        try:
            self.pm.register(module, name=name)
        except Exception as err:  # a broken plugin must not stop the app
            self.infos[name] = PluginInfo(name, origin, error=f"failed to register: {err}")
            return
        hooks = sorted(h.name for h in self.pm.get_hookcallers(module) or [])
        self.infos[name] = PluginInfo(name, origin, hooks)

    def unregister(self, name: str) -> None:
        plugin = self.pm.get_plugin(name)
        if plugin is not None:
            self.pm.unregister(plugin)
        self.infos.pop(name, None)

    def load(self, plugin_dirs: list[str] | None = None) -> None:
        """Load built-ins, then (unless disabled) entry points and plugin directories."""
        if self._loaded:
            return
        self._loaded = True
        for modname in DEFAULT_PLUGINS:
            self._import(modname, "builtin")
        if os.environ.get("ASSISTANT_LOAD_PLUGINS", "1") in ("0", "false", "no"):
            return
        for ep in importlib.metadata.entry_points(group="assistant"):
            try:
                module = ep.load()
            except Exception as err:
                self.infos[ep.name] = PluginInfo(ep.name, f"entry point {ep.value}", error=_short(err))
                continue
            self.register(module, ep.name, f"entry point {ep.value}")
        for d in plugin_dirs or []:
            for path in sorted(Path(d).glob("*.py")):
                self._load_file(path)

    def _import(self, modname: str, origin: str) -> None:
        try:
            module = importlib.import_module(modname)
        except Exception as err:
            self.infos[modname] = PluginInfo(modname, origin, error=_short(err))
            return
        self.register(module, modname, origin)

    def _load_file(self, path: Path) -> None:
        name = f"assistant_user_plugin_{path.stem}"
        try:
            spec = importlib.util.spec_from_file_location(name, path)
            if spec is None or spec.loader is None:
                raise ImportError(f"cannot load {path}")
            module: ModuleType = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            spec.loader.exec_module(module)
        except Exception as err:
            self.infos[path.stem] = PluginInfo(path.stem, str(path), error=_short(err))
            return
        self.register(module, path.stem, str(path))

    def call_safely(self, hook_name: str, **kwargs: Any) -> list[Any]:
        """Call a hook implementation by implementation, disabling plugins that raise."""
        results: list[Any] = []
        caller = getattr(self.pm.hook, hook_name)
        for impl in reversed(caller.get_hookimpls()):
            try:
                res = impl.function(**{k: v for k, v in kwargs.items() if k in impl.argnames})
            except Exception as err:
                name = self.pm.get_name(impl.plugin) or "?"
                info = self.infos.get(name)
                if info is not None:
                    info.error = f"{hook_name} raised {_short(err)}"
                continue
            if res is not None:
                results.append(res)
        return results


def _short(err: BaseException) -> str:
    tb = traceback.extract_tb(err.__traceback__)
    where = f" ({Path(tb[-1].filename).name}:{tb[-1].lineno})" if tb else ""
    return f"{type(err).__name__}: {err}{where}"


_plugins: Plugins | None = None


def get_plugins(plugin_dirs: list[str] | None = None) -> Plugins:
    """The process-wide plugin manager, loaded on first use."""
    global _plugins
    if _plugins is None:
        _plugins = Plugins()
        _plugins.load(plugin_dirs)
    return _plugins


def reset_plugins() -> None:
    """Forget the loaded plugins (tests)."""
    global _plugins
    _plugins = None
