// A small, safe Markdown renderer: it builds DOM nodes and only ever inserts model text
// with createTextNode, so `<img src=x onerror=...>` in an answer shows as text.
// Supported: fenced code blocks (with a copy button), inline code, **bold**, *italic*,
// headings, bullet and numbered lists, block quotes, http(s) links, paragraphs.
"use strict";

const Markdown = (() => {
  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.appendChild(document.createTextNode(text));
    return e;
  }

  function safeUrl(url) {
    try {
      const u = new URL(url, window.location.href);
      return (u.protocol === "http:" || u.protocol === "https:") ? u.href : null;
    } catch (_) {
      return null;
    }
  }

  // Inline spans: code first (its content is literal), then links, bold, italic.
  function inline(text, parent) {
    const re = /(`+)([\s\S]*?[^`])\1(?!`)|\[([^\]\n]+)\]\(([^)\s]+)\)|\*\*([^*\n]+)\*\*|__([^_\n]+)__|\*([^*\n]+)\*|_([^_\n]+)_/g;
    let last = 0;
    let m;
    while ((m = re.exec(text)) !== null) {
      if (m.index > last) parent.appendChild(document.createTextNode(text.slice(last, m.index)));
      if (m[1]) {
        parent.appendChild(el("code", null, m[2]));
      } else if (m[3]) {
        const href = safeUrl(m[4]);
        if (href) {
          const a = el("a", null, m[3]);
          a.href = href;
          a.rel = "noopener noreferrer nofollow";
          a.target = "_blank";
          parent.appendChild(a);
        } else {
          parent.appendChild(document.createTextNode(m[0]));
        }
      } else if (m[5] || m[6]) {
        const b = el("strong");
        inline(m[5] || m[6], b);
        parent.appendChild(b);
      } else {
        const i = el("em");
        inline(m[7] || m[8], i);
        parent.appendChild(i);
      }
      last = re.lastIndex;
    }
    if (last < text.length) parent.appendChild(document.createTextNode(text.slice(last)));
  }

  function codeBlock(lang, code) {
    const wrap = el("div", "code-block");
    const bar = el("div", "code-bar");
    bar.appendChild(el("span", "code-lang", lang || "code"));
    const copy = el("button", "copy-code", "Copy");
    copy.type = "button";
    copy.addEventListener("click", () => {
      copyText(code).then(() => { copy.textContent = "Copied"; setTimeout(() => { copy.textContent = "Copy"; }, 1200); });
    });
    bar.appendChild(copy);
    wrap.appendChild(bar);
    const pre = el("pre");
    pre.appendChild(el("code", null, code));
    wrap.appendChild(pre);
    return wrap;
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

  function render(text) {
    const root = document.createDocumentFragment();
    const lines = text.replace(/\r\n/g, "\n").split("\n");
    let i = 0;
    let para = [];
    const flush = () => {
      if (para.length) {
        const p = el("p");
        para.forEach((line, k) => { if (k) p.appendChild(el("br")); inline(line, p); });
        root.appendChild(p);
        para = [];
      }
    };
    while (i < lines.length) {
      const line = lines[i];
      const fence = line.match(/^\s*(```|~~~)\s*([\w+#.-]*)\s*$/);
      if (fence) {
        flush();
        const body = [];
        i++;
        while (i < lines.length && !lines[i].trim().startsWith(fence[1])) body.push(lines[i++]);
        i++; // closing fence (or end of text while streaming)
        root.appendChild(codeBlock(fence[2], body.join("\n")));
        continue;
      }
      const h = line.match(/^(#{1,6})\s+(.*)$/);
      if (h) {
        flush();
        const e = el("h" + Math.min(6, h[1].length + 2));
        inline(h[2], e);
        root.appendChild(e);
        i++;
        continue;
      }
      if (/^\s*([-*+]|\d+[.)])\s+/.test(line)) {
        flush();
        const ordered = /^\s*\d+[.)]/.test(line);
        const list = el(ordered ? "ol" : "ul");
        while (i < lines.length && /^\s*([-*+]|\d+[.)])\s+/.test(lines[i])) {
          const li = el("li");
          inline(lines[i].replace(/^\s*([-*+]|\d+[.)])\s+/, ""), li);
          list.appendChild(li);
          i++;
        }
        root.appendChild(list);
        continue;
      }
      if (/^\s*>\s?/.test(line)) {
        flush();
        const q = el("blockquote");
        while (i < lines.length && /^\s*>\s?/.test(lines[i])) {
          const p = el("p");
          inline(lines[i].replace(/^\s*>\s?/, ""), p);
          q.appendChild(p);
          i++;
        }
        root.appendChild(q);
        continue;
      }
      if (!line.trim()) { flush(); i++; continue; }
      para.push(line);
      i++;
    }
    flush();
    return root;
  }

  return { render, copyText };
})();
