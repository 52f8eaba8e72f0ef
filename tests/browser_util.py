"""Debian's chromium through playwright, shared by the browser tests and the render benchmark."""

from __future__ import annotations

import os
import shutil

import pytest

from conftest import missing_setup

CHROMIUM = os.environ.get("ASSISTANT_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="module")
def browser():
    if not shutil.which(CHROMIUM) and not os.path.exists(CHROMIUM):
        missing_setup(f"{CHROMIUM} is missing: apt-get install chromium (scripts/dev.sh test does it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        yield b
        b.close()


def open_imported(page, url: str, conv: dict) -> str:
    """Import ``conv`` through the API and open it in ``page`` (as a reload would); its id."""
    import json
    import urllib.request

    req = urllib.request.Request(url + "/api/import", data=json.dumps(conv).encode(), method="POST",
                                 headers={"Content-Type": "application/json", "Origin": url})
    cid = json.loads(urllib.request.urlopen(req).read())["id"]
    page.evaluate(f"localStorage.setItem('conversation', '{cid}')")
    page.reload()
    return cid
