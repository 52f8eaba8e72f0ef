"""The chat layer: messages in, streamed answer out, with prompt formats, context policy
and tool calling.

A *backend* turns a message list into a stream of events (the local engine here; remote
OpenAI-compatible servers through the backend hook). :class:`ChatRunner` adds the tool
loop on top: when the model writes a tool call (tagged, bare or fenced JSON; see
:mod:`assistant.toolcalls`, the parser the OpenAI API uses too) the call is parsed,
run with a time limit, its result appended as a ``tool`` message, and generation goes on,
for at most ``MAX_TOOL_ROUNDS`` rounds.

Events are :class:`assistant.events.Event` dicts (``token``, ``trimmed``, ``tool_call``,
``tool_result``, ``done``, ``error``), which the server passes on to the websocket and the
OpenAI API (docs/protocol.md).
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Generator, Iterator

from .config import ModelEntry, local_model_file
from .core.engine import GenerationSettings, Model, Piece
from .core.json_constraint import ConstraintFactory, JsonSchemaError, check_schema
from .core.sampling import SamplingSettings, TokenConstraint, log_softmax
from .core.transformer import ContextFullError
from .core.tokenizer import Tokenizer
from .errors import ChatError
from .events import Alternative, Event
from .formats import PromptFormat, TemplateError, auto_format, fold_system, without_old_thinking
from .loading import load_local_model
from .plugin_manager import get_plugins
from .toolcalls import ToolCall, VisibleEnd, parse_tool_calls, syntax_markers
from .tools import Tool, ToolContext, registered_tools, run_tool

Message = dict[str, Any]
Cancel = Callable[[], bool]

MAX_TOOL_ROUNDS = 4
# The named format for a file without a chat template, by general.architecture.
FALLBACK_FORMATS = {"gemma": "gemma", "gemma2": "gemma", "gemma3": "gemma", "phi3": "phi-3", "qwen3": "qwen3"}
MAX_CACHED_SCHEMAS = 16


@dataclass
class ChatSettings:
    """Per-request options on top of the model's defaults from models.toml."""

    max_tokens: int = 512
    sampling: SamplingSettings = field(default_factory=SamplingSettings)
    stop: list[str] = field(default_factory=list)
    tools: list[str] = field(default_factory=list)
    use_tools: bool = True
    logprobs: int = 0
    context_policy: str = "drop_oldest"  # or "error"
    json_schema: Any = None  # the answer must be JSON matching this schema ({}: any JSON); None: free text
    echo: bool = False  # completions: report the prompt's tokens (with logprobs) first


def parse_response_format(v: Any, where: str = "response_format") -> Any:
    """The schema a ``response_format`` asks for (None for text); ValueError names what is wrong.

    Accepts OpenAI's ``{"type": "text" | "json_object" | "json_schema", "json_schema": {"schema": ...}}``,
    Ollama's ``"json"`` or a bare schema object.
    """
    if v is None or v == "text":
        return None
    if v == "json":
        return {}
    if not isinstance(v, dict):
        raise ValueError(f"{where} must be an object such as {{\"type\": \"json_object\"}}")
    kind = v.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        schema: Any = {"type": "object"}
    elif kind == "json_schema":
        spec = v.get("json_schema")
        if not isinstance(spec, dict) or not isinstance(spec.get("schema", {}), dict):
            raise ValueError(f"{where}.json_schema must be an object with a \"schema\" object")
        schema = spec.get("schema", {})
    elif kind is None and "type" not in v:
        raise ValueError(f"{where} needs a type: text, json_object or json_schema")
    elif isinstance(kind, str) and kind not in ("object", "array", "string", "number", "integer", "boolean", "null"):
        raise ValueError(f"{where}.type {kind!r} is not supported; use text, json_object or json_schema")
    else:
        schema = v  # a bare JSON Schema (Ollama's format)
    try:
        check_schema(schema)
    except JsonSchemaError as err:
        raise ValueError(f"{where}: {err}") from None
    return schema


def prompt_formats() -> dict[str, PromptFormat]:
    """Every prompt format the plugins register, by name."""
    found: dict[str, PromptFormat] = {}

    def register(fmt: PromptFormat) -> None:
        found[fmt.name] = fmt

    get_plugins().call_safely("register_prompt_formats", register=register)
    return found


def prompt_tokens(tok: Tokenizer, text: str) -> list[int]:
    """Token ids of a rendered chat prompt, control tokens parsed. A template that writes the
    BOS itself (Llama 3's, Gemma's) would get a second one from the tokenizer; as llama.cpp's
    server does, only one is kept."""
    ids = tok.encode(text, True, True)
    bos = tok.vocab.bos_id
    if tok.vocab.add_bos and len(ids) >= 2 and ids[0] == bos and ids[1] == bos:
        del ids[0]
    return ids


class LocalBackend:
    """Chat over a model loaded in this process."""

    kind = "local"

    def __init__(self, entry: ModelEntry, model: Model) -> None:
        self.entry = entry
        self.model = model
        self.name = entry.name
        self.format = self._pick_format()
        self.lock = threading.Lock()  # one generation at a time on this model
        self._constraints: dict[str, ConstraintFactory] = {}

    @classmethod
    def load(cls, entry: ModelEntry) -> "LocalBackend":
        try:
            path = local_model_file(entry)
        except FileNotFoundError as err:
            raise ChatError(str(err)) from None
        return cls(entry, load_local_model(path, entry))

    def _pick_format(self) -> PromptFormat:
        fmt_name = self.entry.prompt_format
        formats = prompt_formats()
        if fmt_name == "auto":
            if self.model.chat_template:
                vocab = self.model.tokenizer.vocab
                bos = vocab.tokens[vocab.bos_id] if vocab.bos_id >= 0 else ""
                eos = vocab.tokens[vocab.eos_id] if vocab.eos_id >= 0 else ""
                try:
                    return auto_format(self.model.chat_template, bos, eos)
                except TemplateError:
                    pass
            fmt_name = FALLBACK_FORMATS.get(self.model.architecture, "chatml")
            if "<|start_header_id|>" in self.model.tokenizer.vocab.token_to_id:
                fmt_name = "llama-3"
        fmt = formats.get(fmt_name)
        if fmt is None:
            raise ChatError(f"model {self.name!r}: prompt format {fmt_name!r} is not registered; "
                            f"known: auto, {', '.join(sorted(formats))}")
        return fmt

    @property
    def n_ctx(self) -> int:
        return self.model.n_ctx

    def constraint(self, schema: Any) -> TokenConstraint | None:
        """A fresh JSON constraint for ``schema`` (compiled once per schema and kept)."""
        if schema is None:
            return None
        key = json.dumps(schema, sort_keys=True)
        factory = self._constraints.get(key)
        if factory is None:
            try:
                factory = ConstraintFactory(schema, self.model.tokenizer, sorted(self.model.tokenizer.vocab.eog_ids))
            except JsonSchemaError as err:
                raise ChatError(str(err)) from None
            if len(self._constraints) >= MAX_CACHED_SCHEMAS:
                self._constraints.pop(next(iter(self._constraints)))
            self._constraints[key] = factory
        return factory.new()

    def _generation(self, settings: ChatSettings, stop: list[str]) -> GenerationSettings:
        return GenerationSettings(max_tokens=settings.max_tokens, sampling=settings.sampling,
                                  stop=stop + list(settings.stop), logprobs=settings.logprobs,
                                  constraint=self.constraint(settings.json_schema))

    def _token_event(self, piece: Piece, settings: ChatSettings) -> Event:
        """A ``token`` event; with logprobs, each alternative's text and bytes too."""
        ev: Event = {"type": "token", "text": piece.text, "id": piece.token}
        if settings.logprobs:
            ev["logprob"] = piece.logprob
            ev["bytes"] = list(self.model.tokenizer.token_bytes(piece.token))
            ev["top_logprobs"] = [self._alternative(t, lp) for t, lp in piece.top_logprobs]
        return ev

    def _events(self, piece: Piece, settings: ChatSettings) -> list[Event]:
        """A piece's events: a ``token``; the last piece's text and a ``done`` with the stats.
        The one place a :class:`Piece` becomes events."""
        if not piece.done:
            return [self._token_event(piece, settings)]
        st = dict(piece.stats)
        st["n_ctx"] = float(self.n_ctx)
        st["context_used"] = st.get("prompt_tokens", 0.0) + st.get("generated_tokens", 0.0)
        done: Event = {"type": "done", "finish_reason": piece.finish_reason, "stats": st}
        return [{"type": "token", "text": piece.text}, done] if piece.text else [done]

    def _alternative(self, tid: int, logprob: float) -> Alternative:
        raw = self.model.tokenizer.token_bytes(tid)
        return {"id": tid, "token": raw.decode("utf-8", errors="replace"), "bytes": list(raw), "logprob": logprob}

    def render(self, messages: list[Message], tools: list[dict[str, Any]] | None) -> str:
        """The prompt text; ``tools`` are OpenAI-style schemas the template may announce."""
        schemas = tools if tools and self.format.supports_tools else None
        try:
            return self.format.render(messages, True, schemas)
        except TemplateError:
            if self.format.name != "auto" or not messages or messages[0].get("role") != "system":
                raise
            # The file's template refuses a system role (Gemma 2's does): fold it into the first turn.
            return self.format.render(fold_system(messages), True, schemas)

    def fit(self, messages: list[Message], tools: list[dict[str, Any]] | None, settings: ChatSettings) -> tuple[list[int], int]:
        """Prompt ids for ``messages``, dropping the oldest turns (keeping the system prompt)
        until prompt + answer room fits the context. Returns (ids, turns dropped)."""
        reserve = min(settings.max_tokens, self.n_ctx // 4)
        msgs = list(messages)
        dropped = 0
        while True:
            ids = prompt_tokens(self.model.tokenizer, self.render(msgs, tools))
            if len(ids) + reserve <= self.n_ctx:
                return ids, dropped
            if settings.context_policy == "error":
                raise ChatError(f"the conversation needs {len(ids)} tokens plus {reserve} for the answer, "
                                f"but the context holds {self.n_ctx}")
            first = 1 if msgs and msgs[0].get("role") == "system" else 0
            if len(msgs) - first <= 1:
                raise ChatError(f"the last message alone needs {len(ids)} tokens; the context holds "
                                f"{self.n_ctx}. Shorten it or raise context_length in models.toml")
            del msgs[first]
            dropped += 1

    def _prompt_ids(self, messages: list[Message], tools: list[dict[str, Any]] | None,
                    settings: ChatSettings) -> tuple[list[int], int]:
        try:
            return self.fit(messages, tools, settings)
        except TemplateError as err:
            raise ChatError(str(err)) from None

    def stream(self, messages: list[Message], tools: list[dict[str, Any]] | None, settings: ChatSettings,
               cancel: Cancel | None) -> Iterator[Event]:
        """Events for one generation: ``trimmed``?, ``token``*, ``done`` (with stats)."""
        ids, dropped = self._prompt_ids(messages, tools, settings)
        if dropped:
            yield {"type": "trimmed", "dropped": dropped,
                   "message": f"context trimmed: the {dropped} oldest message(s) no longer fit and were left out"}
        gen = self._generation(settings, list(self.format.stop) + list(self.entry.stop))
        try:
            for piece in self.model.generate(ids, gen, cancel):
                yield from self._events(piece, settings)
        except ContextFullError as err:
            raise ChatError(str(err)) from None

    def stream_parallel(self, messages: list[Message], tools: list[dict[str, Any]] | None, settings: ChatSettings,
                        n: int, cancel: Cancel | None) -> Iterator[Event]:
        """Like :meth:`stream` for ``n`` alternatives decoded as one batch; events carry ``index``."""
        ids, _dropped = self._prompt_ids(messages, tools, settings)
        gen = self._generation(settings, list(self.format.stop) + list(self.entry.stop))
        try:
            for i, piece in self.model.generate_parallel(ids, n, gen, cancel):
                for ev in self._events(piece, settings):
                    ev["index"] = i
                    yield ev
        except ContextFullError as err:
            raise ChatError(str(err)) from None

    def complete(self, prompt: str, settings: ChatSettings, cancel: Cancel | None) -> Iterator[Event]:
        """Events for a raw text completion (no chat format)."""
        ids = self.model.tokenize(prompt, add_special=True, parse_special=True)
        if not ids:
            raise ChatError("the prompt is empty")
        if len(ids) >= self.n_ctx:
            raise ChatError(f"the prompt has {len(ids)} tokens; the context holds {self.n_ctx}")
        if settings.echo:
            yield self._prompt_event(ids, settings.logprobs)
        if settings.max_tokens == 0:  # scoring the prompt only
            yield {"type": "done", "finish_reason": "length",
                   "stats": {"prompt_tokens": float(len(ids)), "generated_tokens": 0.0}}
            return
        for piece in self.model.generate(ids, self._generation(settings, []), cancel):
            yield from self._events(piece, settings)

    def _prompt_event(self, ids: list[int], top: int) -> Event:
        """The prompt's tokens, each with its log-probability given the ones before (echo)."""
        tok = self.model.tokenizer
        tokens = [self._alternative(t, 0.0) for t in ids]
        if top:
            rows = self.model.logits(ids)  # (len(ids), n_vocab)
            for i in range(1, len(ids)):
                ls = log_softmax(rows[i - 1])
                tokens[i]["logprob"] = float(ls[ids[i]])
                best = [int(j) for j in (-ls).argsort()[:top]]
                tokens[i]["top_logprobs"] = [self._alternative(j, float(ls[j])) for j in best]
            tokens[0]["top_logprobs"] = []  # nothing comes before it: logprob 0, no alternatives
        return {"type": "prompt", "text": tok.decode(ids), "tokens": tokens}


def plugin_backends() -> dict[str, Callable[[ModelEntry], Any]]:
    """Backend factories that plugins register (``openai`` is a built-in plugin)."""
    factories: dict[str, Callable[[ModelEntry], Any]] = {}
    get_plugins().call_safely("register_backends", register=lambda name, f: factories.setdefault(name, f))
    return factories


def backend_loader(entry: ModelEntry,
                   factories: dict[str, Callable[[ModelEntry], Any]] | None = None) -> Callable[[], Any]:
    """A function that opens ``entry``'s backend: the local engine, or the factory its
    ``backend`` names. ChatError at once for a backend no plugin provides."""
    if entry.backend == "local":
        return lambda: LocalBackend.load(entry)
    found = plugin_backends() if factories is None else factories
    factory = found.get(entry.backend)
    if factory is None:
        known = ", ".join(["local", *sorted(found)])
        raise ChatError(f"model {entry.name!r} uses backend {entry.backend!r}, which no plugin "
                        f"provides (known: {known}); fix `backend` in models.toml or install the plugin")
    return lambda: factory(entry)


class ChatRunner:
    """Runs one assistant turn (possibly several tool rounds) and streams events."""

    def __init__(self, backend: Any, tools: dict[str, Tool] | None = None,
                 context: ToolContext | None = None) -> None:
        self.backend = backend
        self.all_tools = tools if tools is not None else registered_tools()
        self.context = context  # what the tools get to use (the caller's database)

    def enabled_tools(self, settings: ChatSettings) -> list[Tool]:
        if not settings.use_tools:
            return []
        names = settings.tools or list(getattr(self.backend.entry, "tools", []))
        return [self.all_tools[n] for n in names if n in self.all_tools]

    def run(self, messages: list[Message], settings: ChatSettings, cancel: Cancel | None = None) -> Iterator[Event]:
        """Yield events; the final ``done`` event carries ``content`` (the answer) and
        ``new_messages`` (assistant/tool messages produced, for the transcript)."""
        tools = self.enabled_tools(settings)
        msgs = self._filter_messages(without_old_thinking([self._apply_message_filters(m) for m in messages]))
        new_messages: list[Message] = []
        markers = syntax_markers() if tools else []
        schemas = [t.schema() for t in tools] or None
        totals = {"prompt_tokens": 0.0, "generated_tokens": 0.0, "prefill_s": 0.0, "decode_s": 0.0}
        for round_no in range(MAX_TOOL_ROUNDS + 1):
            text, emitted, last_done = yield from self._round(
                self.backend.stream(msgs, schemas, settings, cancel), markers if tools else None, totals)
            calls = parse_tool_calls(text, {t.name for t in tools}, markers)[1] if tools else []
            if not calls or last_done.get("finish_reason") == "cancelled" or round_no == MAX_TOOL_ROUNDS:
                if emitted < len(text) and not calls:
                    yield {"type": "token", "text": text[emitted:]}
                content = self._filter_output(text)
                new_messages.append({"role": "assistant", "content": content})
                stats = dict(last_done.get("stats", {})) | totals
                yield {"type": "done", "finish_reason": last_done.get("finish_reason", "stop"),
                       "stats": stats, "content": content, "new_messages": new_messages}
                return
            new_messages.append({"role": "assistant", "content": text,
                                 "tool_calls": [{"name": c.name, "arguments": c.arguments} for c in calls]})
            msgs.append(new_messages[-1])
            for call in calls:
                yield {"type": "tool_call", "name": call.name, "arguments": call.arguments, "error": call.error}
                content, ok = self._call(call, tools)
                yield {"type": "tool_result", "name": call.name, "ok": ok, "content": content}
                tool_msg = {"role": "tool", "name": call.name, "content": content}
                new_messages.append(tool_msg)
                msgs.append(tool_msg)

    def _round(self, events: Iterator[Event], markers: list[tuple[str, str]] | None,
               totals: dict[str, float]) -> Generator[Event, None, tuple[str, int, Event]]:
        """Pass one generation's events on, with tool-call markup held back from the visible
        text (``markers`` None: no tools, nothing held); returns (whole text, how much of it
        was shown, its ``done``)."""
        text = ""
        emitted = 0
        last_done: Event = {"type": "done"}
        held = VisibleEnd(markers) if markers is not None else None
        for ev in events:
            if ev["type"] == "token":
                text += ev["text"]
                shown = held.update(text) if held is not None else len(text)
                if shown > emitted:
                    if emitted + len(ev["text"]) != shown or shown != len(text):  # not just this token
                        ev = {**ev, "text": text[emitted:shown]}
                    emitted = shown
                    yield ev
            elif ev["type"] == "done":
                last_done = ev
                for k in totals:
                    totals[k] += float(ev.get("stats", {}).get(k, 0.0))
            else:
                yield ev
        return text, emitted, last_done

    def _call(self, call: ToolCall, tools: list[Tool]) -> tuple[str, bool]:
        """Run one call the model wrote: (what the model reads back, whether it worked)."""
        if call.error:
            return f"error: {call.error}", False
        if call.name not in {t.name for t in tools}:
            return f"error: there is no tool named {call.name!r}; available: {', '.join(t.name for t in tools)}", False
        res = run_tool(self.all_tools[call.name], call.arguments, self.context)
        return (res.content if res.ok else f"error: {res.content}"), res.ok

    def _apply_message_filters(self, m: Message) -> Message:
        return {k: v for k, v in m.items() if k in ("role", "content", "name", "tool_calls")}

    def _filter_messages(self, msgs: list[Message]) -> list[Message]:
        for res in get_plugins().call_safely("filter_messages", messages=msgs, model=self.backend.name):
            if isinstance(res, list) and all(isinstance(m, dict) for m in res):
                msgs = res
        return msgs

    def _filter_output(self, text: str) -> str:
        for res in get_plugins().call_safely("filter_output", text=text, model=self.backend.name):
            if isinstance(res, str):
                text = res
        return text


def merged_sampling(entry: ModelEntry, overrides: dict[str, Any] | None) -> SamplingSettings:
    """The entry's sampling defaults with request ``overrides`` (validated)."""
    from .config import parse_sampling

    base = entry.sampling
    if not overrides:
        return base
    return parse_sampling(overrides, f"request for {entry.name}", base)

