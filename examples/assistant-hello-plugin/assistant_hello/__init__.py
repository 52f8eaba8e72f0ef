"""An example assistant plugin package."""
