"""Conversations in SQLite: CRUD, search, export/import, partial answers."""

from __future__ import annotations

import json

import pytest

from assistant.store import Store, StoreError


@pytest.fixture()
def store(tmp_path):
    return Store(tmp_path / "t.db")


def test_pragmas_and_migrations(store):
    conn = store._conn()
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert conn.execute("PRAGMA user_version").fetchone()[0] >= 1


def test_conversation_lifecycle(store):
    c = store.create_conversation(title="Trip", model="smollm2", system_prompt="Be nice")
    store.add_message(c["id"], "user", "Where is Kyoto?")
    mid = store.add_message(c["id"], "assistant", "", status="partial")
    store.update_message(mid, content="In Japan.", status="complete", prompt_tokens=10, completion_tokens=3)
    msgs = store.messages(c["id"])
    assert [m["role"] for m in msgs] == ["user", "assistant"]
    assert msgs[1]["status"] == "complete" and msgs[1]["completion_tokens"] == 3
    assert store.rename_conversation(c["id"], "Japan trip")["title"] == "Japan trip"
    assert [x["id"] for x in store.search("Kyoto")] == [c["id"]]
    assert store.search("nothing-like-this") == []
    assert store.delete_conversation(c["id"])
    with pytest.raises(StoreError):
        store.messages(c["id"])


def test_export_and_import(store):
    c = store.create_conversation(title="Math")
    store.add_message(c["id"], "user", "2+2?")
    store.add_message(c["id"], "assistant", "**4**")
    md = store.export_markdown(c["id"])
    assert md.startswith("# Math") and "**4**" in md
    data = json.loads(json.dumps(store.export_json(c["id"])))
    c2 = store.import_json(data)
    assert [m["content"] for m in store.messages(c2["id"])] == ["2+2?", "**4**"]
    with pytest.raises(StoreError):
        store.import_json({"messages": [{"role": "hacker", "content": "x"}]})


def test_delete_from_message(store):
    c = store.create_conversation()
    a = store.add_message(c["id"], "user", "one")
    store.add_message(c["id"], "assistant", "two")
    store.add_message(c["id"], "user", "three")
    store.delete_messages_from(c["id"], a + 1)
    assert [m["content"] for m in store.messages(c["id"])] == ["one"]
