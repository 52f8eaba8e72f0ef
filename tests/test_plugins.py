"""Plugins: built-ins, the example package through its entry point, plugin directories,
and containment of broken plugins."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys

import pytest

from assistant.plugin_manager import Plugins, get_plugins, reset_plugins
from assistant.hookspecs import hookimpl
from conftest import NEUTRAL_CWD, missing_setup


@pytest.fixture()
def fresh(monkeypatch):
    reset_plugins()
    yield
    reset_plugins()


def test_builtins_are_ordinary_plugins(fresh):
    pm = get_plugins()
    assert {"assistant.plugins.formats", "assistant.plugins.calculator", "assistant.plugins.notes"} <= set(pm.infos)
    assert pm.infos["assistant.plugins.calculator"].hooks == ["register_tools"]
    assert all(not i.error for i in pm.infos.values())


def test_example_package_loads_through_entry_point(fresh, monkeypatch):
    eps = [ep for ep in importlib.metadata.entry_points(group="assistant") if ep.name == "hello"]
    if not eps:
        missing_setup("the example plugin is not installed (scripts/dev.sh test installs "
                      "examples/assistant-hello-plugin)")
    monkeypatch.setenv("ASSISTANT_LOAD_PLUGINS", "1")
    from assistant.chat import prompt_formats
    from assistant.tools import registered_tools, run_tool

    pm = get_plugins()
    assert set(pm.infos["hello"].hooks) == {"filter_output", "register_prompt_formats", "register_tools"}
    assert run_tool(registered_tools()["shout"], {"text": "hi"}).content == "HI!"
    assert prompt_formats()["pirate"].render([{"role": "user", "content": "x"}]).endswith("ASSISTANT (arr):")
    out = subprocess.run([sys.executable, "-m", "assistant", "plugins"], capture_output=True, text=True, cwd=NEUTRAL_CWD,
                         env={**__import__("os").environ, "ASSISTANT_LOAD_PLUGINS": "1"})
    assert "hello" in out.stdout and "entry point" in out.stdout


def test_plugin_dir_file_and_broken_plugins_are_contained(fresh, tmp_path, monkeypatch):
    monkeypatch.setenv("ASSISTANT_LOAD_PLUGINS", "1")
    d = tmp_path / "plugins"
    d.mkdir()
    (d / "good.py").write_text("from assistant.hookspecs import hookimpl\n"
                               "def echo(text: str) -> str:\n    '''Echo.'''\n    return text\n"
                               "@hookimpl\ndef register_tools(register):\n    register(echo)\n")
    (d / "broken.py").write_text("raise ImportError('I am broken')\n")
    (d / "raises.py").write_text("from assistant.hookspecs import hookimpl\n"
                                 "@hookimpl\ndef register_tools(register):\n    raise RuntimeError('no')\n")
    pm = Plugins()
    pm.load([str(d)])
    assert pm.infos["broken"].error.startswith("ImportError: I am broken")
    assert "register_tools" in pm.infos["good"].hooks
    import assistant.plugin_manager as mgr

    monkeypatch.setattr(mgr, "_plugins", pm)
    from assistant.tools import registered_tools

    tools = registered_tools()
    assert "echo" in tools and "calculator" in tools
    assert "raised" in pm.infos["raises"].error


def test_filter_hooks_adjust_messages_and_output(fresh):
    class Upper:
        @hookimpl
        def filter_output(self, text, model):
            return text.upper()

        @hookimpl
        def filter_messages(self, messages, model):
            return messages + [{"role": "user", "content": "extra"}]

    pm = get_plugins()
    pm.register(Upper(), "upper", "test")
    try:
        from assistant.chat import ChatRunner, ChatSettings

        class FakeBackend:
            name = "fake"
            entry = type("E", (), {"tools": []})()

            def stream(self, messages, tools, settings, cancel):
                yield {"type": "token", "text": f"{len(messages)} messages"}
                yield {"type": "done", "finish_reason": "stop", "stats": {}}

        done = list(ChatRunner(FakeBackend(), {}).run([{"role": "user", "content": "hi"}], ChatSettings()))[-1]
        assert done["content"] == "2 MESSAGES"
    finally:
        pm.unregister("upper")
