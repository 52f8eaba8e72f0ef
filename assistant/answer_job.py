"""The job a model worker runs for the chat page: answer a conversation, saving as it goes."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from .chat import ChatRunner, ChatSettings, Message
from .config import ModelEntry
from .errors import ChatError
from .events import Event
from .store import Store
from .tools import ToolContext

SAVE_EVERY_S = 1.0


@dataclass
class AnswerJob:
    """A worker job that answers message ``parent`` (default: the active leaf) with the branch
    that leads to it as history, and saves the answer as its child.

    Saving happens here, in the worker, so a closed tab cannot leave a half-saved answer:
    the row is created ``partial``, rewritten whole about once a second, and marked
    ``complete`` (``stopped`` when stopped, ``error`` on failure) at the end.
    """

    store: Store
    tools: dict[str, Any]
    conv_id: str
    entry: ModelEntry
    settings: ChatSettings
    parent: int | None = None
    pieces: list[str] = field(default_factory=list)  # the answer so far (joined when saved)
    tool_events: list[dict[str, Any]] = field(default_factory=list)
    mid: int = 0  # its row
    last_save: float = 0.0

    @property
    def text(self) -> str:
        return "".join(self.pieces)

    def __call__(self, backend: Any, cancel: Callable[[], bool]) -> Iterator[Event]:
        messages, parent_id = self._prompt()
        self.mid = self.store.add_message(self.conv_id, "assistant", "", status="partial", model=self.entry.name,
                                          sampling=self.settings.sampling.as_dict(), parent_id=parent_id)
        self.last_save = time.monotonic()
        yield {"type": "start", "message_id": self.mid, "model": self.entry.name}
        try:
            runner = ChatRunner(backend, self.tools, ToolContext(self.store.path))
            for ev in runner.run(messages, self.settings, cancel):
                yield self._saved(ev)
        except ChatError as err:
            self.store.update_message(self.mid, content=self.text, status="error")
            yield {"type": "error", "message": str(err), "message_id": self.mid}
        except BaseException:
            self.store.update_message(self.mid, content=self.text, status="partial" if self.text else "error")
            raise

    def _prompt(self) -> tuple[list[Message], int | None]:
        """The messages to answer (system prompt first) and the id of the last one."""
        conv = self.store.get_conversation(self.conv_id)
        path = self.store.messages(self.conv_id) if self.parent is None \
            else self.store.messages(self.conv_id, leaf=self.parent)
        messages: list[Message] = []
        system = conv["system_prompt"] or self.entry.system_prompt
        if system:
            messages.append({"role": "system", "content": system})
        for m in path:
            if m["status"] != "error" and m["role"] in ("user", "assistant", "tool") \
                    and not (m["role"] == "assistant" and not m["content"]):
                messages.append({"role": m["role"], "content": m["content"]})
        return messages, path[-1]["id"] if path else None

    def _saved(self, ev: Event) -> Event:
        """``ev`` with what it adds to the answer saved (a finished answer's ``done`` gets its id)."""
        if ev["type"] == "token":
            self.pieces.append(ev["text"])  # `self.text +=` would copy the whole answer per token
            if time.monotonic() - self.last_save > SAVE_EVERY_S:
                self.store.update_message(self.mid, content=self.text)
                self.last_save = time.monotonic()
        elif ev["type"] in ("tool_call", "tool_result"):
            self.tool_events.append({k: v for k, v in ev.items() if k != "type"} | {"kind": ev["type"]})
        elif ev["type"] == "done":
            st = ev.get("stats", {})
            status = "stopped" if ev["finish_reason"] == "cancelled" else "complete"
            text = ev.get("content", self.text) if status == "complete" else self.text
            self.store.update_message(self.mid, content=text, status=status,
                                      tool_calls=self.tool_events or None,
                                      prompt_tokens=int(st.get("prompt_tokens", 0)),
                                      completion_tokens=int(st.get("generated_tokens", 0)),
                                      prefill_s=float(st.get("prefill_s", 0.0)),
                                      decode_s=float(st.get("decode_s", 0.0)))
            return {"type": "done", "finish_reason": ev["finish_reason"], "stats": st, "message_id": self.mid}
        return ev
