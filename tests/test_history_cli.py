"""``enclave chat`` and ``enclave history`` as a user runs them, and the kill test."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from app.conversations import ConversationRepository
from app.store import open_store
from inference.errors import EnclaveError
from tests.cli import enclave


def database(home: Path) -> Path:
    return home / "data" / "enclave.db"


def test_chat_keeps_a_conversation_across_restarts(enclave_home: Path, moe_model: Path, tmp_path: Path) -> None:
    assert enclave("settings", "set", "max_tokens", "8", home=enclave_home).returncode == 0
    first = enclave("chat", "--model", str(moe_model), home=enclave_home, stdin="tell me about the library\n")
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip()
    listed = json.loads(enclave("history", "list", "--json", home=enclave_home).stdout)
    assert len(listed) == 1 and listed[0]["title"] == "tell me about the library"
    cid = listed[0]["id"]
    again = enclave("chat", "--conversation", str(cid), home=enclave_home, stdin="and the memory?\n/exit\n")
    assert again.returncode == 0, again.stderr
    assert "tell me about the library" in again.stderr  # the conversation so far is shown on resume

    found = json.loads(enclave("history", "search", "memory", "--json", home=enclave_home).stdout)
    assert any(h["message_id"] and "[memory]" in h["snippet"] for h in found)
    shown = enclave("history", "show", str(cid), home=enclave_home).stdout
    assert shown.startswith("# tell me about the library") and "## User" in shown and "and the memory?" in shown

    exported = tmp_path / "chat.json"
    assert enclave("history", "export", str(cid), "--format", "json", "-o", str(exported),
                   home=enclave_home).returncode == 0
    imported = enclave("history", "import", str(exported), home=enclave_home)
    assert imported.returncode == 0, imported.stderr
    with open_store(database(enclave_home), readonly=True) as store:
        repo = ConversationRepository(store)
        original, copy = repo.recent()[1], repo.recent()[0]
        keep = ("role", "content", "reasoning", "status", "completion_tokens", "model", "created_at")
        assert [[getattr(m, k) for k in keep] for m in repo.messages(copy.id)] == \
               [[getattr(m, k) for k in keep] for m in repo.messages(original.id)]
        assert len(repo.messages(copy.id)) == 4

    md = enclave("history", "export", str(cid), "--format", "md", home=enclave_home)
    assert md.stdout == shown
    deleted = enclave("history", "delete", str(cid), home=enclave_home)
    assert deleted.returncode == 0 and "Deleted conversation" in deleted.stdout
    missing = enclave("history", "show", str(cid), home=enclave_home)
    assert missing.returncode == 2 and missing.stderr.startswith("enclave: error: There is no conversation")


def test_chat_without_a_model_says_how_to_choose_one(enclave_home: Path) -> None:
    result = enclave("chat", home=enclave_home, stdin="hi\n")
    assert result.returncode == 2
    assert "No model chosen" in result.stderr and "default_model" in result.stderr


def test_killing_enclave_mid_reply_loses_nothing(enclave_home: Path, moe_model: Path) -> None:
    for key, value in (("max_tokens", "100000"), ("context_length", "4096"), ("threads", "1")):
        assert enclave("settings", "set", key, value, home=enclave_home).returncode == 0
    env = {**os.environ, "ENCLAVE_HOME": str(enclave_home)}
    proc = subprocess.Popen([sys.executable, "-m", "app", "chat", "--model", str(moe_model)],
                            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=env, text=True)
    proc.stdin.write("write a very long story about the secure library\n")
    proc.stdin.flush()
    try:
        partial = ""
        deadline = time.monotonic() + 120
        while len(partial) < 200 and time.monotonic() < deadline:  # wait until the reply is being written
            time.sleep(0.2)
            if database(enclave_home).exists():
                with open_store(database(enclave_home), readonly=True) as store:
                    rows = ConversationRepository(store).messages(1) if ConversationRepository(store).count() else []
                partial = rows[1].content if len(rows) > 1 else ""
        assert len(partial) >= 200, "the reply never started streaming"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)

    with open_store(database(enclave_home)) as store:  # a normal start afterwards
        assert store.integrity_check() == ["ok"]
        repo = ConversationRepository(store)
        user, reply = repo.messages(1)
        assert user.role == "user" and user.content == "write a very long story about the secure library"
        assert reply.role == "assistant" and reply.status == "partial"
        assert len(reply.content) >= len(partial)  # at least what was there when it died


def conversation_with_alternatives(home: Path) -> int:
    """A conversation whose one reply was regenerated: "first" set aside, "second" shown."""
    from app.services import Services

    with Services.open() as services:
        repo = services.conversations
        conversation = repo.create(title="two answers")
        repo.add_message(conversation.id, "user", "hi")
        first = repo.add_message(conversation.id, "assistant", "first answer")
        group = repo.set_aside(first.id)
        repo.add_message(conversation.id, "assistant", "second answer", alternative_of=group)
        return conversation.id


def test_history_show_prints_the_shown_alternative_and_how_many_there_are(enclave_home: Path) -> None:
    cid = conversation_with_alternatives(enclave_home)
    shown = enclave("history", "show", str(cid), home=enclave_home)
    assert shown.returncode == 0, shown.stderr
    assert "## Assistant (2 alternatives, this is 2)" in shown.stdout
    assert "second answer" in shown.stdout and "first answer" not in shown.stdout


def test_export_keeps_every_alternative_and_import_brings_them_back(enclave_home: Path) -> None:
    from app.export import export_json, export_markdown, import_json

    cid = conversation_with_alternatives(enclave_home)
    with open_store(database(enclave_home)) as store:
        repo = ConversationRepository(store)
        every = repo.messages(cid, alternatives=True)
        markdown = export_markdown(repo.get(cid), every)
        assert "second answer" in markdown and "Alternative 1 of 2" in markdown and "first answer" in markdown
        copy = import_json(repo, export_json(repo.get(cid), every))
        assert [m.content for m in repo.messages(copy.id)] == ["hi", "second answer"]
        reply = repo.messages(copy.id)[-1]
        assert [m.content for m in repo.alternatives(reply.id)] == ["first answer", "second answer"]
        assert (reply.alternative, reply.alternatives) == (2, 2)


def test_export_and_import_keep_the_drafted_and_accepted_counts(enclave_home: Path) -> None:
    from app.export import export_json, import_json

    with open_store(database(enclave_home)) as store:
        repo = ConversationRepository(store)
        conversation = repo.create(title="drafted")
        repo.add_message(conversation.id, "user", "quote it")
        reply = repo.add_message(conversation.id, "assistant", "quoted", drafted_tokens=52, accepted_tokens=40)
        assert (reply.drafted_tokens, reply.accepted_tokens) == (52, 40)
        exported = json.loads(export_json(conversation, repo.messages(conversation.id)))
        assert exported["messages"][1]["drafted_tokens"] == 52 and exported["messages"][1]["accepted_tokens"] == 40
        assert exported["messages"][0]["drafted_tokens"] == 0
        copy = import_json(repo, json.dumps(exported))
        assert [(m.drafted_tokens, m.accepted_tokens) for m in repo.messages(copy.id)] == [(0, 0), (52, 40)]
        for m in exported["messages"]:  # an export made before drafting has no counts: they read as 0
            del m["drafted_tokens"], m["accepted_tokens"]
        older = import_json(repo, json.dumps(exported))
        assert [m.drafted_tokens for m in repo.messages(older.id)] == [0, 0]
        exported["messages"][1]["drafted_tokens"] = "many"
        with pytest.raises(EnclaveError, match="message 2 has drafted_tokens 'many', not a count"):
            import_json(repo, json.dumps(exported))
