"""Prompt formats: how a list of chat messages becomes the text a model continues.

A :class:`PromptFormat` renders messages (dicts with ``role`` and ``content``) and names
the strings that end an answer. Named formats (alpaca, vicuna, chatml, ...) are
registered by the built-in ``formats`` plugin; ``auto`` renders the GGUF file's own
``tokenizer.chat_template`` with jinja2's :class:`ImmutableSandboxedEnvironment`, because
templates come from downloaded files and must not reach Python internals.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

Message = dict[str, Any]
Renderer = Callable[[list[Message], bool, list[dict[str, Any]] | None], str]

# Bounds on what a template may produce: a hostile template must not eat the machine.
MAX_RENDERED_CHARS = 4_000_000


class TemplateError(ValueError):
    """A chat template failed to render (or tried something the sandbox forbids)."""


@dataclass
class PromptFormat:
    """A way to render messages, with the strings that stop generation."""

    name: str
    render_fn: Renderer
    stop: list[str] = field(default_factory=list)
    description: str = ""
    supports_tools: bool = False

    def render(self, messages: list[Message], add_generation_prompt: bool = True,
               tools: list[dict[str, Any]] | None = None) -> str:
        """The prompt text for ``messages`` (control tokens in it are parsed as special)."""
        return self.render_fn(messages, add_generation_prompt, tools)


THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"


def split_thinking(text: str) -> tuple[str, str]:
    """(reasoning, answer) of a reply that thinks first (``<think>...</think>answer``, as
    Qwen3 and R1 distills write). An unclosed ``<think>`` is all reasoning; no tags, no reasoning."""
    if THINK_CLOSE in text:
        parts = text.split(THINK_CLOSE)
        return parts[0].split(THINK_OPEN)[-1].strip("\n"), parts[-1].lstrip("\n")
    if text.lstrip().startswith(THINK_OPEN):
        return text.lstrip()[len(THINK_OPEN):].strip("\n"), ""
    return "", text


def last_user_index(messages: list[Message]) -> int:
    """Index of the last user message (-1 if none): replies after it belong to the current turn."""
    for i in range(len(messages) - 1, -1, -1):
        if messages[i].get("role") == "user":
            return i
    return -1


def without_old_thinking(messages: list[Message]) -> list[Message]:
    """``messages`` with the reasoning cut out of every assistant reply before the last user
    message: the model sees earlier answers, not how it reached them (Qwen3's own rule)."""
    last = last_user_index(messages)
    out: list[Message] = []
    for i, m in enumerate(messages):
        content = m.get("content")
        if i < last and m.get("role") == "assistant" and isinstance(content, str) and THINK_OPEN in content:
            m = dict(m)
            m["content"] = split_thinking(content)[1]
        out.append(m)
    return out


def fold_system(messages: list[Message]) -> list[Message]:
    """The system prompt put before the first user message's text, for templates that refuse a
    system role (Gemma 2's raises "System role not supported")."""
    if not messages or messages[0].get("role") != "system":
        return messages
    system = str(messages[0].get("content", ""))
    rest = [dict(m) for m in messages[1:]]
    for m in rest:
        if m.get("role") == "user":
            m["content"] = f"{system}\n\n{m.get('content', '')}"
            break
    return rest


def _raise(message: str) -> None:
    raise TemplateError(message)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


def _tojson(value: Any, indent: int | None = None, ensure_ascii: bool = False, **_: Any) -> str:
    return json.dumps(value, indent=indent, ensure_ascii=ensure_ascii)


def make_environment() -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        undefined=jinja2.Undefined, autoescape=False)
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise
    env.globals["strftime_now"] = _strftime_now
    return env


class JinjaFormat:
    """Renders a GGUF ``tokenizer.chat_template`` in the sandbox."""

    def __init__(self, template: str, bos_token: str = "", eos_token: str = "") -> None:
        self.source = template
        self.bos_token = bos_token
        self.eos_token = eos_token
        try:
            self.template = make_environment().from_string(template)
        except jinja2.TemplateError as err:
            raise TemplateError(f"the model's chat template does not parse: {err}") from None

    def __call__(self, messages: list[Message], add_generation_prompt: bool,
                 tools: list[dict[str, Any]] | None) -> str:
        try:
            out = self.template.render(
                messages=messages, add_generation_prompt=add_generation_prompt,
                bos_token=self.bos_token, eos_token=self.eos_token,
                tools=tools or None, date_string=datetime.now().strftime("%d %b %Y"),
            )
        except TemplateError:
            raise
        except jinja2.exceptions.SecurityError as err:
            raise TemplateError(f"the chat template tried something unsafe and was stopped: {err}") from None
        except Exception as err:
            raise TemplateError(f"the chat template failed: {type(err).__name__}: {err}") from None
        if len(out) > MAX_RENDERED_CHARS:
            raise TemplateError(f"the chat template produced {len(out)} characters; refusing")
        return out


def auto_format(template: str, bos_token: str, eos_token: str) -> PromptFormat:
    """The ``auto`` format of a model: its own chat template."""
    j = JinjaFormat(template, bos_token, eos_token)
    return PromptFormat("auto", j, stop=[], description="the model file's own chat template",
                        supports_tools="tools" in template)
