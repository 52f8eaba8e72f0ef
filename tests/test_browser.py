"""The chat page in Debian's chromium, driven by playwright, against SmolLM2 on loopback."""

from __future__ import annotations

import os

import pytest

from browser_util import browser, open_imported  # noqa: F401 (browser is a fixture)
from server_util import LiveServer

pytestmark = [pytest.mark.browser, pytest.mark.real_model, pytest.mark.slow]

HOSTILE = '<img src=x onerror="window.__pwned=1"> <script>window.__pwned=2</script> [x](javascript:window.__pwned=3)'


@pytest.fixture(scope="module")
def live(tmp_path_factory, smollm2_path):
    d = tmp_path_factory.mktemp("browser")
    srv = LiveServer({"DB_PATH": str(d / "db.sqlite")})
    srv.wait_ready()
    yield srv
    srv.stop()


@pytest.fixture()
def page(browser, live):
    # bypass_csp lets playwright evaluate its wait conditions; it also means the markup
    # test below proves the renderer itself is safe, without help from our CSP header.
    ctx = browser.new_context(viewport={"width": 1100, "height": 760}, bypass_csp=True)
    pg = ctx.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.goto(live.url + "/")
    pg.wait_for_selector("#model option", state="attached")
    yield pg
    ctx.close()
    assert errors == [], errors


def send(page, text):
    page.fill("#input", text)
    page.keyboard.press("Enter")


def test_chat_streams_stops_and_survives_reload(page, live):
    send(page, "What is the capital of Japan?")
    page.wait_for_selector(".msg.assistant")
    page.wait_for_function("document.querySelector('#send') && !document.querySelector('#send').hidden", timeout=60000)
    answer = page.inner_text(".msg.assistant .body")
    assert "Tokyo" in answer
    assert "tok/s" in page.inner_text("#stats")
    # Shift+Enter makes a newline, not a send.
    page.fill("#input", "line one")
    page.keyboard.press("Shift+Enter")
    assert page.input_value("#input") == "line one\n"
    page.fill("#input", "")
    # A long answer, stopped with the Stop button.
    send(page, "Write a very long story about a dragon and a knight, with many chapters.")
    page.wait_for_function("document.querySelectorAll('.msg.assistant').length == 2 && "
                           "document.querySelectorAll('.msg.assistant')[1].innerText.length > 20", timeout=60000)
    page.click("#stop")
    page.wait_for_function("!document.querySelector('#send').hidden", timeout=10000)
    assert "(stopped)" in page.inner_text(".msg.assistant >> nth=1")
    # Reload: the conversation is listed and opens with its messages.
    page.reload()
    page.wait_for_selector("#conversations li")
    page.wait_for_selector(".msg.user")
    assert "What is the capital of Japan?" in page.inner_text("#messages")
    assert "Tokyo" in page.inner_text("#messages")


def test_hostile_markup_stays_inert(page, live):
    conv = {"title": "hostile", "messages": [
        {"role": "user", "content": "show me html"},
        {"role": "assistant", "content": "Here:\n\n" + HOSTILE + "\n\n```html\n" + HOSTILE + "\n```"}]}
    open_imported(page, live.url, conv)
    page.wait_for_selector(".msg.assistant .code-block")
    assert page.evaluate("window.__pwned") is None
    assert page.query_selector(".msg.assistant img") is None and page.query_selector(".msg.assistant script") is None
    assert "onerror" in page.inner_text(".msg.assistant .body")
    hrefs = page.eval_on_selector_all(".msg.assistant a", "els => els.map(e => e.href)")
    assert all(h.startswith("http") for h in hrefs)


def test_switch_model_and_slash_command(page, live):
    page.select_option("#model", "qwen2.5-coder")
    send(page, "/calc 6*7")
    page.wait_for_selector(".tool-event >> text=42", state="attached", timeout=20000)
    page.click("#new-chat")
    send(page, "Reply with one word: hello")
    page.wait_for_function("document.querySelector('.msg.assistant') && !document.querySelector('#send').hidden",
                           timeout=120000)
    assert "qwen2.5-coder" in page.inner_text(".msg.assistant .who")
    assert page.inner_text(".msg.assistant .body").strip()


def test_narrow_window_and_screenshots(browser, live, tmp_path):
    ctx = browser.new_context(viewport={"width": 390, "height": 760}, color_scheme="dark", bypass_csp=True)
    pg = ctx.new_page()
    pg.goto(live.url + "/")
    pg.wait_for_selector("#model option", state="attached")
    def sidebar_on_screen():
        box = pg.eval_on_selector("#sidebar", "e => e.getBoundingClientRect().right")
        return box > 10

    open_imported(pg, live.url, {"title": "Markdown rendering", "model": "qwen2.5-coder", "messages": [
        {"role": "user", "content": "Show me a table, some code and some math."},
        {"role": "assistant", "content": RENDERING_SAMPLE, "model": "qwen2.5-coder"}]})
    pg.wait_for_selector(".msg.assistant .katex-display")
    # The table scrolls inside its own box instead of widening the page.
    assert pg.evaluate("document.documentElement.scrollWidth") <= 390
    _shot(pg, "narrow-dark.png")
    assert pg.is_visible("#open-sidebar") and not sidebar_on_screen()
    pg.click("#open-sidebar")
    pg.wait_for_timeout(400)
    assert sidebar_on_screen()
    ctx.close()


RENDERING_SAMPLE = """Here is the comparison you asked for.

| Language | Typing | Hello world |
|---|---|---|
| Python | dynamic | `print("hi")` |
| Rust | static | `println!("hi");` |

```python
def area(r: float) -> float:
    return math.pi * r ** 2
```

The area of a circle is $A = \\pi r^2$, and its perimeter integrates to

$$\\int_0^{2\\pi} r\\,d\\theta = 2\\pi r$$

- [x] table
- [x] code
- [ ] a proof (left to the reader)
"""


def _shot(pg, name):
    out = os.environ.get("ASSISTANT_SCREENSHOTS")
    if out:
        pg.screenshot(path=os.path.join(out, name))


def test_real_answer_branches_and_screenshots(browser, live):
    """A real answer, regenerated into a second branch with < 2/2 >; the README's screenshots
    when ASSISTANT_SCREENSHOTS names a directory."""
    for scheme in ("light", "dark"):
        ctx = browser.new_context(viewport={"width": 1100, "height": 760}, color_scheme=scheme, bypass_csp=True)
        pg = ctx.new_page()
        pg.goto(live.url + "/")
        pg.wait_for_selector("#model option", state="attached")
        if scheme == "light":
            pg.select_option("#model", "qwen2.5-coder")
            pg.evaluate("$('s-temperature').value = '0'")  # the settings panel stays closed
            send(pg, "Write a Python function that returns the squares of a list of numbers, with a short explanation.")
            pg.wait_for_function("document.querySelector('.msg.assistant') && !state.generating", timeout=180000)
            assert pg.query_selector(".msg.assistant .code-block code .hljs-keyword") is not None
            cid = pg.evaluate("state.conversationId")
        else:
            pg.evaluate(f"localStorage.setItem('conversation', '{cid}')")
            pg.reload()
            pg.wait_for_selector(".msg.assistant .code-block")
        pg.wait_for_timeout(300)
        _shot(pg, f"chat-{scheme}.png")
        ctx.close()
    # Markdown rendering: a table, code and math (an imported answer, so the picture shows each).
    ctx = browser.new_context(viewport={"width": 1100, "height": 760}, bypass_csp=True)
    pg = ctx.new_page()
    pg.goto(live.url + "/")
    conv = {"title": "Markdown rendering", "model": "qwen2.5-coder", "messages": [
        {"role": "user", "content": "Show me a table, some code and some math."},
        {"role": "assistant", "content": RENDERING_SAMPLE, "model": "qwen2.5-coder"}]}
    open_imported(pg, live.url, conv)
    pg.wait_for_selector(".msg.assistant .katex-display")
    pg.wait_for_function("document.fonts.status === 'loaded'")
    assert pg.eval_on_selector_all(".msg.assistant table td", "els => els.length") == 6
    _shot(pg, "markdown.png")
    # A branched conversation: SmolLM2 answers, Regenerate makes a second answer beside it.
    pg.click("#new-chat")
    pg.select_option("#model", "smollm2")
    send(pg, "Give me a name for a friendly robot.")
    pg.wait_for_function("document.querySelector('.msg.assistant .regen') && !state.generating", timeout=120000)
    first = pg.inner_text(".msg.assistant .body")
    pg.evaluate("$('s-seed').value = '7'; $('s-temperature').value = '1.0'")
    pg.click(".msg.assistant .regen")
    pg.wait_for_function("document.querySelector('.msg.assistant .branch-pos') && !state.generating", timeout=120000)
    assert pg.inner_text(".msg.assistant .branch-pos") == "2/2"
    pg.hover(".msg.assistant")
    _shot(pg, "branches.png")
    pg.click(".msg.assistant [aria-label='Previous version']")
    pg.wait_for_function("document.querySelector('.msg.assistant .branch-pos').innerText == '1/2'")
    assert pg.inner_text(".msg.assistant .body") == first
    ctx.close()
