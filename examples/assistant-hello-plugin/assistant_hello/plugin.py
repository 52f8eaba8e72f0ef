"""Example plugin: one prompt format, one tool, one output filter.

Installed, it is found through the ``assistant`` entry-point group; ``assistant plugins``
lists it with the hooks it implements.
"""

from assistant.formats import PromptFormat
from assistant.hookspecs import hookimpl


def shout(text: str) -> str:
    """Repeat the text in capitals.

    text: what to shout
    """
    return text.upper() + "!"


def pirate(messages, add_generation_prompt, tools=None):
    out = "".join(f"{m['role'].upper()} (arr): {m['content']}\n" for m in messages)
    return out + ("ASSISTANT (arr):" if add_generation_prompt else "")


@hookimpl
def register_tools(register):
    register(shout)


@hookimpl
def register_prompt_formats(register):
    register(PromptFormat("pirate", pirate, ["USER (arr):"], "Talk like a pirate"))


@hookimpl
def filter_output(text, model):
    return text.replace("Hello", "Ahoy")
