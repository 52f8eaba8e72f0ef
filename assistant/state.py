"""What the routes share, built once by ``create_app`` and kept on the app:
``app.extensions["assistant"]``, which :func:`app_state` returns inside a request."""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass, field
from typing import Any, Protocol

from flask import current_app

from .config import ModelEntry, Registry
from .http import UnknownModel
from .store import Store
from .tools import registered_tools
from .worker import ModelManager

EXTENSION = "assistant"


class Listener(Protocol):
    """An open tab: other tabs' changes are put on its ``notices``."""

    notices: queue.SimpleQueue[dict[str, Any]]


@dataclass
class AppState:
    """What the views share: registry, model workers, store, options, the open tabs."""

    registry: Registry
    store: Store
    manager: ModelManager
    default_model: str
    api_key: str
    allowed_hosts: set[str]
    send_timeout: float
    sessions: set[Listener] = field(default_factory=set)
    sessions_lock: threading.Lock = field(default_factory=threading.Lock)
    _tools: dict[str, Any] | None = None

    def broadcast(self, event: dict[str, Any], exclude: Listener | None = None) -> None:
        """Tell every open tab (but ``exclude``) about a change, e.g. another tab's new turn."""
        with self.sessions_lock:
            targets = [s for s in self.sessions if s is not exclude]
        for s in targets:
            s.notices.put(event)

    def changed(self, conversation_id: str, exclude: Listener | None = None, **extra: Any) -> None:
        """Tell the other tabs that a conversation changed (they fetch it again)."""
        self.broadcast({"type": "changed", "conversation_id": conversation_id, **extra}, exclude)

    @property
    def tools(self) -> dict[str, Any]:
        if self._tools is None:
            self._tools = registered_tools()
        return self._tools

    def entry(self, name: str | None) -> ModelEntry:
        """The model ``name`` means (the default when None): a model's own name or one of the
        ``aliases`` models.toml gives it, for the websocket and the OpenAI API alike."""
        if name is None:
            try:
                return self.registry.get(self.default_model)
            except KeyError as err:  # the default itself is broken: say why (models.toml's error)
                raise UnknownModel(str(err.args[0])) from None
        resolved = self.registry.resolve(name)
        if resolved is None:  # "" too; and no models.toml errors (local paths) in this answer
            aliases = sorted(a for e in self.registry.models.values() for a in e.aliases)
            raise UnknownModel(f"the model {name!r} does not exist; available: "
                               f"{', '.join(sorted(self.registry.models)) or 'none'}"
                               + (f" (aliases: {', '.join(aliases)})" if aliases else ""))
        return self.registry.get(resolved)


def app_state() -> AppState:
    """The running app's state (inside a request or a websocket)."""
    state: AppState = current_app.extensions[EXTENSION]
    return state
