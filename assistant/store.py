"""Conversations, messages and notes in SQLite (stdlib), in the user's data directory.

WAL journal with ``synchronous=FULL``: a commit is on disk when it returns, and a crash
leaves the database as of the last commit. An answer being generated is inserted first
with status ``partial`` and updated in whole-row transactions, so after a crash it is
found marked partial with the text it had, never half-written. Schema changes go through
the ``MIGRATIONS`` list (``PRAGMA user_version`` counts the ones applied).

Messages form a tree: each has a ``parent_id`` (None for the first), and editing or
regenerating adds a sibling instead of deleting anything. A conversation's ``leaf_id`` picks
the active branch; :meth:`Store.messages` is the path from the root to it, each message with
the ids of its ``siblings`` (alternatives at the same point, oldest first).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Final

from .config import data_dir

MIGRATIONS: list[str] = [
    """
    CREATE TABLE conversations(
        id TEXT PRIMARY KEY,
        title TEXT NOT NULL DEFAULT 'New chat',
        model TEXT NOT NULL DEFAULT '',
        system_prompt TEXT NOT NULL DEFAULT '',
        created REAL NOT NULL,
        updated REAL NOT NULL
    );
    CREATE TABLE messages(
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        conversation_id TEXT NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
        role TEXT NOT NULL,
        content TEXT NOT NULL DEFAULT '',
        tool_calls TEXT NOT NULL DEFAULT '',
        model TEXT NOT NULL DEFAULT '',
        sampling TEXT NOT NULL DEFAULT '',
        prompt_tokens INTEGER NOT NULL DEFAULT 0,
        completion_tokens INTEGER NOT NULL DEFAULT 0,
        prefill_s REAL NOT NULL DEFAULT 0,
        decode_s REAL NOT NULL DEFAULT 0,
        status TEXT NOT NULL DEFAULT 'complete',
        created REAL NOT NULL
    );
    CREATE INDEX messages_by_conversation ON messages(conversation_id, id);
    CREATE TABLE notes(
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        text TEXT NOT NULL,
        created REAL NOT NULL
    );
    """,
    # Branches: parents and the active leaf (existing conversations become one linear branch),
    # and the settings each conversation was last used with.
    """
    ALTER TABLE messages ADD COLUMN parent_id INTEGER;
    ALTER TABLE messages ADD COLUMN chosen REAL NOT NULL DEFAULT 0;
    UPDATE messages SET chosen = created;
    ALTER TABLE conversations ADD COLUMN leaf_id INTEGER;
    ALTER TABLE conversations ADD COLUMN settings TEXT NOT NULL DEFAULT '';
    UPDATE messages SET parent_id = (SELECT MAX(p.id) FROM messages p
        WHERE p.conversation_id = messages.conversation_id AND p.id < messages.id);
    UPDATE conversations SET leaf_id = (SELECT MAX(m.id) FROM messages m WHERE m.conversation_id = conversations.id);
    CREATE INDEX messages_by_parent ON messages(conversation_id, parent_id);
    """,
]

# add_message's default parent: the conversation's active leaf.
LEAF: Final = -1

FTS_MIGRATION = """
    CREATE VIRTUAL TABLE IF NOT EXISTS messages_fts USING fts5(content, content='messages', content_rowid='id');
    CREATE TRIGGER IF NOT EXISTS messages_ai AFTER INSERT ON messages BEGIN
        INSERT INTO messages_fts(rowid, content) VALUES (new.id, new.content);
    END;
    CREATE TRIGGER IF NOT EXISTS messages_ad AFTER DELETE ON messages BEGIN
        INSERT INTO messages_fts(messages_fts, rowid, content) VALUES('delete', old.id, old.content);
    END;
    CREATE TRIGGER IF NOT EXISTS messages_au AFTER UPDATE OF content ON messages BEGIN
        INSERT INTO messages_fts(messages_fts, rowid, content) VALUES('delete', old.id, old.content);
        INSERT INTO messages_fts(rowid, content) VALUES (new.id, new.content);
    END;
"""

MAX_TITLE_CHARS = 200
# partial: cut off (a crash or restart); stopped: the user stopped it.
STATUSES = ("complete", "partial", "stopped", "error")


class StoreError(ValueError):
    """A request to the store names something that does not exist or is invalid."""


def _now() -> float:
    return time.time()


class Store:
    """Thread-safe access (one connection per thread) to the assistant's database."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self.fts = False
        self._migrate()

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA foreign_keys=ON")
            self._local.conn = conn
        return conn

    def _tx(self, sql: str, params: tuple[Any, ...] = ()) -> sqlite3.Cursor:
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            cur = conn.execute(sql, params)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return cur

    def _migrate(self) -> None:
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            for i, script in enumerate(MIGRATIONS[version:], start=version):
                for stmt in script.split(";"):
                    if stmt.strip():
                        conn.execute(stmt)
                conn.execute(f"PRAGMA user_version={i + 1}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        try:
            conn.executescript(FTS_MIGRATION)
            self.fts = True
        except sqlite3.OperationalError:
            self.fts = False  # SQLite built without FTS5: search falls back to LIKE

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    # ------------------------------------------------------------ conversations
    def create_conversation(self, title: str = "New chat", model: str = "", system_prompt: str = "",
                            conv_id: str | None = None) -> dict[str, Any]:
        cid = conv_id or uuid.uuid4().hex
        now = _now()
        self._tx("INSERT INTO conversations(id, title, model, system_prompt, created, updated) VALUES (?,?,?,?,?,?)",
                 (cid, title[:MAX_TITLE_CHARS], model, system_prompt, now, now))
        return self.get_conversation(cid)

    def get_conversation(self, cid: str) -> dict[str, Any]:
        row = self._conn().execute("SELECT * FROM conversations WHERE id=?", (cid,)).fetchone()
        if row is None:
            raise StoreError(f"no conversation {cid!r}")
        return _conversation(row)

    def list_conversations(self, limit: int = 200) -> list[dict[str, Any]]:
        rows = self._conn().execute(
            "SELECT * FROM conversations ORDER BY updated DESC LIMIT ?", (limit,)).fetchall()
        return [_conversation(r) for r in rows]

    def update_conversation(self, cid: str, **fields: Any) -> dict[str, Any]:
        allowed = {"title", "model", "system_prompt", "settings"}
        bad = set(fields) - allowed
        if bad:
            raise StoreError(f"cannot update {sorted(bad)}; allowed: {sorted(allowed)}")
        self.get_conversation(cid)
        for k, v in fields.items():
            if k == "settings":
                if not isinstance(v, dict):
                    raise StoreError("settings must be an object")
                v = _json(v)
            elif not isinstance(v, str):
                raise StoreError(f"{k} must be a string")
            if k == "title":
                v = v.strip()[:MAX_TITLE_CHARS] or "New chat"
            self._tx(f"UPDATE conversations SET {k}=?, updated=? WHERE id=?", (v, _now(), cid))
        return self.get_conversation(cid)

    def delete_conversation(self, cid: str) -> bool:
        cur = self._tx("DELETE FROM conversations WHERE id=?", (cid,))
        return cur.rowcount > 0

    def search(self, query: str, limit: int = 50) -> list[dict[str, Any]]:
        """Conversations whose title or messages match ``query``."""
        query = query.strip()
        if not query:
            return self.list_conversations(limit)
        conn = self._conn()
        ids: list[str] = []
        if self.fts:
            fts_q = " ".join('"' + w.replace('"', '""') + '"' for w in query.split())
            try:
                rows = conn.execute(
                    "SELECT DISTINCT m.conversation_id FROM messages_fts f JOIN messages m ON m.id=f.rowid "
                    "WHERE messages_fts MATCH ? LIMIT ?", (fts_q, limit)).fetchall()
                ids = [r[0] for r in rows]
            except sqlite3.OperationalError:
                ids = []
        like = "%" + query.replace("%", r"\%").replace("_", r"\_") + "%"
        rows = conn.execute(
            "SELECT DISTINCT c.id FROM conversations c LEFT JOIN messages m ON m.conversation_id=c.id "
            "WHERE c.title LIKE ? ESCAPE '\\' OR m.content LIKE ? ESCAPE '\\' LIMIT ?", (like, like, limit)).fetchall()
        for r in rows:
            if r[0] not in ids:
                ids.append(r[0])
        out = []
        for cid in ids[:limit]:
            try:
                out.append(self.get_conversation(cid))
            except StoreError:
                pass
        out.sort(key=lambda c: -c["updated"])
        return out

    # ------------------------------------------------------------ messages
    def add_message(self, cid: str, role: str, content: str, status: str = "complete",
                    parent_id: int | None = LEAF, **meta: Any) -> int:
        """Add a message under ``parent_id`` (default: the active leaf) and make it the leaf."""
        if status not in STATUSES:
            raise StoreError(f"status must be one of {STATUSES}")
        now = _now()
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            row = conn.execute("SELECT leaf_id FROM conversations WHERE id=?", (cid,)).fetchone()
            if row is None:
                raise StoreError(f"no conversation {cid!r}")
            parent = row[0] if parent_id == LEAF else parent_id
            if parent is not None and conn.execute("SELECT 1 FROM messages WHERE id=? AND conversation_id=?",
                                                   (parent, cid)).fetchone() is None:
                raise StoreError(f"no message {parent} in conversation {cid!r}")
            cur = conn.execute(
                "INSERT INTO messages(conversation_id, role, content, tool_calls, model, sampling, prompt_tokens,"
                " completion_tokens, prefill_s, decode_s, status, created, parent_id, chosen)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (cid, role, content, _json(meta.get("tool_calls")), meta.get("model", ""),
                 _json(meta.get("sampling")), int(meta.get("prompt_tokens", 0)),
                 int(meta.get("completion_tokens", 0)), float(meta.get("prefill_s", 0.0)),
                 float(meta.get("decode_s", 0.0)), status, now, parent, now))
            conn.execute("UPDATE conversations SET updated=?, leaf_id=? WHERE id=?", (now, cur.lastrowid, cid))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return int(cur.lastrowid or 0)

    def update_message(self, mid: int, content: str | None = None, status: str | None = None, **meta: Any) -> None:
        sets: list[str] = []
        params: list[Any] = []
        if content is not None:
            sets.append("content=?")
            params.append(content)
        if status is not None:
            if status not in STATUSES:
                raise StoreError(f"status must be one of {STATUSES}")
            sets.append("status=?")
            params.append(status)
        for k in ("prompt_tokens", "completion_tokens", "prefill_s", "decode_s", "model"):
            if k in meta:
                sets.append(f"{k}=?")
                params.append(meta[k])
        for k in ("tool_calls", "sampling"):
            if k in meta:
                sets.append(f"{k}=?")
                params.append(_json(meta[k]))
        if not sets:
            return
        params.append(mid)
        self._tx(f"UPDATE messages SET {', '.join(sets)} WHERE id=?", tuple(params))

    def all_messages(self, cid: str) -> list[dict[str, Any]]:
        """Every message of every branch, oldest first."""
        self.get_conversation(cid)
        rows = self._conn().execute(
            "SELECT * FROM messages WHERE conversation_id=? ORDER BY id", (cid,)).fetchall()
        out = []
        for r in rows:
            d = dict(r)
            d["tool_calls"] = json.loads(d["tool_calls"]) if d["tool_calls"] else None
            d["sampling"] = json.loads(d["sampling"]) if d["sampling"] else None
            out.append(d)
        return out

    def messages(self, cid: str, leaf: int | None = LEAF) -> list[dict[str, Any]]:
        """The path from the first message to ``leaf`` (default: the active leaf), each message
        with ``siblings``: the ids of the alternatives at its place, itself included."""
        conv = self.get_conversation(cid)
        every = self.all_messages(cid)
        by_id = {m["id"]: m for m in every}
        children: dict[int | None, list[int]] = {}
        for m in every:
            children.setdefault(m["parent_id"], []).append(m["id"])
        path: list[dict[str, Any]] = []
        node = by_id.get(conv["leaf_id"] if leaf == LEAF else leaf)
        while node is not None and len(path) <= len(every):  # the bound guards against a cycle
            node["siblings"] = children[node["parent_id"]]
            path.append(node)
            node = by_id.get(node["parent_id"])
        path.reverse()
        return path

    def select(self, cid: str, mid: int) -> int:
        """Make the branch through message ``mid`` active, down to the descendants chosen last
        (or added last); returns the new leaf."""
        conn = self._conn()
        if conn.execute("SELECT 1 FROM messages WHERE id=? AND conversation_id=?", (mid, cid)).fetchone() is None:
            raise StoreError(f"no message {mid} in conversation {cid!r}")
        leaf = mid
        while True:
            row = conn.execute("SELECT id FROM messages WHERE conversation_id=? AND parent_id=? "
                               "ORDER BY chosen DESC, id DESC LIMIT 1", (cid, leaf)).fetchone()
            if row is None:
                break
            leaf = int(row[0])
        ids = [m["id"] for m in self.messages(cid, leaf)]
        self._tx(f"UPDATE messages SET chosen=? WHERE id IN ({','.join('?' * len(ids))})", (_now(), *ids))
        self.set_leaf(cid, leaf)
        return leaf

    def set_leaf(self, cid: str, mid: int | None) -> None:
        """Make ``mid`` the end of the active branch (None: an empty conversation)."""
        self._tx("UPDATE conversations SET leaf_id=?, updated=? WHERE id=?", (mid, _now(), cid))

    # ------------------------------------------------------------ export / import
    def export_json(self, cid: str) -> dict[str, Any]:
        """The whole tree: every message with its ``id`` and ``parent`` (None for a first
        message), and ``leaf``, the end of the active branch."""
        conv = self.get_conversation(cid)
        conv["messages"] = [
            {k: m[k] for k in ("id", "role", "content", "tool_calls", "model", "status", "created", "prompt_tokens",
                               "completion_tokens")} | {"parent": m["parent_id"]}
            for m in self.all_messages(cid)
        ]
        conv["leaf"] = conv.pop("leaf_id")
        conv["format"] = "assistant-conversation/2"
        return conv

    def export_markdown(self, cid: str) -> str:
        conv = self.get_conversation(cid)
        lines = [f"# {conv['title']}", ""]
        if conv["system_prompt"]:
            lines += [f"*System:* {conv['system_prompt']}", ""]
        for m in self.messages(cid):
            who = {"user": "User", "assistant": "Assistant", "tool": "Tool", "system": "System"}.get(m["role"], m["role"])
            suffix = {"partial": " *(interrupted)*", "stopped": " *(stopped)*"}.get(m["status"], "")
            lines += [f"**{who}:**{suffix}", "", m["content"], ""]
        return "\n".join(lines)

    def import_json(self, data: Any) -> dict[str, Any]:
        if not isinstance(data, dict) or not isinstance(data.get("messages"), list):
            raise StoreError("an imported conversation must be an object with a messages list")
        title = data["title"] if isinstance(data.get("title"), str) else "Imported chat"
        conv = self.create_conversation(title=title, model=str(data.get("model", "")),
                                        system_prompt=str(data.get("system_prompt", "")))
        # A version-2 export names each message's parent by its exported id; older files
        # (no ids) are one linear branch.
        new_ids: dict[Any, int] = {}
        try:
            for m in data["messages"]:
                if not isinstance(m, dict) or m.get("role") not in ("user", "assistant", "system", "tool") \
                        or not isinstance(m.get("content", ""), str):
                    raise StoreError("each imported message needs a role (user/assistant/system/tool) and text content")
                parent: int | None = LEAF
                if "parent" in m:
                    if m["parent"] is not None and m["parent"] not in new_ids:
                        raise StoreError(f"message {m.get('id')!r} names a parent {m['parent']!r} that comes "
                                         f"later or does not exist")
                    parent = None if m["parent"] is None else new_ids[m["parent"]]
                status = m.get("status", "complete")
                mid = self.add_message(conv["id"], m["role"], m.get("content", ""), parent_id=parent,
                                       status=status if status in STATUSES else "complete",
                                       model=str(m.get("model", "")))
                if "id" in m and isinstance(m["id"], (int, str)):
                    new_ids[m["id"]] = mid
            if isinstance(data.get("settings"), dict):
                self.update_conversation(conv["id"], settings=data["settings"])
        except (StoreError, TypeError):
            self.delete_conversation(conv["id"])
            raise
        if data.get("leaf") in new_ids:
            self.set_leaf(conv["id"], new_ids[data["leaf"]])
        return self.get_conversation(conv["id"])

    # ------------------------------------------------------------ notes
    def add_note(self, text: str) -> int:
        cur = self._tx("INSERT INTO notes(text, created) VALUES (?, ?)", (text, _now()))
        return int(cur.lastrowid or 0)

    def list_notes(self, query: str = "") -> list[tuple[int, str]]:
        if query:
            like = "%" + query.replace("%", r"\%").replace("_", r"\_") + "%"
            rows = self._conn().execute("SELECT id, text FROM notes WHERE text LIKE ? ESCAPE '\\' ORDER BY id",
                                        (like,)).fetchall()
        else:
            rows = self._conn().execute("SELECT id, text FROM notes ORDER BY id").fetchall()
        return [(int(r[0]), str(r[1])) for r in rows]

    def delete_note(self, nid: int) -> bool:
        return self._tx("DELETE FROM notes WHERE id=?", (nid,)).rowcount > 0


def _json(v: Any) -> str:
    return "" if v is None else json.dumps(v, ensure_ascii=False)


def _conversation(row: sqlite3.Row) -> dict[str, Any]:
    d = dict(row)
    d["settings"] = json.loads(d["settings"]) if d.get("settings") else None
    return d


_stores: dict[str, Store] = {}
_stores_lock = threading.Lock()


def default_db_path() -> Path:
    """The database of the user's data directory (a server given no ``DB_PATH``, the terminal chat)."""
    return data_dir() / "assistant.db"


def open_store(path: Path | str | None = None) -> Store:
    """The store at ``path`` (default: :func:`default_db_path`), shared per process."""
    p = Path(path) if path else default_db_path()
    key = str(p.resolve())
    with _stores_lock:
        s = _stores.get(key)
        if s is None:
            s = Store(p)
            _stores[key] = s
        return s
