"""The audit log: its chain of records, several processes writing at once, a record for each
event the policy asks about — and never a word of a conversation or a document."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest

from app.audit import GENESIS, AuditError, AuditLog, line_hash, os_user, verify
from app.ingest import ingest
from app.policy import PolicyRefusal
from app.services import Services
from app.transfer import export_model

SECRET_CHAT = "the merger with Globex closes on the ninth"
SECRET_DOC = "Project Nightingale budget is 4.2 million"


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture
def audited(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A policy that turns the audit log on at a path of the administrator's choosing."""
    log = tmp_path / "var-log" / "audit.jsonl"
    policy = tmp_path / "admin" / "policy.toml"
    policy.parent.mkdir()
    policy.write_text(f'audit_log = "{log}"\n')
    monkeypatch.setenv("ENCLAVE_POLICY", str(policy))
    return log


def test_records_chain_and_verify_finds_edits_insertions_and_removals(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.jsonl")
    for n in range(4):
        log.append("model.load", {"n": n})
    lines = log.path.read_bytes().splitlines()
    first = json.loads(lines[0])
    assert first["prev"] == GENESIS and json.loads(lines[1])["prev"] == line_hash(lines[0])
    assert first["user"] == os_user() and first["host"] == platform.node() and first["pid"] == os.getpid()
    when = datetime.fromisoformat(first["time"])
    assert when.utcoffset() == timezone.utc.utcoffset(None)
    assert verify(log.path).ok and verify(log.path).records == 4
    assert verify(log.path).last_hash == line_hash(lines[-1])

    def check(changed: list[bytes]) -> list[str]:
        target = tmp_path / "changed.jsonl"
        target.write_bytes(b"\n".join(changed) + b"\n")
        return verify(target).problems

    assert check([lines[0], lines[1].replace(b'"n": 1', b'"n": 7'), *lines[2:]]) == [
        "line 3: does not follow line 2 (a record before it was changed, inserted or removed)"]
    assert check([lines[0], lines[2], lines[3]])[0].startswith("line 2: does not follow")
    assert check(lines[1:]) == ["line 1: is not the log's first record (the start was removed)"]
    assert check([lines[0], b"{not json", *lines[1:]])[0] == "line 2: not a JSON record (damaged or edited)"


def test_several_processes_append_at_once_without_breaking_the_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    script = ("import sys; from pathlib import Path; from app.audit import AuditLog\n"
              "log = AuditLog(Path(sys.argv[1]))\n"
              "for n in range(40): log.append('library.add', {'n': n, 'path': 'x' * 3000})\n")
    writers = [subprocess.Popen([sys.executable, "-c", script, str(path)]) for _ in range(4)]
    assert [w.wait(timeout=120) for w in writers] == [0, 0, 0, 0]
    result = verify(path)
    assert result.ok, result.problems
    assert result.records == 160 and len({r["pid"] for r in records(path)}) == 4


def test_a_log_that_cannot_be_written_stops_the_app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "a-file").write_text("")
    with pytest.raises(AuditError, match="cannot be written"):
        AuditLog(tmp_path / "a-file" / "audit.jsonl")
    policy = tmp_path / "policy.toml"
    policy.write_text(f'audit_log = "{tmp_path}/a-file/audit.jsonl"\n')
    monkeypatch.setenv("ENCLAVE_POLICY", str(policy))
    with pytest.raises(AuditError, match="required by your organisation's policy"):
        Services.open()


def test_each_event_is_recorded_and_no_content_ever(audited: Path, moe_model: Path, tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    document = tmp_path / "docs" / "plan.txt"
    document.write_text(f"{SECRET_DOC}. Nobody outside the board knows.\n")
    with Services.open() as services:
        model = services.models.import_files([moe_model], "copy")
        library = services.libraries.create("board")
        ingest(services.libraries, library, [tmp_path / "docs"])
        conversation = services.chat.start(model=model.id)
        services.settings.set("max_tokens", 4)
        events = list(services.chat.send(conversation.id, f"Remember: {SECRET_CHAT}."))
        assert events and services.conversations.messages(conversation.id)[0].content.endswith(f"{SECRET_CHAT}.")
        services.export_conversation(conversation.id, "md", str(tmp_path / "chat.md"))
        export_model(services.models, model, tmp_path / "stick")
        services.libraries.remove_document(services.libraries.documents(library.id)[0].id)
        services.libraries.delete(library.id)
        services.models.remove(model, delete_files=True)
    policy = Path(os.environ["ENCLAVE_POLICY"])
    policy.write_text(policy.read_text() + "export = false\n")
    with pytest.raises(PolicyRefusal), Services.open() as services:  # a refusal is recorded too
        services.export_conversation(conversation.id, "json", "stdout")

    log = records(audited)
    assert [r["event"] for r in log] == ["model.import", "library.create", "library.add", "model.load",
                                         "conversation.export", "model.export", "library.remove", "library.delete",
                                         "model.remove", "policy.refused"]
    by_event = {r["event"]: r["details"] for r in log}
    assert by_event["model.import"]["files"][0]["sha256"] == model.files[0].sha256
    assert by_event["model.load"]["sha256"] == [model.files[0].sha256] and by_event["model.load"]["name"]
    assert by_event["library.add"]["path"] == str(document) and by_event["library.add"]["library"] == "board"
    assert by_event["policy.refused"] == {"rule": "export", "action": "conversation",
                                          "conversation": conversation.id, "destination": "stdout"}
    assert all(r["user"] == os_user() and r["pid"] == os.getpid() for r in log)
    assert verify(audited).ok
    text = audited.read_text()
    for secret in (SECRET_CHAT, SECRET_DOC, "Globex", "Nightingale", "board knows"):
        assert secret not in text


def test_cli_verify(audited: Path, tmp_path: Path, enclave_home: Path) -> None:
    env = {**os.environ, "ENCLAVE_HOME": str(enclave_home)}

    def enclave(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "app", *args], capture_output=True, text=True, env=env,
                              timeout=120)

    assert enclave("library", "create", "one").returncode == 0
    assert enclave("library", "create", "two").returncode == 0
    ok = enclave("audit", "verify")
    assert ok.returncode == 0 and f"{audited}: ok, 2 records, last hash" in ok.stdout
    audited.write_text(audited.read_text().replace('"one"', '"uno"'))
    tampered = enclave("audit", "verify", str(audited))
    assert tampered.returncode == 2 and "line 2: does not follow line 1" in tampered.stderr
