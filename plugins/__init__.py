"""Built-in plugins: ordinary pluggy plugins shipped with the package as ``assistant.plugins``."""
