"""The browser UI: static HTML, CSS and JavaScript served by assistant.server (no build step)."""
