"""Errors every layer may raise or catch; plugins import them from here, not from the chat layer."""

from __future__ import annotations


class ChatError(RuntimeError):
    """A request cannot be served (model missing, prompt too long, ...); the message says why."""
