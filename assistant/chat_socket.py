"""The chat page's websocket (``/ws``, docs/protocol.md): one :class:`WebsocketSession` per tab
reads its commands and relays its answer's events."""

from __future__ import annotations

import json
import queue
import threading
from typing import Any

from flask import Blueprint
from flask_sock import Sock  # type: ignore[import-untyped]  # ships no type hints

from .answer_job import AnswerJob
from .chat import ChatSettings, parse_response_format
from .config import ModelEntry
from .errors import ChatError
from .events import Event, ws_frames
from .http import MAX_MESSAGE_CHARS, MAX_TOKENS_LIMIT, BadRequest, int_field, request_sampling
from .state import AppState, app_state
from .store import StoreError
from .tools import ToolContext, parse_slash_command, run_tool
from .worker import Busy, Job

bp = Blueprint("chat_socket", __name__)
sock = Sock()
COMMANDS = ("send", "regenerate", "edit")


@sock.route("/ws", bp=bp)  # type: ignore[untyped-decorator]
def ws_chat(ws: Any) -> None:
    state = app_state()
    # A client that never reads fills the socket buffers; without a timeout our sends (and
    # the ping thread's) would block forever and the generation would hold its slot.
    ws.sock = WholeFrameSocket(ws.sock, state.send_timeout)
    WebsocketSession(state, ws).serve()


class WholeFrameSocket:
    """A websocket's socket whose sends write the whole frame or fail.

    simple_websocket writes each frame with a single ``socket.send``. On a socket with a
    timeout that writes only what fits in the send buffer and returns the count, and the
    library drops the rest: a frame bigger than the free space (a long answer going to a slow
    reader) corrupted the stream. ``sendall`` writes frames whole, within ``timeout`` seconds
    or raising; the lock keeps the chat thread's frames and the ping thread's from
    interleaving. Everything else is the wrapped socket's.
    """

    def __init__(self, sock: Any, timeout: float) -> None:
        sock.settimeout(timeout)
        self._sock = sock
        self._send_lock = threading.Lock()

    def send(self, data: bytes) -> int:
        with self._send_lock:
            self._sock.sendall(data)
        return len(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


class WebsocketSession:
    """One browser tab: reads JSON commands, relays the current job's events."""

    def __init__(self, state: AppState, ws: Any) -> None:
        self.state = state
        self.store = state.store
        self.ws = ws
        self.job: Job | None = None
        self.job_conversation = ""
        self.notices: queue.SimpleQueue[dict[str, Any]] = queue.SimpleQueue()

    def send(self, obj: dict[str, Any]) -> None:
        self.ws.send(json.dumps(obj, ensure_ascii=False))

    def emit(self, ev: Event) -> None:
        """Send an event as the protocol's frames."""
        for frame in ws_frames(ev):
            self.send(frame)

    def serve(self) -> None:
        with self.state.sessions_lock:
            self.state.sessions.add(self)
        try:
            self.send({"type": "hello", "default_model": self.state.default_model})
            while True:
                self._drain()
                while not self.notices.empty():
                    self.send(self.notices.get_nowait())
                # Idle tabs wake four times a second so other tabs' changes arrive promptly.
                raw = self.ws.receive(timeout=0.02 if self.job is not None else 0.25)
                if raw is not None:
                    self._handle_raw(raw)
        except Exception:  # connection closed (ConnectionClosed) or broken: free the slot
            pass
        finally:
            with self.state.sessions_lock:
                self.state.sessions.discard(self)
            if self.job is not None:
                self.job.cancel()

    def _drain(self) -> None:
        job = self.job
        if job is None:
            return
        while True:
            try:
                ev = job.events.get_nowait()
            except queue.Empty:
                return
            if ev is None:
                self.job = None
                self.state.changed(self.job_conversation, exclude=self)
                return
            self.emit(ev)

    def _handle_raw(self, raw: Any) -> None:
        try:
            if isinstance(raw, bytes):
                raw = raw.decode("utf-8")
            msg = json.loads(raw)
            if not isinstance(msg, dict) or not isinstance(msg.get("type"), str):
                raise BadRequest("each message must be a JSON object with a \"type\"")
            self._handle(msg)
        except (BadRequest, StoreError, KeyError) as err:
            self.send({"type": "error", "message": str(err.args[0]) if err.args else str(err)})
        except (json.JSONDecodeError, UnicodeDecodeError):
            self.send({"type": "error", "message": "malformed message: expected JSON"})
        except Busy as err:
            self.send({"type": "error", "code": "busy", "message": str(err)})
        except ChatError as err:
            self.send({"type": "error", "message": str(err)})

    def _handle(self, msg: dict[str, Any]) -> None:
        kind = msg["type"]
        if kind == "ping":
            self.send({"type": "pong"})
        elif kind == "stop":
            if self.job is not None:
                self.job.cancel()
        elif kind not in COMMANDS:
            raise BadRequest(f"unknown message type {kind!r}; expected send, stop, regenerate, edit or ping")
        elif self.job is not None:
            raise BadRequest("an answer is still being generated; stop it first")
        else:
            self._answer(kind, msg)

    def _answer(self, kind: str, msg: dict[str, Any]) -> None:
        """Store what a send, regenerate or edit asks, then queue the answer."""
        cid = msg.get("conversation_id")
        model = msg.get("model") or None
        if model is not None and not isinstance(model, str):
            raise BadRequest("model must be a string")
        entry = self.state.entry(model)
        if cid is not None and not isinstance(cid, str):
            raise BadRequest("conversation_id must be a string")
        settings = request_settings(entry, msg)  # validate everything before storing anything
        if kind == "send":
            cid, uid = self._send(cid, entry, msg)
            if uid is None:
                return  # a slash command ran its tool: nothing to answer
        elif cid is None:
            raise BadRequest("regenerate needs conversation_id" if kind == "regenerate"
                             else "edit needs conversation_id, message_id (int) and content")
        elif kind == "regenerate":
            uid = self._question(cid, msg.get("message_id"))
        else:
            uid = self._edit(cid, msg)
        self.store.update_conversation(cid, model=entry.name, settings={
            "sampling": settings.sampling.as_dict(), "max_tokens": settings.max_tokens, "tools": settings.use_tools})
        self.state.changed(cid, exclude=self)
        self.job_conversation = cid
        job = AnswerJob(self.store, self.state.tools, cid, entry, settings, parent=uid)
        self.job = self.state.manager.submit(entry.name, job)

    def _send(self, cid: str | None, entry: ModelEntry, msg: dict[str, Any]) -> tuple[str, int | None]:
        """Store a new user message (in a new conversation when ``cid`` is None): (conversation,
        the message to answer, or None when a slash command answered it)."""
        content = msg.get("content")
        if not isinstance(content, str) or not content.strip():
            raise BadRequest("content must be a non-empty string")
        if len(content) > MAX_MESSAGE_CHARS:
            raise BadRequest(f"a message is limited to {MAX_MESSAGE_CHARS} characters")
        system = msg.get("system_prompt")
        if cid is None:
            conv = self.store.create_conversation(title=content.strip().splitlines()[0][:60], model=entry.name,
                                                  system_prompt=system if isinstance(system, str) else "")
            cid = str(conv["id"])
            self.send({"type": "conversation", "conversation": conv})
        else:
            self.store.get_conversation(cid)
        if isinstance(system, str):
            self.store.update_conversation(cid, system_prompt=system)
        slash = parse_slash_command(content.strip(), self.state.tools)
        uid = self.store.add_message(cid, "user", content)
        self.send({"type": "user_message", "id": uid, "conversation_id": cid})
        if slash is None:
            return cid, uid
        self._run_slash(cid, *slash)
        return cid, None

    def _run_slash(self, cid: str, tool: Any, args: dict[str, Any]) -> None:
        """``/calc 2+2`` and the like: run the tool at once and store its result as the answer."""
        self.emit({"type": "tool_call", "name": tool.name, "arguments": args, "error": ""})
        res = run_tool(tool, args, ToolContext(self.store.path))
        content = res.content if res.ok else f"error: {res.content}"
        mid = self.store.add_message(cid, "tool", content, tool_calls=[{"name": tool.name, "arguments": args}])
        self.emit({"type": "tool_result", "name": tool.name, "ok": res.ok, "content": content, "message_id": mid})
        self.emit({"type": "done", "finish_reason": "tool", "message_id": mid})
        self.state.changed(cid, exclude=self)

    def _question(self, cid: str, target: Any) -> int:
        """The question an answer ``target`` answered (default: the active branch's last one)."""
        if target is not None:
            found = [m for m in self.store.all_messages(cid) if m["id"] == target and m["role"] == "assistant"]
            if not found or found[0]["parent_id"] is None:
                raise BadRequest(f"no answer {target!r} to regenerate in this conversation")
            return int(found[0]["parent_id"])
        last_user = [m["id"] for m in self.store.messages(cid) if m["role"] == "user"]
        if not last_user:
            raise BadRequest("there is no user message to answer")
        return int(last_user[-1])

    def _edit(self, cid: str, msg: dict[str, Any]) -> int:
        """The edited text becomes a sibling of the old message, which stays."""
        mid = msg.get("message_id")
        content = msg.get("content")
        if not isinstance(mid, int) or not isinstance(content, str) or not content.strip():
            raise BadRequest("edit needs conversation_id, message_id (int) and content")
        found = [m for m in self.store.all_messages(cid) if m["id"] == mid and m["role"] == "user"]
        if not found:
            raise BadRequest(f"no user message {mid} in this conversation")
        uid = self.store.add_message(cid, "user", content, parent_id=found[0]["parent_id"])
        self.send({"type": "user_message", "id": uid, "conversation_id": cid})
        return uid


def request_settings(entry: ModelEntry, msg: dict[str, Any]) -> ChatSettings:
    """The answer settings a websocket command asks for, on top of the model's defaults."""
    sampling = request_sampling(entry, msg)
    max_tokens = int_field(msg, "max_tokens", entry.max_tokens, 1, MAX_TOKENS_LIMIT)
    try:  # "answer as JSON": the same constraint as the API's response_format
        schema = parse_response_format(msg.get("response_format"))
    except ValueError as err:
        raise BadRequest(str(err)) from None
    return ChatSettings(max_tokens=max_tokens, sampling=sampling, use_tools=msg.get("tools", True) is not False,
                        json_schema=schema)
