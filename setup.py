"""Build hook: compile the inference core and GGUF reader with mypyc.

Everything else (CLI, web, plugins) stays interpreted. Set ASSISTANT_NO_MYPYC=1
to build a pure-Python package (what an editable development install uses).
"""
import os
from pathlib import Path

from setuptools import setup

COMPILED = sorted(
    str(p)
    for p in Path("assistant/core").rglob("*.py")
    # numba compiles the kernels from their Python source, not from mypyc's extension.
    if p.name not in ("__init__.py", "kernels.py")
)

ext_modules = []
if os.environ.get("ASSISTANT_NO_MYPYC", "") not in ("1", "true", "yes"):
    from mypyc.build import mypycify

    ext_modules = mypycify(["--strict", "--follow-imports=silent", *COMPILED], opt_level="3", group_name="assistant_core")

setup(ext_modules=ext_modules)
