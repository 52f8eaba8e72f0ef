// Model output to DOM: markdown-it (raw HTML off) for CommonMark + GFM tables, strikethrough
// and bare URLs; highlight.js for code; KaTeX for $...$, $$...$$, \(...\) and \[...\].
// The libraries are vendored in web/vendor (see its README). Links and images pass our own
// policy: http(s) and relative links only, images only from this server; a sanitizing pass
// over every rendered block drops on* attributes and any other URL as a second line of defence.
//
// Streaming: Markdown.view(container).update(text) keeps the blocks that can no longer change
// and re-renders only the last one, so each update costs the size of the last block, not of
// the answer. A `<think>...</think>` prefix (Qwen3 reasoning) goes into a collapsed section.
"use strict";

const Markdown = (() => {
  const MAX_HIGHLIGHT_CHARS = 100000;  // highlighting is linear but not free; huge blocks stay plain
  const CHUNK_BLOCKS = 16;  // finished blocks per .md-chunk (the unit the browser may skip)
  const MATH_OPTIONS = { throwOnError: false, trust: false, strict: "ignore", maxSize: 20, maxExpand: 500 };
  const md = window.markdownit({ html: false, linkify: true, typographer: false });

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.appendChild(document.createTextNode(text));
    return e;
  }

  // ------------------------------------------------------------------ URL policy
  // An absolute URL must be http(s); anything without a scheme is relative to this page.
  function allowedUrl(url) {
    const u = String(url).trim();
    const scheme = /^([a-z][a-z0-9+.-]*):/i.exec(u);
    return !scheme || /^https?$/i.test(scheme[1]);
  }
  md.validateLink = allowedUrl;

  function resolved(url) {
    try { return new URL(url, window.location.href); } catch (_) { return null; }
  }

  // ------------------------------------------------------------------ code
  md.options.highlight = (code, lang) => {
    const name = (lang || "").trim().split(/\s+/)[0];
    if (!name || !window.hljs || code.length > MAX_HIGHLIGHT_CHARS || !hljs.getLanguage(name)) return "";
    try { return hljs.highlight(code, { language: name, ignoreIllegals: true }).value; } catch (_) { return ""; }
  };

  // ------------------------------------------------------------------ math
  // Inline: $x$ (no space inside the dollars, no digit right after the closing one, so prices
  // stay text), $$x$$ and \(x\). Each opener looks only for its first closer, and a closer
  // found missing once is remembered, so a line of 4,000 dollars is linear, not quadratic.
  function mathInline(state, silent) {
    const src = state.src;
    const pos = state.pos;
    let open;
    let close;
    if (src.startsWith("$$", pos)) { open = "$$"; close = "$$"; }
    else if (src[pos] === "$") { open = "$"; close = "$"; }
    else if (src.startsWith("\\(", pos)) { open = "\\("; close = "\\)"; }
    else return false;
    if (state.env.mathSrc !== src) { state.env.mathSrc = src; state.env.mathMissing = {}; }
    const missing = state.env.mathMissing;
    if (missing[close] !== undefined && missing[close] <= pos) return false;
    const end = src.indexOf(close, pos + open.length);
    if (end < 0) { missing[close] = pos; return false; }
    const tex = src.slice(pos + open.length, end);
    if (!tex.trim()) return false;
    if (open === "$" && (/^\s|\s$/.test(tex) || /^\d/.test(src.slice(end + 1, end + 2)))) return false;
    if (!silent) {
      const t = state.push("math_inline", "span", 0);
      t.content = tex;
      t.markup = open;
    }
    state.pos = end + close.length;
    return true;
  }

  // Block: a line starting with $$ or \[ up to the line that ends with $$ or \] (or the end of
  // the text while it streams).
  function mathBlock(state, startLine, endLine, silent) {
    const start = state.bMarks[startLine] + state.tShift[startLine];
    const max = state.eMarks[startLine];
    if (state.sCount[startLine] - state.blkIndent >= 4) return false;
    const first = state.src.slice(start, max);
    let close;
    if (first.startsWith("$$")) close = "$$";
    else if (first.startsWith("\\[")) close = "\\]";
    else return false;
    if (silent) return true;
    let body = first.slice(2);
    let line = startLine;
    let closed = body.trimEnd().endsWith(close);
    if (closed) body = body.trimEnd().slice(0, -close.length);
    while (!closed && ++line < endLine) {
      const text = state.src.slice(state.bMarks[line] + state.tShift[line], state.eMarks[line]);
      if (text.trimEnd().endsWith(close)) { body += "\n" + text.trimEnd().slice(0, -close.length); closed = true; }
      else body += "\n" + text;
    }
    state.line = Math.min(line + 1, endLine);
    const t = state.push("math_block", "div", 0);
    t.block = true;
    t.content = body;
    t.map = [startLine, state.line];
    t.markup = close;
    return true;
  }

  const escapeHtml = md.utils.escapeHtml;
  md.inline.ruler.before("escape", "math_inline", mathInline);
  md.block.ruler.before("fence", "math_block", mathBlock, { alt: ["paragraph", "reference", "blockquote", "list"] });
  md.renderer.rules.math_inline = (tokens, i) => `<span class="math">${escapeHtml(tokens[i].content)}</span>`;
  md.renderer.rules.math_block = (tokens, i) => `<div class="math display">${escapeHtml(tokens[i].content)}</div>\n`;

  // Table alignment as a class: our CSP refuses style attributes.
  md.core.ruler.push("align_classes", (state) => {
    for (const t of state.tokens) {
      const style = (t.type === "th_open" || t.type === "td_open") && t.attrGet("style");
      if (!style) continue;
      t.attrs = t.attrs.filter((x) => x[0] !== "style");
      t.attrJoin("class", `align-${style.split(":")[1]}`);
    }
  });

  // ------------------------------------------------------------------ after rendering
  // Runs on the inert content of a <template> (nothing loads or runs there) before it is shown.
  function sanitize(root) {
    for (const bad of root.querySelectorAll("script, style, iframe, object, embed, svg, math, form, base, link, meta")) bad.remove();
    for (const e of root.querySelectorAll("*")) {
      for (const a of [...e.attributes]) {
        const name = a.name.toLowerCase();
        if (name.startsWith("on") || name === "style" || name === "srcset" || name === "formaction") e.removeAttribute(a.name);
      }
    }
    for (const a of root.querySelectorAll("a[href]")) {
      const u = resolved(a.getAttribute("href"));
      if (!u || (u.protocol !== "http:" && u.protocol !== "https:")) { a.removeAttribute("href"); continue; }
      a.rel = "noopener noreferrer nofollow";
      a.target = "_blank";
    }
    // Images only from this server: anything else would be a request to another host.
    for (const img of root.querySelectorAll("img")) {
      const u = resolved(img.getAttribute("src") || "");
      if (u && u.origin === window.location.origin) continue;
      const link = el("a", null, img.getAttribute("alt") || "image");
      if (u && (u.protocol === "http:" || u.protocol === "https:")) {
        link.href = u.href;
        link.rel = "noopener noreferrer nofollow";
        link.target = "_blank";
      }
      img.replaceWith(link);
    }
  }

  function decorate(root) {
    for (const pre of root.querySelectorAll("pre")) {
      const code = pre.querySelector("code");
      const lang = code && /(?:^|\s)language-(\S+)/.exec(code.className);
      if (code) code.classList.add("hljs");
      const wrap = el("div", "code-block");
      const bar = el("div", "code-bar");
      bar.appendChild(el("span", "code-lang", lang ? lang[1] : "code"));
      const copy = el("button", "copy-code", "Copy");
      copy.type = "button";
      copy.addEventListener("click", () => {
        copyText((code || pre).textContent).then(() => { copy.textContent = "Copied"; setTimeout(() => { copy.textContent = "Copy"; }, 1200); });
      });
      bar.appendChild(copy);
      pre.replaceWith(wrap);
      wrap.append(bar, pre);
    }
    for (const table of root.querySelectorAll("table")) {
      const wrap = el("div", "table-wrap");
      table.replaceWith(wrap);
      wrap.appendChild(table);
    }
    // GFM task lists: "[ ]" / "[x]" at the start of a list item.
    for (const li of root.querySelectorAll("li")) {
      const first = li.firstChild && li.firstChild.nodeName === "P" ? li.firstChild.firstChild : li.firstChild;
      const m = first && first.nodeType === Node.TEXT_NODE && /^\[([ xX])\]\s/.exec(first.data);
      if (!m) continue;
      first.data = first.data.slice(m[0].length);
      const box = el("input");
      box.type = "checkbox";
      box.disabled = true;
      box.checked = m[1] !== " ";
      first.parentNode.insertBefore(box, first);
      li.classList.add("task");
    }
  }

  function typeset(root) {
    if (!window.katex) return;
    for (const m of root.querySelectorAll(".math")) {
      const tex = m.textContent;
      try {
        katex.render(tex, m, { ...MATH_OPTIONS, displayMode: m.classList.contains("display") });
      } catch (_) {
        m.textContent = tex;  // KaTeX could not parse it: show the source
      }
      m.setAttribute("data-tex", tex);
    }
  }

  // The rendered HTML of some tokens, as checked DOM nodes in `target` (replacing its content).
  const template = document.createElement("template");
  function fill(target, html) {
    template.innerHTML = html;
    const frag = template.content;
    sanitize(frag);
    decorate(frag);
    typeset(frag);  // after sanitize: KaTeX's own inline styles are set through the DOM
    target.replaceChildren(frag);
  }

  // ------------------------------------------------------------------ incremental blocks
  function selectionInside(node) {
    const sel = window.getSelection();
    return !!(sel && sel.rangeCount && !sel.isCollapsed && node.contains(sel.anchorNode));
  }

  // Offset of the start of `line` (0-based) in `text`.
  function lineOffset(text, line) {
    let off = 0;
    for (let k = 0; k < line; k++) {
      const nl = text.indexOf("\n", off);
      if (nl < 0) return text.length;
      off = nl + 1;
    }
    return off;
  }

  // Markdown text shown as a sequence of top-level blocks. Every block but the last is final
  // (more text can only change the last one), so each is rendered once and never touched
  // again, which also keeps a selection made inside it.
  class Blocks {
    constructor(container) {
      this.container = container;
      this.reset();
    }

    reset() {
      this.container.replaceChildren();
      this.committed = "";  // the text of the final blocks
      this.live = null;     // the element of the last block
      this.liveHtml = "";
      this.chunk = null;    // where finished blocks go, CHUNK_BLOCKS at a time
    }

    // A new block element, in the current chunk (a new chunk when that one is full). Blocks
    // never move once created: moving a node would drop a selection inside it.
    newBlock() {
      if (!this.chunk || this.chunk.childElementCount >= CHUNK_BLOCKS) {
        this.chunk = el("div", "md-chunk");
        this.container.appendChild(this.chunk);
      }
      return this.chunk.appendChild(el("div", "md-block"));
    }

    update(text) {
      text = text.replace(/\r\n?/g, "\n");
      if (!text.startsWith(this.committed)) this.reset();
      const tail = text.slice(this.committed.length);
      const env = {};
      const tokens = md.parse(tail, env);
      const groups = [];
      for (let i = 0, start = 0; i < tokens.length; i++) {
        if (tokens[i].level === 0 && tokens[i].nesting <= 0) { groups.push([start, i + 1]); start = i + 1; }
      }
      for (let g = 0; g < groups.length; g++) {
        const html = md.renderer.render(tokens.slice(groups[g][0], groups[g][1]), md.options, env);
        const last = g === groups.length - 1;
        if (!this.live) {
          this.live = this.newBlock();
          this.liveHtml = null;
        }
        if (html !== this.liveHtml && !(last && selectionInside(this.live))) {
          fill(this.live, html);
          this.liveHtml = html;
        }
        if (!last) { this.live = null; continue; }
        const line = tokens[groups[g][0]].map ? tokens[groups[g][0]].map[0] : 0;
        this.committed += tail.slice(0, lineOffset(tail, line));
      }
    }
  }

  // An answer: an optional collapsed "Thinking" section, then the markdown.
  class AnswerView {
    constructor(container) {
      this.container = container;
      this.answer = new Blocks(el("div", "md"));
      this.thinking = null;
      this.container.replaceChildren(this.answer.container);
    }

    update(text) {
      const m = /^\s*<think>/.exec(text);
      let rest = text;
      if (m) {
        const end = text.indexOf("</think>", m[0].length);
        if (!this.thinking) {
          const d = el("details", "thinking");
          d.appendChild(el("summary", null, "Thinking"));
          this.thinking = new Blocks(d.appendChild(el("div", "md")));
          this.thinking.details = d;
          this.container.insertBefore(d, this.answer.container);
        }
        this.thinking.update(text.slice(m[0].length, end < 0 ? text.length : end));
        this.thinking.details.classList.toggle("open-ended", end < 0);
        rest = end < 0 ? "" : text.slice(end + "</think>".length).replace(/^\s+/, "");
      } else if (this.thinking) {
        this.thinking.details.remove();
        this.thinking = null;
      }
      this.answer.update(rest);
    }
  }

  function view(container) { return new AnswerView(container); }

  function render(text) {
    const root = el("div");
    view(root).update(text);
    return root;
  }

  function copyText(text) {
    if (navigator.clipboard && window.isSecureContext) return navigator.clipboard.writeText(text);
    const ta = el("textarea");
    ta.value = text;
    document.body.appendChild(ta);
    ta.select();
    try { document.execCommand("copy"); } catch (_) { /* nothing else to try */ }
    ta.remove();
    return Promise.resolve();
  }

  return { render, view, copyText, allowedUrl };
})();
