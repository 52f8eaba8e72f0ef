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
    assert store.update_conversation(c["id"], title="Japan trip")["title"] == "Japan trip"
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


def test_branches_keep_every_alternative(store):
    c = store.create_conversation()
    cid = c["id"]
    u1 = store.add_message(cid, "user", "hi")
    a1 = store.add_message(cid, "assistant", "first answer")
    # Regenerate: a sibling answer under the same question.
    a2 = store.add_message(cid, "assistant", "second answer", parent_id=u1)
    path = store.messages(cid)
    assert [m["content"] for m in path] == ["hi", "second answer"]
    assert path[1]["siblings"] == [a1, a2] and path[0]["siblings"] == [u1]
    # Edit the question: a sibling of the first message, with its own answer.
    u2 = store.add_message(cid, "user", "hello", parent_id=None)
    store.add_message(cid, "assistant", "answer to hello")
    assert [m["content"] for m in store.messages(cid)] == ["hello", "answer to hello"]
    assert store.messages(cid)[0]["siblings"] == [u1, u2]
    # Back to the first question: its newest answer comes with it.
    assert store.select(cid, u1) == a2
    assert [m["content"] for m in store.messages(cid)] == ["hi", "second answer"]
    store.select(cid, a1)
    assert [m["content"] for m in store.messages(cid)] == ["hi", "first answer"]
    # Away and back: the answer chosen last is remembered.
    store.select(cid, u2)
    assert store.select(cid, u1) == a1
    assert len(store.all_messages(cid)) == 5
    with pytest.raises(StoreError):
        store.select(cid, 10_000)
    with pytest.raises(StoreError):
        store.add_message(cid, "user", "x", parent_id=10_000)


def test_tree_survives_export_and_import(store):
    c = store.create_conversation(title="Tree")
    cid = c["id"]
    u = store.add_message(cid, "user", "q")
    store.add_message(cid, "assistant", "a1")
    store.add_message(cid, "assistant", "a2", parent_id=u)
    store.update_conversation(cid, settings={"sampling": {"temperature": 0.4}, "max_tokens": 99})
    store.select(cid, u + 1)  # a1 active
    data = json.loads(json.dumps(store.export_json(cid)))
    assert data["format"] == "assistant-conversation/2"
    c2 = store.import_json(data)
    assert [m["content"] for m in store.messages(c2["id"])] == ["q", "a1"]
    assert len(store.messages(c2["id"])[1]["siblings"]) == 2
    assert c2["settings"] == {"sampling": {"temperature": 0.4}, "max_tokens": 99}
    with pytest.raises(StoreError):
        store.import_json({"messages": [{"id": 1, "parent": 7, "role": "user", "content": "x"}]})
    assert len(store.list_conversations()) == 2  # the failed import left nothing behind


def test_old_database_becomes_one_branch(tmp_path):
    import sqlite3

    from assistant.store import MIGRATIONS

    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.executescript(MIGRATIONS[0])
    conn.execute("PRAGMA user_version=1")
    conn.execute("INSERT INTO conversations(id, created, updated) VALUES ('c', 0, 0)")
    for i, role in enumerate(("user", "assistant", "user")):
        conn.execute("INSERT INTO messages(conversation_id, role, content, created) VALUES ('c', ?, ?, 0)",
                     (role, f"m{i}"))
    conn.commit()
    conn.close()
    s = Store(path)
    assert [m["content"] for m in s.messages("c")] == ["m0", "m1", "m2"]
    assert [m["parent_id"] for m in s.messages("c")] == [None, 1, 2]


def test_stopped_and_interrupted_answers_stay_apart(store):
    """A stop the user asked for is not a crash: after a reload the page must tell them apart."""
    c = store.create_conversation(title="t")
    store.add_message(c["id"], "user", "hi")
    stopped = store.add_message(c["id"], "assistant", "Once upon", status="partial")
    store.update_message(stopped, status="stopped")
    assert store.messages(c["id"])[-1]["status"] == "stopped"
    md = store.export_markdown(c["id"])
    assert "(stopped)" in md and "(interrupted)" not in md
    again = store.import_json(store.export_json(c["id"]))
    assert store.messages(again["id"])[-1]["status"] == "stopped"
