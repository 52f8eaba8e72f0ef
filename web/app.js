// The chat page: conversations over REST, answers streamed over the /ws websocket
// (protocol in docs/protocol.md). Model output is rendered by markdown.js, which never
// interprets it as HTML. A streamed answer is re-rendered at most once per animation frame,
// and only its last block (see Markdown.view).
"use strict";

const $ = (id) => document.getElementById(id);
const state = {
  ws: null,
  connected: false,
  everConnected: false,
  retry: 0,
  models: [],
  model: null,
  conversationId: null,
  conversation: null,   // the open conversation as last fetched (with its active branch)
  conversations: [],
  generating: false,
  current: null,        // {el, body, text, view, frame} of the answer being streamed
  pendingSend: null,    // a message to send once the socket is open
  stick: true,          // follow the bottom while streaming (the user has not scrolled up)
  followedTo: null,     // where follow() last scrolled to
  refreshing: false,    // fetching the open conversation again
  settings: [],         // the settings panel's fields, from /api/settings-schema
};
const UNDO_MS = 6000;
const RENDER_INTERVAL_MS = 50;
const EXAMPLES = {
  code: ["Write a Python function that checks whether a string is a palindrome",
    "Explain the difference between a list and a tuple, with a table",
    "Show a SQL query that finds duplicate emails in a users table"],
  chat: ["Explain how rainbows form, in three short paragraphs",
    "Give me a packing list for a weekend hike as a checklist",
    "What is the quadratic formula? Show it with math"],
};

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

function button(text, cls, onClick, label) {
  const b = el("button", cls, text);
  b.type = "button";
  if (label) { b.title = label; b.setAttribute("aria-label", label); }
  if (onClick) b.addEventListener("click", onClick);
  return b;
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

function announce(text) {
  // A polite live region of its own: screen readers hear each finished answer once.
  $("announcer").textContent = text;
}

function setGenerating(on) {
  state.generating = on;
  $("send").hidden = on;
  $("stop").hidden = !on;
  $("send").disabled = on;
}

function stop() {
  if (!state.generating) return;
  send({ type: "stop" });
  setStatus("stopping...");
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
    if (state.everConnected) { refreshConversation(); loadConversations(); }
    state.everConnected = true;
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
      scheduleRender(a);
      if (!a.counted) { setStatus("generating..."); a.counted = true; }
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
      // Reload the branch from the store: ids, siblings (< 1/2 >) and actions come from there.
      refreshConversation(true);
      break;
    case "changed":
      // Another tab (or a REST call) changed a conversation.
      loadConversations();
      if (msg.conversation_id === state.conversationId) {
        if (msg.deleted) newChat(); else refreshConversation();
      }
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
function atBottom(m) { return m.scrollHeight - m.scrollTop - m.clientHeight < 40; }

function follow() {
  if (!state.stick) return;
  const m = $("messages");
  // Moved since we last put it at the bottom: the reader scrolled (its scroll event may not
  // have arrived yet), so follow only if they are still at the bottom.
  if (state.followedTo !== null && Math.abs(m.scrollTop - state.followedTo) > 2 && !atBottom(m)) {
    state.stick = false;
    return;
  }
  m.scrollTop = m.scrollHeight;
  state.followedTo = m.scrollTop;
}

function stickToBottom() {
  state.stick = true;
  state.followedTo = null;
}

// At most one render per animation frame, and at least RENDER_INTERVAL_MS apart: text
// appearing 20 times a second still reads as smooth, and each render has a fixed cost
// (style, layout, paint: about 2 ms here) whatever the number of new tokens.
function scheduleRender(a) {
  if (a.timer || a.frame) return;
  const wait = Math.max(0, (a.lastRender || 0) + RENDER_INTERVAL_MS - performance.now());
  a.timer = setTimeout(() => {
    a.timer = 0;
    a.frame = requestAnimationFrame(() => {
      a.frame = 0;
      a.lastRender = performance.now();
      a.view.update(a.text);
      follow();
    });
  }, wait);
}

function branchNav(m, wrap) {
  const sib = m.siblings || [];
  if (sib.length < 2) return;
  const i = sib.indexOf(m.id);
  const nav = el("span", "branches");
  const go = (k) => selectBranch(sib[k]);
  const prev = button("\u2039", "icon", () => go(i - 1), "Previous version");
  const next = button("\u203A", "icon", () => go(i + 1), "Next version");
  prev.disabled = i <= 0;
  next.disabled = i >= sib.length - 1;
  nav.append(prev, el("span", "branch-pos", `${i + 1}/${sib.length}`), next);
  wrap.querySelector(".actions").prepend(nav);
}

function messageActions(wrap, role, item, opts) {
  const bar = el("div", "actions");
  const copy = button("Copy", null, () => Markdown.copyText(item.text).then(() => {
    copy.textContent = "Copied"; setTimeout(() => { copy.textContent = "Copy"; }, 1200);
  }));
  bar.appendChild(copy);
  if (role === "user" && opts.id) {
    bar.appendChild(button("Edit", null, () => startEdit(wrap, item.text)));
  } else if (role === "assistant" && opts.last) {
    bar.appendChild(button("Regenerate", "regen", () => regenerate(Number(wrap.dataset.id))));
  }
  if (role === "assistant" && opts.status === "partial" && opts.last) {
    bar.appendChild(button("Continue", "continue", () => sendText("Continue from where you stopped.")));
  }
  wrap.appendChild(bar);
}

function addMessage(role, text, opts = {}) {
  hideEmpty();
  const wrap = el("div", `msg ${role}`);
  if (opts.id) wrap.dataset.id = opts.id;
  if (opts.pending) wrap.classList.add("pending");
  wrap.appendChild(el("div", "who", role === "user" ? "You" : role === "assistant" ? (opts.model || "Assistant") : "Tool"));
  const body = el("div", "body");
  wrap.appendChild(body);
  const item = { el: wrap, body, text, timer: 0, frame: 0 };
  wrap.item = item;
  if (role === "assistant") { item.view = Markdown.view(body); item.view.update(text); } else body.textContent = text;
  if (opts.status === "partial") wrap.appendChild(el("div", "note interrupted", "(interrupted)"));
  if (opts.status === "stopped") wrap.appendChild(el("div", "note", "(stopped)"));
  $("messages").appendChild(wrap);
  setActions(wrap, opts);
  return item;
}

function setActions(wrap, opts) {
  const old = wrap.querySelector(".actions");
  if (old) old.remove();
  messageActions(wrap, wrap.classList.contains("user") ? "user" : "assistant", wrap.item, opts);
  if (opts.message) branchNav(opts.message, wrap);
}

// The messages shown on screen for a conversation's branch, in order.
function visibleMessages(conv) {
  return conv.messages.filter((m) => m.role === "user" || (m.role === "assistant" && (m.content || m.status !== "error")));
}

// When the screen already shows this branch's text (an answer just streamed here), only ids,
// actions and < 1/2 > are updated: the text stays as it is, with any selection in it.
function patchConversation(conv) {
  const els = [...document.querySelectorAll("#messages > .msg")];
  const msgs = visibleMessages(conv);
  if (els.length !== msgs.length || els.some((e, i) => !e.classList.contains(msgs[i].role) || e.item.text.trim() !== msgs[i].content.trim())) return false;
  const lastAssistant = [...msgs].reverse().find((m) => m.role === "assistant");
  els.forEach((e, i) => {
    const m = msgs[i];
    e.dataset.id = m.id;
    e.classList.remove("pending");
    setActions(e, { id: m.id, status: m.status, message: m, last: m === lastAssistant });
  });
  state.conversation = conv;
  state.signature = signature(conv);
  $("title").textContent = conv.title;
  return true;
}

function ensureAnswer() {
  if (!state.current) {
    // A new answer replaces the Regenerate/Continue buttons of the previous last one.
    for (const b of document.querySelectorAll("#messages .regen, #messages .continue")) b.remove();
    state.current = addMessage("assistant", "", { model: state.model });
    state.current.el.classList.add("streaming");
    follow();
  }
  return state.current;
}

function finishAnswer(reason) {
  const a = state.current;
  if (a) {
    clearTimeout(a.timer);
    cancelAnimationFrame(a.frame);
    a.timer = a.frame = 0;
    a.view.update(a.text);
    a.el.classList.remove("streaming");
    if (reason === "cancelled") a.el.appendChild(el("div", "note", "(stopped)"));
    if (reason === "length") a.el.appendChild(el("div", "note", "(reached the token limit)"));
    if (reason === "context") a.el.appendChild(el("div", "note", "(the context window is full)"));
    follow();
    if (reason !== "error" && reason !== "disconnected") {
      announce(`Answer finished${reason === "cancelled" ? " (stopped)" : ""}: ${a.text.slice(0, 300)}`);
    }
  }
  state.current = null;
  setGenerating(false);
  setStatus(reason === "error" || reason === "disconnected" ? "" : "ready");
}

function addNotice(text) {
  $("messages").appendChild(el("div", "notice", text));
  follow();
}

function addToolEvent(summary, detail, failed = false) {
  hideEmpty();
  const d = el("details", "tool-event" + (failed ? " failed" : ""));
  d.appendChild(el("summary", null, summary));
  d.appendChild(el("pre", null, detail));
  $("messages").appendChild(d);
  follow();
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

// ------------------------------------------------------------------ empty state
function showEmpty() {
  const m = state.models.find((x) => x.name === state.model);
  const kind = m && /code|coder/i.test(`${m.name} ${m.description}`) ? "code" : "chat";
  const box = el("div", "empty");
  box.id = "empty";
  box.appendChild(el("h2", null, "What can I help with?"));
  const list = el("div", "examples");
  for (const text of EXAMPLES[kind]) {
    list.appendChild(button(text, "example", () => { $("input").value = text; autosize(); $("input").focus(); }));
  }
  box.appendChild(list);
  $("messages").replaceChildren(box);
}

function hideEmpty() { const e = $("empty"); if (e) e.remove(); }

// ------------------------------------------------------------------ sending
function collectSettings() {
  const out = {};
  for (const k of state.settings) {
    const v = $(`s-${k}`).value;
    if (v !== "") out[k] = Number(v);
  }
  return out;
}

// The options every send/regenerate/edit carries: model, sampling, max_tokens, tools.
function requestOptions() {
  const s = collectSettings();
  const max = s.max_tokens;
  delete s.max_tokens;
  return { model: state.model, sampling: s, max_tokens: max, tools: $("s-tools").checked,
    system_prompt: $("system-prompt").value };
}

function sendText(text) {
  if (!text.trim() || state.generating) return;
  banner(null);
  stickToBottom();
  addMessage("user", text, { pending: true });
  follow();
  setGenerating(true);
  setStatus("sending...");
  send({ type: "send", conversation_id: state.conversationId, content: text, ...requestOptions() });
}

function sendMessage() {
  const text = $("input").value;
  if (!text.trim() || state.generating) return;
  $("input").value = "";
  autosize();
  sendText(text);
}

function regenerate(messageId) {
  if (state.generating || !state.conversationId) return;
  // The old answer stays in the store as a sibling; the new one streams in its place.
  const old = document.querySelector(`#messages .msg.assistant[data-id="${messageId}"]`);
  if (old) {
    let n = old;
    while (n) { const next = n.nextSibling; n.remove(); n = next; }
  }
  stickToBottom();
  setGenerating(true);
  send({ type: "regenerate", conversation_id: state.conversationId, message_id: messageId, ...requestOptions() });
}

function startEdit(wrap, text) {
  if (state.generating) return;
  const id = Number(wrap.dataset.id);
  const body = wrap.querySelector(".body");
  const ta = el("textarea", "edit-box");
  ta.value = text;
  ta.setAttribute("aria-label", "Edit message");
  const box = el("div", "edit");
  const cancel = () => box.replaceWith(body);
  const save = () => {
    const content = ta.value;
    if (!content.trim()) return;
    // The original and what followed it stay in the store: < 1/2 > brings them back.
    let n = wrap.nextSibling;
    while (n) { const next = n.nextSibling; n.remove(); n = next; }
    body.textContent = content;
    box.replaceWith(body);
    wrap.classList.add("pending");
    const nav = wrap.querySelector(".branches");
    if (nav) nav.remove();
    stickToBottom();
    setGenerating(true);
    send({ type: "edit", conversation_id: state.conversationId, message_id: id, content, ...requestOptions() });
  };
  ta.addEventListener("keydown", (e) => {
    if (e.key === "Escape") { e.preventDefault(); e.stopPropagation(); cancel(); }
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) { e.preventDefault(); save(); }
  });
  box.append(ta, button("Save & send", "primary", save), button("Cancel", null, cancel));
  body.replaceWith(box);
  ta.focus();
}

async function selectBranch(messageId) {
  if (state.generating || !state.conversationId) return;
  try {
    const conv = await api(`/api/conversations/${state.conversationId}/select`,
      { method: "POST", body: JSON.stringify({ message_id: messageId }) });
    showConversation(conv, false);
  } catch (e) { banner(`Could not switch versions: ${e.message}`); }
}

// ------------------------------------------------------------------ conversations
function conversationItem(c) {
  const li = el("li", c.id === state.conversationId ? "active" : "");
  li.dataset.id = c.id;
  const title = button(c.title, "conv-title", () => openConversation(c.id));
  title.title = c.title;
  const ren = button("\u270E", "icon", () => startRename(li, c), `Rename ${c.title}`);
  const del = button("\u2715", "icon", () => deleteWithUndo(li, c), `Delete ${c.title}`);
  li.append(title, ren, del);
  return li;
}

function startRename(li, c) {
  const input = el("input", "rename");
  input.value = c.title;
  input.setAttribute("aria-label", "New title");
  li.replaceChildren(input);
  input.focus();
  input.select();
  let done = false;
  const finish = async (save) => {
    if (done) return;
    const t = input.value.trim();
    if (save && t && t !== c.title) {
      try {
        await api(`/api/conversations/${c.id}`, { method: "PATCH", body: JSON.stringify({ title: t }) });
      } catch (e) {
        // Keep the box open with what was typed, and say why.
        banner(`Could not rename: ${e.message}`);
        input.setAttribute("aria-invalid", "true");
        input.focus();
        return;
      }
      if (c.id === state.conversationId) $("title").textContent = t;
      c.title = t;
    }
    done = true;
    banner(null);
    const row = conversationItem(c);
    li.replaceWith(row);
    row.querySelector(".conv-title").focus();
    loadConversations();
  };
  input.addEventListener("keydown", (e) => {
    if (e.key === "Enter") { e.preventDefault(); finish(true); }
    if (e.key === "Escape") { e.preventDefault(); e.stopPropagation(); finish(false); }
  });
  input.addEventListener("blur", () => finish(true));
}

// Deleting waits UNDO_MS behind an Undo button; only then is the request sent.
const pendingDeletes = new Map();
function deleteWithUndo(li, c) {
  const undo = button("Undo", "undo", () => {
    clearTimeout(pendingDeletes.get(c.id));
    pendingDeletes.delete(c.id);
    const row = conversationItem(c);
    li.replaceWith(row);
    row.querySelector(".conv-title").focus();
    loadConversations();
  }, `Undo deleting ${c.title}`);
  li.replaceChildren(el("span", "deleted", `Deleted "${c.title}"`), undo);
  undo.focus();
  if (c.id === state.conversationId) newChat();
  pendingDeletes.set(c.id, setTimeout(async () => {
    pendingDeletes.delete(c.id);
    try {
      await api(`/api/conversations/${c.id}`, { method: "DELETE" });
    } catch (e) { banner(`Could not delete "${c.title}": ${e.message}`); }
    loadConversations();
  }, UNDO_MS));
}

async function loadConversations() {
  const q = $("search").value.trim();
  try {
    const data = await api(`/api/conversations${q ? `?q=${encodeURIComponent(q)}` : ""}`);
    state.conversations = data.conversations;
  } catch (e) { banner(`Could not load conversations: ${e.message}`); return; }
  const ul = $("conversations");
  // Leave rows being renamed or waiting for undo alone.
  if (ul.querySelector("input.rename, .undo")) return;
  ul.replaceChildren(...state.conversations.filter((c) => !pendingDeletes.has(c.id)).map(conversationItem));
}

// What identifies a conversation's visible state: refreshing is skipped when it did not change.
function signature(conv) {
  return JSON.stringify([conv.leaf_id, conv.title, conv.messages.map((m) => [m.id, m.status, m.content.length, (m.siblings || []).length])]);
}

function applySettings(conv) {
  $("system-prompt").value = conv.system_prompt || "";
  if (conv.model && state.models.some((m) => m.name === conv.model)) { state.model = conv.model; $("model").value = conv.model; }
  applyModelDefaults();
  const s = conv.settings;
  if (!s) return;
  for (const k of state.settings) {
    const v = k === "max_tokens" ? s.max_tokens : (s.sampling || {})[k];
    if (v !== undefined && v !== null) $(`s-${k}`).value = v;
  }
  if (typeof s.tools === "boolean") $("s-tools").checked = s.tools;
}

function showConversation(conv, withSettings = true) {
  state.conversationId = conv.id;
  state.conversation = conv;
  state.signature = signature(conv);
  localStorage.setItem("conversation", conv.id);
  $("title").textContent = conv.title;
  if (withSettings) applySettings(conv);
  const scroller = $("messages");
  const keep = scroller.scrollTop;
  scroller.replaceChildren();
  const lastAssistant = [...conv.messages].reverse().find((m) => m.role === "assistant");
  for (const m of conv.messages) {
    if (m.role === "tool") {
      const call = (m.tool_calls && m.tool_calls[0]) || {};
      addToolEvent(`${call.name || "tool"} result`, m.content);
    } else if (m.role === "assistant") {
      for (const t of m.tool_calls || []) {
        if (t.kind === "tool_call") addToolEvent(`Calling ${t.name}`, JSON.stringify(t.arguments, null, 1));
        else if (t.kind === "tool_result") addToolEvent(`${t.name} ${t.ok ? "returned" : "failed"}`, t.content, !t.ok);
      }
      if (m.content || m.status !== "error") {
        addMessage("assistant", m.content, { id: m.id, status: m.status, model: m.model, message: m, last: m === lastAssistant });
      }
    } else if (m.role === "user") {
      addMessage("user", m.content, { id: m.id, message: m });
    }
  }
  if (!conv.messages.length) showEmpty();
  if (withSettings) { stickToBottom(); follow(); } else scroller.scrollTop = keep;
}

async function openConversation(id) {
  if (state.generating) { banner("Stop the current answer before switching conversations.", "warn"); return; }
  let conv;
  try { conv = await api(`/api/conversations/${id}`); } catch (e) { banner(e.message); return; }
  showConversation(conv);
  document.body.classList.remove("show-sidebar");
  loadConversations();
}

// Fetch the open conversation again (another tab, focus regained, reconnect, answer done);
// redraw only when something changed, keeping this tab's settings and scroll position.
async function refreshConversation(force = false) {
  if (!state.conversationId || state.generating || document.querySelector("#messages .edit")) return;
  let conv;
  state.refreshing = true;
  try {
    conv = await api(`/api/conversations/${state.conversationId}`);
  } catch (_) {
    return;
  } finally {
    state.refreshing = false;
  }
  if (state.generating || conv.id !== state.conversationId) return;
  if ((force || signature(conv) !== state.signature) && !patchConversation(conv)) showConversation(conv, false);
}

function newChat() {
  if (state.generating) return;
  state.conversationId = null;
  state.conversation = null;
  localStorage.removeItem("conversation");
  $("title").textContent = "New chat";
  $("system-prompt").value = "";
  applyModelDefaults();
  showEmpty();
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
  for (const k of state.settings) {
    const v = k === "max_tokens" ? m.max_tokens : m.sampling[k];
    $(`s-${k}`).value = v === undefined || v === null ? "" : v;
  }
  $("s-tools").checked = true;
}

// The open conversation remembers its model, system prompt and sampling.
function saveSettings() {
  if (!state.conversationId) return;
  const o = requestOptions();
  api(`/api/conversations/${state.conversationId}`, { method: "PATCH", body: JSON.stringify({
    model: o.model, system_prompt: o.system_prompt,
    settings: { sampling: o.sampling, max_tokens: o.max_tokens, tools: o.tools } }) })
    .catch((e) => banner(`Could not save the settings: ${e.message}`));
}

// The settings panel's fields come from the server (the sampling fields and max_tokens),
// each an <input id="s-NAME"> in #setting-fields.
function buildSettings(schema) {
  const box = $("setting-fields");
  box.replaceChildren();
  state.settings = [];
  for (const f of [...schema.sampling, schema.max_tokens]) {
    const input = el("input");
    input.id = `s-${f.name}`;
    input.type = "number";
    input.min = f.lo;
    if (f.hi < 1e9) input.max = f.hi;
    input.step = f.kind === "int" ? "1" : "any";
    input.title = f.help;
    const label = el("label", null, f.name[0].toUpperCase() + f.name.slice(1).replace(/_/g, " "));
    label.appendChild(input);
    box.appendChild(label);
    state.settings.push(f.name);
  }
}

async function loadModels() {
  try {
    const [data, schema] = await Promise.all([api("/api/models"), api("/api/settings-schema")]);
    buildSettings(schema);
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
  $("stop").addEventListener("click", stop);
  $("input").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) { e.preventDefault(); sendMessage(); }
  });
  // Esc stops an answer from anywhere on the page (an open edit box or rename takes it first).
  document.addEventListener("keydown", (e) => {
    if (e.key === "Escape" && state.generating) { e.preventDefault(); stop(); }
  });
  $("input").addEventListener("input", autosize);
  $("new-chat").addEventListener("click", newChat);
  let searchTimer = null;
  $("search").addEventListener("input", () => { clearTimeout(searchTimer); searchTimer = setTimeout(loadConversations, 200); });
  $("model").addEventListener("change", () => {
    state.model = $("model").value;
    localStorage.setItem("model", state.model);
    applyModelDefaults();
    saveSettings();
    if ($("empty")) showEmpty();
  });
  $("settings").addEventListener("change", saveSettings);
  $("settings-toggle").addEventListener("click", () => {
    const s = $("settings");
    s.hidden = !s.hidden;
    $("settings-toggle").setAttribute("aria-expanded", String(!s.hidden));
  });
  $("reset-settings").addEventListener("click", () => { applyModelDefaults(); saveSettings(); });
  $("export-md").addEventListener("click", () => exportConversation("md"));
  $("export-json").addEventListener("click", () => exportConversation("json"));
  $("open-sidebar").addEventListener("click", () => document.body.classList.add("show-sidebar"));
  $("close-sidebar").addEventListener("click", () => document.body.classList.remove("show-sidebar"));
  $("import").addEventListener("click", () => $("import-file").click());
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
  // Follow the bottom only while the reader is there.
  $("messages").addEventListener("scroll", () => {
    const m = $("messages");
    state.stick = atBottom(m);
  }, { passive: true });
  // Another tab may have added turns while this one was in the background.
  window.addEventListener("focus", () => refreshConversation());
  document.addEventListener("visibilitychange", () => { if (!document.hidden) refreshConversation(); });
  loadModels().then(() => {
    const last = localStorage.getItem("conversation");
    loadConversations().then(() => {
      // A reader quick enough to send (or open a chat) before this list arrived keeps that chat.
      if (state.generating || state.conversationId) return;
      if (last && state.conversations.some((c) => c.id === last)) openConversation(last);
      else showEmpty();
    });
  });
  connect();
  setStatus("ready");
  $("input").focus();
}

document.addEventListener("DOMContentLoaded", init);
