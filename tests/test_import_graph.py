"""Imports go one way (web -> server -> chat -> core): scripts/import_graph.py checks the source."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "import_graph.py"


def _load_script():
    spec = importlib.util.spec_from_file_location("import_graph", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["import_graph"] = module  # dataclasses look the module up by name
    spec.loader.exec_module(module)
    return module


def _write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_the_repository_has_no_cycle_and_no_upward_import():
    out = subprocess.run([sys.executable, str(SCRIPT), str(REPO)], capture_output=True, text=True)
    problems = [line for line in out.stdout.splitlines() if line.startswith(("upward:", "cycle:", "no layer:"))]
    assert problems == [], "\n".join(problems)
    assert out.returncode == 0, out.stdout + out.stderr
    # Every module is listed with its imports, e.g. the command line's.
    cli = next(line for line in out.stdout.splitlines() if line.startswith("assistant.cli [entry]: "))
    assert "assistant.config" in cli and "assistant.server" in cli


def test_importing_the_server_does_not_import_the_command_line():
    code = "import sys, assistant.server; print(sorted(m for m in sys.modules if m.startswith('assistant')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0, out.stderr
    loaded = eval(out.stdout)  # a list of module names, printed by the line above
    assert "assistant.server" in loaded
    assert "assistant.cli" not in loaded and "assistant.bench" not in loaded


def test_a_cycle_and_an_upward_import_are_reported_with_their_lines(tmp_path):
    graph = _load_script()
    _write(tmp_path, {
        "assistant/__init__.py": "",
        "assistant/version.py": "__version__ = '1'\n",
        "assistant/core/__init__.py": "",
        "assistant/core/gguf.py": "import os\n\ndef f():\n    from ..chat import run\n",
        "assistant/chat.py": "from .core import gguf\nfrom .errors import ChatError\n",
        "assistant/errors.py": "from . import version\n",
        "assistant/hookspecs.py": "",
        "assistant/config.py": "from . import __version__\n",
        "assistant/mystery.py": "",
        "plugins/__init__.py": "",
        "plugins/clock.py": "from assistant.hookspecs import hookimpl\nfrom assistant.errors import ChatError\n",
    })
    edges, problems = graph.check(tmp_path)
    assert [e.dst for e in edges["assistant.errors"]] == ["assistant.version"]  # a submodule, not the package
    assert [e.dst for e in edges["assistant.plugins.clock"]] == ["assistant.errors", "assistant.hookspecs"]
    assert sorted(problems) == [
        "cycle: assistant.chat -> assistant.core.gguf -> assistant.chat "
        "(at assistant/chat.py:1, assistant/core/gguf.py:4)",
        "no layer: assistant/mystery.py: assistant.mystery is in no layer; add it to LAYERS in scripts/import_graph.py",
        "upward: assistant/config.py:1: assistant.config (base) imports assistant (entry)",
        "upward: assistant/core/gguf.py:4: assistant.core.gguf (core) imports assistant.chat (chat)",
    ]
    assert graph.main(["import_graph.py", str(tmp_path)]) == 1


def test_a_clean_tree_passes(tmp_path, capsys):
    graph = _load_script()
    _write(tmp_path, {
        "assistant/__init__.py": "def load():\n    from .chat import run\n",
        "assistant/chat.py": "from .core.gguf import open_gguf\n",
        "assistant/core/__init__.py": "",
        "assistant/core/gguf.py": "",
    })
    assert graph.main(["import_graph.py", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("layers, lowest first: core < base < plugins < chat < workers < server < entry\n")
    assert "assistant [entry]: assistant.chat\n" in out
    assert "0 problem(s) in 4 modules" in out
