"""Branches over the websocket and REST (edit and regenerate add siblings, select switches),
settings stored per conversation, and other tabs told about changes. Scripted backend."""

from __future__ import annotations

import json
import urllib.request

import pytest

from scripted_backend import scripted_server
from server_util import ws_connect


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    srv = scripted_server(tmp_path_factory.mktemp("tree"))
    yield srv
    srv.stop()


def until(ws, kind):
    """Messages up to and including the first of type ``kind``."""
    out = []
    while True:
        msg = json.loads(ws.receive(timeout=10))
        out.append(msg)
        if msg["type"] == kind:
            return out


def rest(live, path, body=None, method="GET"):
    req = urllib.request.Request(live.url + path, method=method, data=None if body is None else json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json", "Origin": live.url})
    return json.loads(urllib.request.urlopen(req).read())


def test_edit_and_regenerate_keep_every_branch(live):
    ws = ws_connect(f"ws://127.0.0.1:{live.port}/ws")
    other = ws_connect(f"ws://127.0.0.1:{live.port}/ws")
    until(ws, "hello")
    until(other, "hello")
    ws.send(json.dumps({"type": "send", "conversation_id": None, "content": "one", "sampling": {"temperature": 0.25},
                        "max_tokens": 50}))
    cid = until(ws, "conversation")[-1]["conversation"]["id"]
    until(ws, "done")
    # The other tab hears about the new turn.
    assert until(other, "changed")[-1]["conversation_id"] == cid
    conv = rest(live, f"/api/conversations/{cid}")
    assert conv["settings"]["sampling"]["temperature"] == 0.25 and conv["settings"]["max_tokens"] == 50
    first_answer = conv["messages"][1]
    ws.send(json.dumps({"type": "regenerate", "conversation_id": cid, "message_id": first_answer["id"]}))
    until(ws, "done")
    conv = rest(live, f"/api/conversations/{cid}")
    assert len(conv["messages"]) == 2 and conv["messages"][1]["siblings"] == [first_answer["id"], conv["messages"][1]["id"]]
    user = conv["messages"][0]
    ws.send(json.dumps({"type": "edit", "conversation_id": cid, "message_id": user["id"], "content": "one, edited"}))
    until(ws, "done")
    conv = rest(live, f"/api/conversations/{cid}")
    assert conv["messages"][0]["content"] == "one, edited" and len(conv["messages"][0]["siblings"]) == 2
    # Back to the first question, with the answer chosen there last.
    conv = rest(live, f"/api/conversations/{cid}/select", {"message_id": user["id"]}, "POST")
    assert [m["content"] for m in conv["messages"]][0] == "one"
    assert conv["messages"][1]["siblings"][-1] == conv["messages"][1]["id"]
    # The export holds all five messages.
    data = rest(live, f"/api/conversations/{cid}/export?format=json")
    assert len(data["messages"]) == 5 and data["format"] == "assistant-conversation/2"
    # Bad requests: an unknown message, a user message to regenerate.
    ws.send(json.dumps({"type": "regenerate", "conversation_id": cid, "message_id": user["id"]}))
    assert "no answer" in until(ws, "error")[-1]["message"]
    ws.send(json.dumps({"type": "edit", "conversation_id": cid, "message_id": 99999, "content": "x"}))
    assert "no user message" in until(ws, "error")[-1]["message"]
    with pytest.raises(urllib.error.HTTPError):
        rest(live, f"/api/conversations/{cid}/select", {"message_id": "x"}, "POST")
    ws.close()
    other.close()
