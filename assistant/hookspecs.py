"""Every hook a plugin can implement. Hooks are called with keyword arguments."""

import pluggy

hookspec = pluggy.HookspecMarker("assistant")
hookimpl = pluggy.HookimplMarker("assistant")


@hookspec
def register_prompt_formats(register):
    """Register prompt formats: ``register(format)`` with a :class:`assistant.formats.PromptFormat`."""


@hookspec
def register_tools(register):
    """Register tools: ``register(function, name=None)``; a parameter ``context`` gets the call's ``ToolContext``."""


@hookspec
def register_backends(register):
    """Register model backends: ``register(name, factory)``; factory(entry) returns a backend."""


@hookspec
def filter_messages(messages, model):
    """Adjust the message list before it is rendered; return the new list or None."""


@hookspec
def filter_output(text, model):
    """Adjust the generated text after generation; return the new text or None."""


@hookspec
def register_tool_call_syntax(register):
    """Declare how a model family marks tool calls: ``register(open, close="")``, e.g. ``"[TOOL_CALLS]"``."""
