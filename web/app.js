// The chat page: conversations over REST, answers streamed over the /ws websocket
// (protocol in docs/protocol.md). Model output is rendered by markdown.js, which never
// interprets it as HTML.
"use strict";

const $ = (id) => document.getElementById(id);
const state = {
  ws: null,
  connected: false,
  retry: 0,
  models: [],
  model: null,
  conversationId: null,
  conversations: [],
  generating: false,
  current: null,      // {el, body, text} of the answer being streamed
  pendingSend: null,  // a message to send once the socket is open
};
const SETTINGS = ["temperature", "top_p", "top_k", "min_p", "repeat_penalty", "max_tokens", "seed"];

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

async function api(path, options = {}) {
  const resp = await fetch(path, {
    headers: { "Content-Type": "application/json" },
    ...options,
  });
  const ct = resp.headers.get("Content-Type") || "";
  const data = ct.includes("json") ? await resp.json() : await resp.text();
  if (!resp.ok) throw new Error((data && data.error && data.error.message) || resp.statusText);
  return data;
}

// ------------------------------------------------------------------ banner / status
function banner(text, kind = "error") {
  const b = $("banner");
  if (!text) { b.hidden = true; b.textContent = ""; return; }
  b.hidden = false;
  b.className = kind;
  b.textContent = text;
}

function setStatus(text) { $("status").textContent = text || ""; }

function setGenerating(on) {
  state.generating = on;
  $("send").hidden = on;
  $("stop").hidden = !on;
  $("send").disabled = on;
}

// ------------------------------------------------------------------ websocket
function connect() {
  const proto = location.protocol === "https:" ? "wss:" : "ws:";
  const ws = new WebSocket(`${proto}//${location.host}/ws`);
  state.ws = ws;
  ws.onopen = () => {
    state.connected = true;
    state.retry = 0;
    banner(null);
    if (state.pendingSend) { ws.send(JSON.stringify(state.pendingSend)); state.pendingSend = null; }
  };
  ws.onmessage = (ev) => {
    let msg;
    try { msg = JSON.parse(ev.data); } catch (_) { return; }
    onEvent(msg);
  };
  ws.onclose = () => {
    state.connected = false;
    if (state.generating) { finishAnswer("disconnected"); }
    const delay = Math.min(10000, 500 * 2 ** state.retry++);
    banner(`Disconnected from the assistant; reconnecting in ${Math.round(delay / 1000)} s...`, "warn");
    setTimeout(connect, delay);
  };
}

function send(obj) {
  if (state.ws && state.connected) state.ws.send(JSON.stringify(obj));
  else { state.pendingSend = obj; banner("Not connected yet; the message will be sent when the connection is back.", "warn"); }
}

function onEvent(msg) {
  switch (msg.type) {
    case "hello": break;
    case "conversation":
      state.conversationId = msg.conversation.id;
      localStorage.setItem("conversation", msg.conversation.id);
      $("title").textContent = msg.conversation.title;
      loadConversations();
      break;
    case "user_message": {
      const pending = document.querySelector(".msg.user.pending");
      if (pending) { pending.classList.remove("pending"); pending.dataset.id = msg.id; }
      break;
    }
    case "queued":
      setStatus(msg.state === "loading" ? "loading the model..." : `queued (position ${msg.position + 1})`);
      break;
    case "start":
      setStatus("thinking...");
      ensureAnswer().el.dataset.id = msg.message_id;
      break;
    case "token": {
      const a = ensureAnswer();
      a.text += msg.text;
      renderAnswer(a);
      setStatus("generating...");
      break;
    }
    case "trimmed":
      addNotice(msg.message || "context trimmed");
      break;
    case "tool_call":
      addToolEvent(`Calling ${msg.name}`, JSON.stringify(msg.arguments, null, 1) + (msg.error ? `\n${msg.error}` : ""));
      break;
    case "tool_result":
      addToolEvent(`${msg.name} ${msg.ok ? "returned" : "failed"}`, msg.content, !msg.ok);
      break;
    case "stats": showStats(msg); break;
    case "done":
      finishAnswer(msg.finish_reason);
      loadConversations();
      break;
    case "error":
      if (msg.code === "busy") banner("The assistant is busy with other requests. Try again in a moment.", "warn");
      else banner(humanError(msg.message));
      if (state.generating) finishAnswer("error");
      break;
    default: break;
  }
}

function humanError(text) {
  if (/not downloaded|pull/.test(text)) return `${text}. In a terminal, run the command shown to fetch it.`;
  return text;
}

// ------------------------------------------------------------------ messages
function scrollDown() {
  const m = $("messages");
  if (m.scrollHeight - m.scrollTop - m.clientHeight < 200) m.scrollTop = m.scrollHeight;
}

function messageActions(wrap, role, getText) {
  const bar = el("div", "actions");
  const copy = el("button", null, "Copy");
  copy.type = "button";
  copy.addEventListener("click", () => Markdown.copyText(getText()).then(() => {
    copy.textContent = "Copied"; setTimeout(() => { copy.textContent = "Copy"; }, 1200);
  }));
  bar.appendChild(copy);
  if (role === "user") {
    const edit = el("button", null, "Edit");
    edit.type = "button";
    edit.addEventListener("click", () => startEdit(wrap, getText()));
    bar.appendChild(edit);
  } else if (role === "assistant") {
    const regen = el("button", "regen", "Regenerate");
    regen.type = "button";
    regen.addEventListener("click", () => regenerate());
    bar.appendChild(regen);
  }
  wrap.appendChild(bar);
}

function addMessage(role, text, opts = {}) {
  const wrap = el("div", `msg ${role}`);
  if (opts.id) wrap.dataset.id = opts.id;
  if (opts.pending) wrap.classList.add("pending");
  wrap.appendChild(el("div", "who", role === "user" ? "You" : role === "assistant" ? (opts.model || "Assistant") : "Tool"));
  const body = el("div", "body");
  wrap.appendChild(body);
  const item = { el: wrap, body, text };
  if (role === "assistant") renderAnswer(item); else body.textContent = text;
  if (opts.status === "partial") wrap.appendChild(el("div", "note", "(interrupted)"));
  messageActions(wrap, role, () => item.text);
  $("messages").appendChild(wrap);
  scrollDown();
  return item;
}

function renderAnswer(a) {
  a.body.replaceChildren(Markdown.render(a.text));
  scrollDown();
}

function ensureAnswer() {
  if (!state.current) {
    state.current = addMessage("assistant", "", { model: state.model });
    state.current.el.classList.add("streaming");
  }
  return state.current;
}

function finishAnswer(reason) {
  if (state.current) {
    state.current.el.classList.remove("streaming");
    if (reason === "cancelled") state.current.el.appendChild(el("div", "note", "(stopped)"));
    if (reason === "length") state.current.el.appendChild(el("div", "note", "(reached the token limit)"));
    if (reason === "context") state.current.el.appendChild(el("div", "note", "(the context window is full)"));
  }
  state.current = null;
  setGenerating(false);
  setStatus(reason === "error" || reason === "disconnected" ? "" : "ready");
}

function addNotice(text) {
  $("messages").appendChild(el("div", "notice", text));
  scrollDown();
}

function addToolEvent(summary, detail, failed = false) {
  const d = el("details", "tool-event" + (failed ? " failed" : ""));
  d.appendChild(el("summary", null, summary));
  d.appendChild(el("pre", null, detail));
  $("messages").appendChild(d);
  scrollDown();
}

function showStats(s) {
  const tps = s.decode_s > 0 ? (s.generated_tokens / s.decode_s).toFixed(1) : "-";
  const pps = s.prefill_s > 0 ? ((s.prompt_tokens - (s.cached_tokens || 0)) / s.prefill_s).toFixed(0) : "-";
  $("stats").textContent = `${s.generated_tokens | 0} tokens, ${tps} tok/s (prompt ${s.prompt_tokens | 0} tokens, ${pps} tok/s)`;
  if (s.n_ctx) {
    const frac = Math.min(1, (s.context_used || 0) / s.n_ctx);
    $("ctx-fill").style.width = `${(frac * 100).toFixed(1)}%`;
    $("ctx-meter").title = `context: ${s.context_used | 0} of ${s.n_ctx | 0} tokens`;
  }
}

// ------------------------------------------------------------------ sending
function collectSettings() {
  const out = {};
  for (const k of SETTINGS) {
    const v = $(`s-${k}`).value;
    if (v !== "") out[k] = Number(v);
  }
  return out;
}

function sendMessage() {
  const text = $("input").value;
  if (!text.trim() || state.generating) return;
  $("input").value = "";
  autosize();
  banner(null);
  addMessage("user", text, { pending: true });
  const s = collectSettings();
  const msg = { type: "send", conversation_id: state.conversationId, content: text, model: state.model,
    system_prompt: $("system-prompt").value, tools: $("s-tools").checked, max_tokens: s.max_tokens };
  delete s.max_tokens;
  msg.sampling = s;
  if (!text.startsWith("/")) setGenerating(true);
  setStatus("sending...");
  send(msg);
  if (text.startsWith("/")) setGenerating(true);
}

function regenerate() {
  if (state.generating || !state.conversationId) return;
  const msgs = [...document.querySelectorAll("#messages > *")];
  // Drop what follows the last user message on screen; the server does the same.
  let lastUser = -1;
  msgs.forEach((m, i) => { if (m.classList.contains("user")) lastUser = i; });
  msgs.slice(lastUser + 1).forEach((m) => m.remove());
  const s = collectSettings();
  const max = s.max_tokens; delete s.max_tokens;
  setGenerating(true);
  send({ type: "regenerate", conversation_id: state.conversationId, model: state.model, sampling: s, max_tokens: max,
    tools: $("s-tools").checked });
}

function startEdit(wrap, text) {
  if (state.generating) return;
  const id = Number(wrap.dataset.id);
  const body = wrap.querySelector(".body");
  const ta = el("textarea", "edit-box");
  ta.value = text;
  const save = el("button", "primary", "Save & send");
  const cancel = el("button", null, "Cancel");
  const box = el("div", "edit");
  box.append(ta, save, cancel);
  body.replaceWith(box);
  ta.focus();
  cancel.addEventListener("click", () => box.replaceWith(body));
  save.addEventListener("click", () => {
    const content = ta.value;
    if (!content.trim()) return;
    let n = wrap.nextSibling;
    while (n) { const next = n.nextSibling; n.remove(); n = next; }
    body.textContent = content;
    box.replaceWith(body);
    wrap.classList.add("pending");
    const s = collectSettings();
    const max = s.max_tokens; delete s.max_tokens;
    setGenerating(true);
    send({ type: "edit", conversation_id: state.conversationId, message_id: id, content, model: state.model,
      sampling: s, max_tokens: max, tools: $("s-tools").checked });
  });
}

// ------------------------------------------------------------------ conversations
async function loadConversations() {
  const q = $("search").value.trim();
  try {
    const data = await api(`/api/conversations${q ? `?q=${encodeURIComponent(q)}` : ""}`);
    state.conversations = data.conversations;
  } catch (e) { banner(`Could not load conversations: ${e.message}`); return; }
  const ul = $("conversations");
  ul.replaceChildren();
  for (const c of state.conversations) {
    const li = el("li", c.id === state.conversationId ? "active" : "");
    const a = el("button", "conv-title", c.title);
    a.type = "button";
    a.title = c.title;
    a.addEventListener("click", () => openConversation(c.id));
    const ren = el("button", "icon", "\u270E");
    ren.title = "Rename";
    ren.setAttribute("aria-label", `Rename ${c.title}`);
    ren.addEventListener("click", async () => {
      const t = prompt("New title", c.title);
      if (t && t.trim()) {
        await api(`/api/conversations/${c.id}`, { method: "PATCH", body: JSON.stringify({ title: t }) });
        if (c.id === state.conversationId) $("title").textContent = t;
        loadConversations();
      }
    });
    const del = el("button", "icon", "\u2715");
    del.title = "Delete";
    del.setAttribute("aria-label", `Delete ${c.title}`);
    del.addEventListener("click", async () => {
      if (!confirm(`Delete "${c.title}"?`)) return;
      await api(`/api/conversations/${c.id}`, { method: "DELETE" });
      if (c.id === state.conversationId) newChat();
      loadConversations();
    });
    li.append(a, ren, del);
    ul.appendChild(li);
  }
}

async function openConversation(id) {
  if (state.generating) { banner("Stop the current answer before switching conversations.", "warn"); return; }
  let conv;
  try { conv = await api(`/api/conversations/${id}`); } catch (e) { banner(e.message); return; }
  state.conversationId = conv.id;
  localStorage.setItem("conversation", conv.id);
  $("title").textContent = conv.title;
  $("system-prompt").value = conv.system_prompt || "";
  if (conv.model && state.models.some((m) => m.name === conv.model)) { state.model = conv.model; $("model").value = conv.model; }
  $("messages").replaceChildren();
  for (const m of conv.messages) {
    if (m.role === "tool") {
      const call = (m.tool_calls && m.tool_calls[0]) || {};
      addToolEvent(`${call.name || "tool"} result`, m.content);
    } else if (m.role === "assistant") {
      for (const t of m.tool_calls || []) {
        if (t.kind === "tool_call") addToolEvent(`Calling ${t.name}`, JSON.stringify(t.arguments, null, 1));
        else if (t.kind === "tool_result") addToolEvent(`${t.name} ${t.ok ? "returned" : "failed"}`, t.content, !t.ok);
      }
      if (m.content || m.status !== "error") addMessage("assistant", m.content, { id: m.id, status: m.status, model: m.model });
    } else if (m.role === "user") {
      addMessage("user", m.content, { id: m.id });
    }
  }
  document.body.classList.remove("show-sidebar");
  loadConversations();
}

function newChat() {
  if (state.generating) return;
  state.conversationId = null;
  localStorage.removeItem("conversation");
  $("title").textContent = "New chat";
  $("messages").replaceChildren();
  $("stats").textContent = "";
  $("ctx-fill").style.width = "0";
  loadConversations();
  $("input").focus();
}

function exportConversation(fmt) {
  if (!state.conversationId) { banner("Nothing to export yet.", "warn"); return; }
  const a = el("a");
  a.href = `/api/conversations/${state.conversationId}/export?format=${fmt}`;
  a.download = "";
  document.body.appendChild(a);
  a.click();
  a.remove();
}

// ------------------------------------------------------------------ models & settings
function applyModelDefaults() {
  const m = state.models.find((x) => x.name === state.model);
  if (!m) return;
  for (const k of SETTINGS) {
    const v = k === "max_tokens" ? m.max_tokens : m.sampling[k];
    $(`s-${k}`).value = v === undefined || v === null ? "" : v;
  }
}

async function loadModels() {
  try {
    const data = await api("/api/models");
    state.models = data.models;
    const sel = $("model");
    sel.replaceChildren();
    for (const m of data.models) {
      const o = el("option", null, `${m.name}${m.downloaded ? "" : " (not downloaded)"}`);
      o.value = m.name;
      o.title = m.description;
      sel.appendChild(o);
    }
    state.model = localStorage.getItem("model") || data.default;
    if (!data.models.some((m) => m.name === state.model)) state.model = data.default;
    sel.value = state.model;
    applyModelDefaults();
    if (data.errors && data.errors.length) banner(`models.toml: ${data.errors.join("; ")}`, "warn");
  } catch (e) {
    banner(`Could not reach the assistant: ${e.message}`);
  }
}

function autosize() {
  const t = $("input");
  t.style.height = "auto";
  t.style.height = `${Math.min(240, t.scrollHeight)}px`;
}

function init() {
  $("send").addEventListener("click", sendMessage);
  $("stop").addEventListener("click", () => { send({ type: "stop" }); setStatus("stopping..."); });
  $("input").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) { e.preventDefault(); sendMessage(); }
  });
  $("input").addEventListener("input", autosize);
  $("new-chat").addEventListener("click", newChat);
  let searchTimer = null;
  $("search").addEventListener("input", () => { clearTimeout(searchTimer); searchTimer = setTimeout(loadConversations, 200); });
  $("model").addEventListener("change", () => {
    state.model = $("model").value;
    localStorage.setItem("model", state.model);
    applyModelDefaults();
  });
  $("settings-toggle").addEventListener("click", () => {
    const s = $("settings");
    s.hidden = !s.hidden;
    $("settings-toggle").setAttribute("aria-expanded", String(!s.hidden));
  });
  $("reset-settings").addEventListener("click", applyModelDefaults);
  $("export-md").addEventListener("click", () => exportConversation("md"));
  $("export-json").addEventListener("click", () => exportConversation("json"));
  $("open-sidebar").addEventListener("click", () => document.body.classList.add("show-sidebar"));
  $("close-sidebar").addEventListener("click", () => document.body.classList.remove("show-sidebar"));
  $("import-file").addEventListener("change", async (e) => {
    const file = e.target.files[0];
    if (!file) return;
    try {
      const conv = await api("/api/import", { method: "POST", body: await file.text() });
      await loadConversations();
      openConversation(conv.id);
    } catch (err) { banner(`Import failed: ${err.message}`); }
    e.target.value = "";
  });
  loadModels().then(() => {
    const last = localStorage.getItem("conversation");
    loadConversations().then(() => {
      if (last && state.conversations.some((c) => c.id === last)) openConversation(last);
    });
  });
  connect();
  setStatus("ready");
  $("input").focus();
}

document.addEventListener("DOMContentLoaded", init);
