"""`assistant chat`'s conversation (TerminalChat): commands, tool commands, the history kept
across turns, an error, and Ctrl-C in the middle of an answer. In process, with the scripted
backend the browser tests use (its answers are known in advance) and the real ChatRunner."""

from __future__ import annotations

from typing import Any, Callable, Iterator

from scripted_backend import ScriptedBackend

from assistant.chat import ChatRunner, ChatSettings
from assistant.cli import TerminalChat
from assistant.config import ModelEntry
from assistant.errors import ChatError
from assistant.tools import registered_tools

ENTRY = ModelEntry(name="scripted", backend="scripted")


class Interrupted(ScriptedBackend):
    """Says two words of its answer, then the user presses Ctrl-C (or the backend fails)."""

    def __init__(self, entry: Any, error: BaseException) -> None:
        super().__init__(entry)
        self.error = error

    def stream(self, messages: list[dict[str, Any]], tools: Any, settings: Any,
               cancel: Callable[[], bool] | None) -> Iterator[dict[str, Any]]:
        yield {"type": "token", "text": "Half "}
        yield {"type": "token", "text": "said"}
        raise self.error


def session(backend: Any, system: str = "") -> TerminalChat:
    return TerminalChat(ChatRunner(backend, registered_tools()), ChatSettings(), system)


def test_answers_commands_and_history(capsys):
    chat = session(ScriptedBackend(ENTRY), "Be brief.")
    chat.handle("!echo hello there")
    assert chat.history == [{"role": "user", "content": "!echo hello there"},
                            {"role": "assistant", "content": "hello there"}]
    chat.handle("   ")
    chat.handle("/calc 2*(3+4)")
    chat.handle("/system Answer in one word.")
    assert chat.system_prompt == "Answer in one word."
    assert len(chat.history) == 2  # commands are not turns
    chat.handle("/reset")
    assert chat.history == []
    assert capsys.readouterr().out == "hello there\n14\n(system prompt set)\n(conversation cleared)\n"


def test_ctrl_c_keeps_what_was_said(capsys):
    chat = session(Interrupted(ENTRY, KeyboardInterrupt()))
    chat.handle("Tell me a story")
    assert chat.history == [{"role": "user", "content": "Tell me a story"},
                            {"role": "assistant", "content": "Half said"}]
    assert capsys.readouterr().out == "Half said\n(stopped)\n\n"


def test_an_error_drops_the_unanswered_message(capsys):
    chat = session(Interrupted(ENTRY, ChatError("the model went away")))
    chat.handle("Hello")
    assert chat.history == []
    assert capsys.readouterr().out == "Half said\nerror: the model went away\n\n"
