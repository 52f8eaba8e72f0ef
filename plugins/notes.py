"""Notes tool: add, list, search and delete short notes kept in the assistant's database."""

from __future__ import annotations

from assistant.hookspecs import hookimpl
from assistant.tools import ToolContext, ToolError

MAX_NOTE_CHARS = 2000
ACTIONS = ("add", "list", "search", "delete")


def notes(action: str, text: str = "", *, context: ToolContext) -> str:
    """Keep notes for the user: add, list, search or delete.

    action: one of add, list, search, delete
    text: the note to add, the words to search for, or the number of the note to delete
    """
    action = action.strip().lower()
    if action not in ACTIONS:
        raise ToolError(f"unknown action {action!r}; use one of {', '.join(ACTIONS)}")
    if "\x00" in text:
        raise ToolError("notes cannot contain NUL bytes")
    store = context.store()  # the database of the server or terminal chat calling
    if action == "add":
        text = text.strip()
        if not text:
            raise ToolError("nothing to add: give the note's text")
        if len(text) > MAX_NOTE_CHARS:
            raise ToolError(f"a note is limited to {MAX_NOTE_CHARS} characters")
        nid = store.add_note(text)
        return f"saved note {nid}: {text}"
    if action == "delete":
        try:
            nid = int(text.strip().lstrip("#"))
        except ValueError:
            raise ToolError(f"delete needs a note number, got {text!r}") from None
        if not store.delete_note(nid):
            raise ToolError(f"there is no note {nid}")
        return f"deleted note {nid}"
    rows = store.list_notes(text.strip() if action == "search" else "")
    if not rows:
        return "no notes" if action == "list" else f"no notes match {text!r}"
    return "\n".join(f"{nid}. {body}" for nid, body in rows)


@hookimpl
def register_tools(register):
    register(notes)
