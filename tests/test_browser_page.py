"""The chat page in Debian's chromium against the real server with a scripted backend
(tests/scripted_backend.py): rendering, the hostile-input suite, branches, settings per
conversation, two tabs, Esc, keyboard and screen-reader affordances. No model needed."""

from __future__ import annotations

import os
import time

import pytest

from browser_util import browser, open_imported  # noqa: F401 (browser is a fixture)
from scripted_backend import scripted_server

pytestmark = [pytest.mark.browser]

# Every element and attribute the page may not contain after rendering model output.
DOM_CHECK_JS = """() => {
  const bad = [];
  for (const e of document.querySelectorAll('#messages *')) {
    for (const a of e.attributes) {
      if (a.name.toLowerCase().startsWith('on')) bad.push(e.tagName + ' ' + a.name);
      if (['href', 'src', 'action', 'formaction', 'xlink:href', 'data', 'poster', 'background'].includes(a.name.toLowerCase())) {
        const u = new URL(a.value, location.href);
        if (!['http:', 'https:'].includes(u.protocol)) bad.push(e.tagName + ' ' + a.name + '=' + a.value);
        if (['src', 'data', 'poster', 'background'].includes(a.name.toLowerCase()) && u.origin !== location.origin)
          bad.push('foreign ' + e.tagName + ' ' + a.value);
      }
    }
    if (['SCRIPT', 'IFRAME', 'OBJECT', 'EMBED', 'STYLE', 'FORM', 'BASE', 'META', 'LINK'].includes(e.tagName)) bad.push(e.tagName);
    if (e.tagName.toLowerCase() === 'svg' && !e.closest('.katex')) bad.push('svg outside KaTeX');
  }
  return bad;
}"""

# The hostile-input suite: each case is model output that must render as inert text or a safe link.
HOSTILE = [
    "[a](javascript:window.__pwned=1)",
    "[a](JAVASCRIPT:window.__pwned=1)",
    "[a](  javascript:window.__pwned=1)",
    "[a](java\tscript:window.__pwned=1)",
    "[a](java&#9;script:window.__pwned=1)",
    "[a](&#106;avascript:window.__pwned=1)",
    "[a](&#x6A;avascript:window.__pwned=1)",
    "[a](javascript&colon;window.__pwned=1)",
    "[a](%6Aavascript:window.__pwned=1)",
    "[a](\\u006Aavascript:window.__pwned=1)",
    "[a](<javascript:window.__pwned=1>)",
    "[a]: javascript:window.__pwned=1\n\n[a]",
    "<javascript:window.__pwned=1>",
    "![x](javascript:window.__pwned=1)",
    "[a](data:text/html;base64,PHNjcmlwdD53aW5kb3cuX19wd25lZD0xPC9zY3JpcHQ+)",
    "![x](data:image/svg+xml;base64,PHN2ZyBvbmxvYWQ9YWxlcnQoMSk+)",
    "[a](vbscript:msgbox(1))",
    "[a](file:///etc/passwd)",
    '<img src=x onerror="window.__pwned=1">',
    '<a href="#" onclick="window.__pwned=1">click</a>',
    "<script>window.__pwned=1</script>",
    '<svg onload="window.__pwned=1"><circle r=9></svg>',
    '<iframe src="javascript:window.__pwned=1"></iframe>',
    '<div style="background:url(javascript:window.__pwned=1)">x</div>',
    '<form action="javascript:window.__pwned=1"><button>go</button></form>',
    "<math><mtext><table><mglyph><style><img src=x onerror=window.__pwned=1>",
    "```html\n<img src=x onerror=window.__pwned=1>\n```",
    "```js onclick=window.__pwned=1\nalert(1)\n```",
    "``` \"><img src=x onerror=window.__pwned=1>\nx\n```",
    "`<img src=x onerror=window.__pwned=1>`",
    "$\\href{javascript:window.__pwned=1}{click}$",
    "$$\\url{javascript:window.__pwned=1}$$",
    "![x](https://evil.example/track.png)",
    "<think><img src=x onerror=window.__pwned=1></think>after",
    "[a](https://example.org \"title\\\" onmouseover=\\\"window.__pwned=1\")",
]

RICH = """Here is a table, code and math.

| Language | Typing |
|---|:---:|
| Python | dynamic |
| Rust | static |

```python
def square(x):
    return x * x  # squares
```

1. first
2. second
   - nested one
   - nested two

- [x] done task
- [ ] open task

~~old~~ new &amp; improved, see https://example.org and a rule:

---

Inline $e^{i\\pi} + 1 = 0$ and display:

$$\\int_0^1 x^2\\,dx = \\frac{1}{3}$$
"""


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    srv = scripted_server(tmp_path_factory.mktemp("page"))
    yield srv
    srv.stop()


CSP_WATCH = ("window.__csp = []; document.addEventListener('securitypolicyviolation', "
             "e => window.__csp.push(e.violatedDirective + ' ' + e.blockedURI));")


def wait(page, expr, timeout=20000):
    """Wait until the JavaScript expression is true. (playwright's wait_for_function evaluates
    strings with eval, which our CSP forbids; evaluate goes through the debugger.)"""
    deadline = time.monotonic() + timeout / 1000
    while not page.evaluate(expr):
        if time.monotonic() > deadline:
            raise TimeoutError(f"still false after {timeout} ms: {expr}")
        time.sleep(0.05)


class Tab:
    """One page (tab) with its console errors and every request it made."""

    def __init__(self, ctx, url):
        self.page = ctx.new_page()
        self.errors: list[str] = []
        self.requests: list[str] = []
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.add_init_script(CSP_WATCH)
        self.page.goto(url + "/")
        self.page.wait_for_selector("#model option", state="attached")

    def send(self, text):
        self.page.fill("#input", text)
        self.page.keyboard.press("Enter")

    def wait_idle(self, timeout=20000):
        wait(self.page, "!state.generating && !state.refreshing && state.conversationId && !document.querySelector('.msg.pending')"
             " && !document.querySelector('.msg.streaming')", timeout=timeout)

    def answers(self):
        return self.page.eval_on_selector_all(".msg.assistant .body", "els => els.map(e => e.innerText)")


@pytest.fixture()
def ctx(browser, live):
    # The page runs under our real CSP (no bypass): the checks below hold with it in force.
    c = browser.new_context(viewport={"width": 1100, "height": 760})
    yield c
    c.close()


@pytest.fixture()
def tab(ctx, live):
    t = Tab(ctx, live.url)
    yield t
    assert t.errors == [], t.errors
    assert t.page.evaluate("window.__csp") == [], t.page.evaluate("window.__csp")  # nothing the page does is refused by our CSP
    foreign = [u for u in t.requests if not u.startswith(live.url) and not u.startswith("data:")]
    assert foreign == [], foreign


def test_table_code_math_and_lists_render(tab):
    pg = tab.page
    tab.send("!echo " + RICH)
    tab.wait_idle()
    body = ".msg.assistant .body"
    assert pg.eval_on_selector_all(f"{body} table th", "els => els.map(e => e.innerText)") == ["Language", "Typing"]
    assert pg.eval_on_selector_all(f"{body} table td", "els => els.map(e => e.innerText)")[:2] == ["Python", "dynamic"]
    # Highlighted code: highlight.js spans inside the code block, with our copy bar.
    assert pg.inner_text(f"{body} .code-block .code-lang") == "python"
    assert pg.query_selector(f"{body} .code-block code .hljs-keyword") is not None
    assert "return x * x" in pg.inner_text(f"{body} .code-block code")
    # Numbered list, then a nested bullet list inside its second item.
    assert pg.eval_on_selector_all(f"{body} ol > li", "els => els.length") == 2
    assert pg.eval_on_selector_all(f"{body} ol > li ul > li", "els => els.length") == 2
    assert pg.eval_on_selector_all(f"{body} li.task input[type=checkbox]", "els => els.map(e => e.checked)") == [True, False]
    assert pg.inner_text(f"{body} s") == "old"
    assert "new & improved" in pg.inner_text(body)
    assert pg.get_attribute(f"{body} a[href='https://example.org']", "rel") == "noopener noreferrer nofollow"
    assert pg.query_selector(f"{body} hr") is not None
    # KaTeX: inline and display math typeset (MathML for readers, HTML for the eye).
    assert pg.eval_on_selector_all(f"{body} .math .katex", "els => els.length") == 2
    assert pg.query_selector(f"{body} .math.display .katex-display") is not None
    assert pg.get_attribute(f"{body} .math:not(.display)", "data-tex") == "e^{i\\pi} + 1 = 0"
    assert "$" not in pg.inner_text(body)
    # KaTeX's fonts come from our server.
    wait(pg, "document.fonts.status === 'loaded'")
    assert any("/static/vendor/fonts/KaTeX_" in u for u in tab.requests)


def test_a_message_sent_while_the_page_loads_stays_on_screen(ctx, live):
    # The conversation list arrives after the reader sent: it must not clear their chat.
    pg = ctx.new_page()
    held = []
    pg.route("**/api/conversations", lambda r: held.append(r) if not held else r.continue_())
    pg.goto(live.url + "/")
    pg.wait_for_selector("#model option", state="attached")
    while not held:
        pg.wait_for_timeout(20)
    pg.fill("#input", "!echo typed before the list came")
    pg.keyboard.press("Enter")
    wait(pg, "!state.generating && !document.querySelector('.msg.streaming') && !document.querySelector('.msg.pending')")
    with pg.expect_response("**/api/conversations"):
        held[0].continue_()
    pg.evaluate("new Promise((r) => setTimeout(r, 100))")
    assert pg.eval_on_selector_all(".msg", "els => els.map(e => e.className)") == ["msg user", "msg assistant"]
    assert pg.inner_text(".msg.assistant .body") == "typed before the list came"
    assert pg.query_selector("#empty") is None


def test_hostile_suite_renders_inert(tab, live):
    pg = tab.page
    answer = "\n\n".join(f"Case {i}:\n\n{case}" for i, case in enumerate(HOSTILE))
    open_imported(pg, live.url, {"title": "hostile", "messages": [
        {"role": "user", "content": "show me"}, {"role": "assistant", "content": answer}]})
    pg.wait_for_selector(".msg.assistant .code-block")
    # Streamed too: the incremental renderer takes the same path piece by piece.
    tab.send("!echo " + answer)
    tab.wait_idle()
    assert len(tab.answers()) == 2
    assert pg.evaluate("window.__pwned") is None
    assert pg.evaluate(DOM_CHECK_JS) == []
    # KaTeX colours the refused \\href red with a style attribute, which our CSP blocks: harmless.
    assert set(pg.evaluate("window.__csp.splice(0)")) <= {"style-src-attr inline"}
    text = tab.answers()[1]
    assert "Case 34" in text and "onerror" in text
    # The foreign image became a link: no request left for evil.example.
    assert pg.query_selector(".msg.assistant a[href='https://evil.example/track.png']") is not None
    # Fire every event a handler could hide behind, on every rendered element.
    pg.evaluate("""() => { for (const e of document.querySelectorAll('.msg.assistant .body *'))
        for (const t of ['mouseover', 'mouseenter', 'focus', 'load', 'error', 'animationstart'])
            e.dispatchEvent(new Event(t)); }""")
    assert pg.evaluate("window.__pwned") is None


def test_streaming_keeps_finished_blocks_and_selection(tab):
    pg = tab.page
    tab.send("!stream 3000 150")  # 20 s: still streaming when the checks below are done
    wait(pg, "document.querySelectorAll('.msg.streaming .md-block').length >= 4", timeout=20000)
    # Select the text of the first paragraph while the answer streams on.
    pg.evaluate("""() => { const p = document.querySelector('.msg.streaming .md-block p');
        window.__first = p; const r = document.createRange(); r.selectNodeContents(p);
        getSelection().removeAllRanges(); getSelection().addRange(r); }""")
    selected = pg.evaluate("getSelection().toString()")
    assert selected.startswith("Here is a paragraph")
    n = pg.evaluate("document.querySelectorAll('.msg.streaming .md-block').length")
    wait(pg, f"document.querySelectorAll('.msg.streaming .md-block').length > {n + 3}", timeout=20000)
    # The same node is still there and still selected: finished blocks are never re-rendered.
    assert pg.evaluate("document.contains(window.__first)")
    assert pg.evaluate("getSelection().toString()") == selected
    # The page followed the bottom so far; once the reader scrolls up, it stays where they are.
    assert pg.evaluate("(m => m.scrollHeight - m.scrollTop - m.clientHeight)(document.querySelector('#messages'))") < 40
    wait(pg, "(m => m.scrollHeight > m.clientHeight + 600)(document.querySelector('#messages'))")
    pg.evaluate("document.querySelector('#messages').scrollTop = 0")
    n = pg.evaluate("document.querySelectorAll('.msg.streaming .md-block').length")
    wait(pg, f"document.querySelectorAll('.msg.streaming .md-block').length > {n + 3}", timeout=20000)
    assert pg.evaluate("(m => m.scrollHeight - m.scrollTop - m.clientHeight)(document.querySelector('#messages'))") > 300
    assert pg.evaluate("state.generating")
    pg.keyboard.press("Escape")
    tab.wait_idle()
    assert pg.evaluate("document.contains(window.__first)")
    # The polite live region announced the finished answer once; the message list is not live.
    assert pg.inner_text("#announcer").startswith("Answer finished")
    assert pg.get_attribute("#messages", "aria-live") is None


def test_branches_from_regenerate_and_edit(tab):
    pg = tab.page
    tab.send("first question")
    tab.wait_idle()
    first = tab.answers()[0]
    tab.send("second question")
    tab.wait_idle()
    # Regenerate shows only on the last answer.
    assert pg.eval_on_selector_all(".msg.assistant", "els => els.map(e => !!e.querySelector('.regen'))") == [False, True]
    old_second = tab.answers()[1]
    pg.click(".msg.assistant >> nth=1 >> .regen")
    tab.wait_idle()
    assert tab.answers()[0] == first and tab.answers()[1] != old_second
    assert pg.inner_text(".msg.assistant >> nth=1 >> .branch-pos") == "2/2"
    pg.click(".msg.assistant >> nth=1 >> [aria-label='Previous version']")
    wait(pg, "document.querySelector('.msg.assistant:nth-last-child(1) .branch-pos') && "
                         "document.querySelectorAll('.msg.assistant')[1].querySelector('.branch-pos').innerText == '1/2'")
    assert tab.answers()[1] == old_second
    # Edit the first question: a sibling; the old branch (both turns) is one click away.
    pg.click(".msg.user >> nth=0 >> text=Edit")
    pg.fill(".edit-box", "first question, edited")
    pg.click("text=Save & send")
    tab.wait_idle()
    assert len(tab.answers()) == 1 and "first question, edited" in tab.answers()[0]
    assert pg.inner_text(".msg.user .branch-pos") == "2/2"
    pg.click(".msg.user [aria-label='Previous version']")
    wait(pg, "document.querySelectorAll('.msg.assistant').length == 2")
    assert tab.answers()[0] == first and tab.answers()[1] == old_second
    # Reload: the chosen branch is the store's, not the page's.
    pg.reload()
    wait(pg, "document.querySelectorAll('.msg.assistant').length == 2")
    assert tab.answers()[1] == old_second


def test_settings_follow_the_conversation(tab):
    pg = tab.page
    # The panel's fields are the server's: every sampling field (core/sampling.py), then max_tokens.
    from assistant.core.sampling import SAMPLING_FIELDS

    ids = pg.eval_on_selector_all("#settings input[type=number]", "els => els.map((e) => e.id)")
    assert ids == [f"s-{f.name}" for f in SAMPLING_FIELDS] + ["s-max_tokens"]
    # A new chat starts from the model's defaults (scripted: temperature 0.3).
    assert pg.input_value("#s-temperature") == "0.3"
    pg.click("#settings-toggle")
    pg.fill("#system-prompt", "Be brief.")
    pg.fill("#s-temperature", "0.55")
    tab.send("chat one")
    tab.wait_idle()
    assert "(temperature 0.55)" in tab.answers()[0]
    one = pg.evaluate("state.conversationId")
    # Switching model applies that model's defaults.
    pg.click("#new-chat")
    assert pg.input_value("#system-prompt") == ""
    pg.select_option("#model", "scripted-b")
    assert pg.input_value("#s-temperature") == "0.9" and pg.input_value("#s-max_tokens") == "256"
    tab.send("chat two")
    tab.wait_idle()
    assert "(temperature 0.9)" in tab.answers()[0]
    # Opening chat one brings back its model, system prompt and sampling, also after a reload.
    pg.click(f"#conversations li[data-id='{one}'] .conv-title")
    wait(pg, "document.querySelector('#s-temperature')?.value == '0.55'")
    assert pg.input_value("#model") == "scripted" and pg.input_value("#system-prompt") == "Be brief."
    pg.reload()  # the fields come from /api/settings-schema a moment after the page loads
    wait(pg, "document.querySelector('#s-temperature')?.value == '0.55'")
    assert pg.input_value("#system-prompt") == "Be brief."


def test_two_tabs_stay_in_sync(ctx, live):
    a, b = Tab(ctx, live.url), Tab(ctx, live.url)
    a.send("hello from tab A")
    a.wait_idle()
    cid = a.page.evaluate("state.conversationId")
    b.page.wait_for_selector(f"#conversations li[data-id='{cid}']")
    b.page.click(f"#conversations li[data-id='{cid}'] .conv-title")
    b.page.wait_for_selector(".msg.assistant")
    a.send("second turn from tab A")
    # Tab B shows A's new turn without a reload.
    wait(b.page, "document.querySelectorAll('.msg.assistant').length == 2", timeout=10000)
    assert "second turn from tab A" in b.page.inner_text("#messages")
    # And B's answer sees A's turns as its context: it lands after them in both tabs.
    a.wait_idle()
    b.send("third from tab B")
    b.wait_idle()
    wait(a.page, "document.querySelectorAll('.msg.assistant').length == 3", timeout=10000)
    assert a.errors == [] and b.errors == []


def test_escape_stops_and_interrupted_answer_offers_continue(tab, live):
    pg = tab.page
    tab.send("!slow")
    wait(pg, "document.querySelector('.msg.streaming') && document.querySelector('.msg.streaming').innerText.length > 20",
                         timeout=10000)
    pg.keyboard.press("Escape")
    wait(pg, "!state.generating && !state.refreshing", timeout=5000)
    pg.wait_for_timeout(200)
    assert "(stopped)" in pg.inner_text(".msg.assistant")  # the store's copy did not replace the page's
    # An answer cut off by a restart is stored partial: shown as interrupted, with Continue.
    open_imported(pg, live.url, {"title": "cut", "messages": [
        {"role": "user", "content": "tell me"}, {"role": "assistant", "content": "It was a dark", "status": "partial"}]})
    pg.wait_for_selector(".msg.assistant .interrupted")
    pg.click(".msg.assistant .continue")
    tab.wait_idle()
    assert "Continue from where you stopped." in pg.inner_text(".msg.user >> nth=1")


def test_keyboard_touch_and_empty_state(browser, live):
    ctx = browser.new_context(viewport={"width": 1100, "height": 760}, has_touch=True, is_mobile=False)
    t = Tab(ctx, live.url)
    pg = t.page
    # Empty state: three example prompts for the chosen model; one click fills the box.
    pg.wait_for_selector("#empty .example")
    assert pg.eval_on_selector_all("#empty .example", "els => els.length") == 3
    pg.click("#empty .example >> nth=0")
    assert pg.input_value("#input").startswith(pg.inner_text("#empty .example >> nth=0")[:20])
    t.send("touch me")
    t.wait_idle()
    ctx.close()
    # Touch: no hover, so message actions are visible.
    hover_ctx = browser.new_context(viewport={"width": 390, "height": 760}, has_touch=True, is_mobile=True)
    m = Tab(hover_ctx, live.url)
    m.send("on a phone")
    m.wait_idle()
    assert m.page.evaluate("matchMedia('(hover: none)').matches")
    assert m.page.evaluate("getComputedStyle(document.querySelector('.msg.user .actions')).opacity") == "1"
    hover_ctx.close()
    # Keyboard: Tab reaches the import button, rename and delete; rename is inline.
    kctx = browser.new_context(viewport={"width": 1100, "height": 760}, reduced_motion="reduce")
    k = Tab(kctx, live.url)
    kp = k.page
    k.send("keyboard user")
    k.wait_idle()
    focused = []
    kp.focus("#new-chat")
    while "import" not in focused and len(focused) < 60:
        kp.keyboard.press("Tab")
        focused.append(kp.evaluate("document.activeElement.id || document.activeElement.getAttribute('aria-label') || document.activeElement.className"))
    assert "import" in focused
    assert any(f.startswith("Rename") for f in focused) and any(f.startswith("Delete") for f in focused)
    # Focus is visible.
    kp.focus("#import")
    kp.keyboard.press("Shift+Tab")
    kp.keyboard.press("Tab")
    assert kp.evaluate("getComputedStyle(document.activeElement).outlineStyle") != "none"
    assert kp.evaluate("getComputedStyle(document.querySelector('#conversations li .icon')).transitionDuration") in ("0s", "")
    # Inline rename, with a failing request reported.
    kp.click("#conversations li.active [aria-label^='Rename']")
    kp.fill("#conversations input.rename", "Renamed by keyboard")
    kp.keyboard.press("Enter")
    wait(kp, "document.querySelector('#title').innerText == 'Renamed by keyboard'")
    kp.wait_for_selector("#conversations li.active .conv-title >> text=Renamed by keyboard")
    kp.route("**/api/conversations/*", lambda route: route.fulfill(
        status=500, content_type="application/json", body='{"error": {"message": "disk full"}}')
        if route.request.method == "PATCH" else route.continue_())
    kp.click("#conversations li.active [aria-label^='Rename']")
    kp.fill("#conversations input.rename", "Will fail")
    kp.keyboard.press("Enter")
    kp.wait_for_selector("#banner >> text=Could not rename: disk full")
    assert kp.get_attribute("#conversations input.rename", "aria-invalid") == "true"
    kp.keyboard.press("Escape")
    kp.unroute("**/api/conversations/*")
    # Delete waits behind Undo.
    n = kp.eval_on_selector_all("#conversations li", "els => els.length")
    kp.click("#conversations li >> nth=0 >> [aria-label^='Delete']")
    kp.click("#conversations .undo")
    kp.wait_for_timeout(300)
    assert kp.eval_on_selector_all("#conversations li .conv-title", "els => els.length") == n
    assert k.errors == []
    kctx.close()


def test_thinking_is_folded(tab):
    pg = tab.page
    tab.send("!echo <think>\nThe user wants **2+2**. That is 4.\n</think>\n\nThe answer is **4**.")
    tab.wait_idle()
    assert pg.inner_text(".msg.assistant details.thinking summary") == "Thinking"
    assert pg.get_attribute(".msg.assistant details.thinking", "open") is None  # collapsed
    assert not pg.is_visible(".msg.assistant details.thinking strong")
    assert pg.inner_text(".msg.assistant .body > .md").strip() == "The answer is 4."
    pg.click(".msg.assistant details.thinking summary")
    wait(pg, "document.querySelector('.msg.assistant details.thinking strong').innerText == '2+2'")


def test_selection_in_the_growing_block_survives(tab):
    """A selection inside the block still being written is not wiped by the next tokens: that
    block waits (the text keeps arriving) until the selection goes away."""
    pg = tab.page
    tab.send("!slow")
    wait(pg, "document.querySelector('.msg.streaming .md-block p') && "
             "document.querySelector('.msg.streaming .md-block p').innerText.length > 30", timeout=10000)
    pg.evaluate("""() => { const p = document.querySelector('.msg.streaming .md-block p'); window.__live = p;
        const r = document.createRange(); r.setStart(p.firstChild, 0); r.setEnd(p.firstChild, 9);
        getSelection().removeAllRanges(); getSelection().addRange(r); }""")
    n = pg.evaluate("state.current.text.length")
    wait(pg, f"state.current.text.length > {n + 40}", timeout=10000)
    assert pg.evaluate("getSelection().toString()") == "word word"
    assert pg.evaluate("document.contains(window.__live)")
    # Once the selection is gone the block catches up.
    pg.evaluate("getSelection().removeAllRanges()")
    wait(pg, f"document.querySelector('.msg.streaming .md-block p').innerText.length > {n + 20}", timeout=10000)
    pg.keyboard.press("Escape")
    wait(pg, "!state.generating", timeout=5000)
