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
from tests.cli import enclave as run_enclave

SECRET_CHAT = "the merger with Globex closes on the ninth"
SECRET_DOC = "Project Nightingale budget is 4.2 million"


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


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
    def enclave(*args: str) -> subprocess.CompletedProcess[str]:
        return run_enclave(*args, home=enclave_home, timeout=120)

    assert enclave("library", "create", "one").returncode == 0
    assert enclave("library", "create", "two").returncode == 0
    ok = enclave("audit", "verify")
    assert ok.returncode == 0 and f"{audited}: ok, 2 records, last hash" in ok.stdout
    noted = ok.stdout.strip().rsplit(" ", 1)[-1].rstrip(".")
    assert enclave("audit", "verify", "--noted", noted).returncode == 0
    whole = audited.read_text()
    audited.write_text(whole.splitlines(keepends=True)[0])  # cut short after the noted hash
    assert enclave("audit", "verify").returncode == 0  # the chain alone cannot see it...
    assert enclave("audit", "verify", "--noted", noted).returncode == 2  # ...the noted hash does
    audited.write_text(whole)
    audited.write_text(audited.read_text().replace('"one"', '"uno"'))
    tampered = enclave("audit", "verify", str(audited))
    assert tampered.returncode == 2 and "line 2: does not follow line 1" in tampered.stderr


def two_records(tmp_path: Path) -> tuple[AuditLog, list[bytes]]:
    log = AuditLog(tmp_path / "audit.jsonl")
    log.append("library.create", {"library": "one"})
    log.append("library.create", {"library": "two"})
    return log, log.path.read_bytes().splitlines()


def test_verify_reports_each_line_that_is_not_a_whole_audit_record(tmp_path: Path) -> None:
    log, lines = two_records(tmp_path)
    sound = json.loads(lines[1])

    def after_the_first(line: bytes) -> list[str]:
        log.path.write_bytes(lines[0] + b"\n" + line + b"\n")
        return verify(log.path).problems

    def variant(**changes: object) -> bytes:
        return json.dumps({**sound, **changes}).encode()

    assert after_the_first(lines[1]) == []
    assert after_the_first(b"{}") == ["line 2: not an audit record (no prev, time, user, host, pid, event, details)"]
    assert after_the_first(b'{"event": "model.load", "details": {}}') == [
        "line 2: not an audit record (no prev, time, user, host, pid)"]
    assert after_the_first(b"[]") == ["line 2: not an audit record (a JSON array, not an object)"]
    assert after_the_first(b"[" * 100_000) == ["line 2: not a JSON record (damaged or edited)"]
    accented = lines[1].replace(b'"two"', '"tw\u00e9"'.encode())
    for cut_short in (lines[1][:-3], accented[:accented.index("\u00e9".encode()) + 1]):  # the last inside a character
        assert after_the_first(cut_short) == [
            "line 2: torn: the record stops part-way (its write was cut short: a process killed, a full disk)"]
    assert after_the_first(variant(pid="1")) == ["line 2: not an audit record (pid is not a process id)"]
    assert after_the_first(variant(pid=True)) == ["line 2: not an audit record (pid is not a process id)"]
    assert after_the_first(variant(details=["x"])) == ["line 2: not an audit record (details is not an object)"]
    assert after_the_first(variant(time="yesterday")) == [
        "line 2: not an audit record (time is not an ISO 8601 time with its time zone)"]
    assert after_the_first(variant(user=None, host=3)) == [
        "line 2: not an audit record (user is not a non-empty string; host is not a string)"]
    assert after_the_first(variant(event="")) == ["line 2: not an audit record (event is not a non-empty string)"]
    assert after_the_first(variant(prev="zz")) == ["line 2: not an audit record (prev is not a SHA-256 in hex)",
                                                   "line 2: does not follow line 1 (a record before it was changed, "
                                                   "inserted or removed)"]
    assert after_the_first(variant(note="x")) == ["line 2: not an audit record (unexpected field note)"]
    # a forged record that lost its link is reported twice over: its fields and its place in the chain
    assert after_the_first(variant(prev=GENESIS, pid=-1)) == [
        "line 2: not an audit record (pid is not a process id)",
        "line 2: does not follow line 1 (a record before it was changed, inserted or removed)"]

    log.path.write_bytes(b"\n".join(lines) + b"\n{}\n" + lines[1] + b"\n")  # every bad line, by its number
    assert verify(log.path).problems == [
        "line 3: not an audit record (no prev, time, user, host, pid, event, details)",
        "line 4: does not follow line 3 (a record before it was changed, inserted or removed)"]


def test_short_writes_are_finished_and_a_write_that_cannot_be_is_an_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_write = os.write
    monkeypatch.setattr(os, "write", lambda fd, data: real_write(fd, bytes(data[:7])))
    log, _ = two_records(tmp_path)
    check = verify(log.path)
    assert check.ok and check.records == 2, check.problems

    monkeypatch.setattr(os, "write", lambda fd, data: 0)
    with pytest.raises(AuditError, match="cannot be written"):
        log.append("model.load", {"name": "m"})


def test_a_torn_last_line_stays_a_line_of_its_own_and_the_chain_goes_on_through_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log, lines = two_records(tmp_path)
    log.path.write_bytes(log.path.read_bytes()[:-25])  # the writer of record 2 was killed mid-write
    log.append("model.load", {"name": "m"})
    torn = "torn: the record stops part-way (its write was cut short: a process killed, a full disk)"
    assert len(log.path.read_bytes().splitlines()) == 3  # not glued onto the torn line
    assert verify(log.path).problems == [f"line 2: {torn}"] and verify(log.path).records == 3

    real_write = os.write
    calls = []

    def disk_full(fd: int, data: bytes) -> int:
        calls.append(fd)
        if len(calls) > 1:
            raise OSError(28, "No space left on device")
        return real_write(fd, bytes(data[:30]))

    monkeypatch.setattr(os, "write", disk_full)
    with pytest.raises(AuditError, match="No space left on device"):
        log.append("model.load", {"name": "m2"})
    monkeypatch.setattr(os, "write", real_write)
    log.append("model.remove", {"name": "m"})

    now = log.path.read_bytes().splitlines()
    assert len(now) == 5 and now[0] == lines[0] and now[1] == lines[1][:-24] and len(now[3]) == 30
    assert [json.loads(now[n])["prev"] for n in (2, 4)] == [line_hash(now[1]), line_hash(now[3])]
    check = verify(log.path)
    assert check.records == 5 and check.last_hash == line_hash(now[4])
    assert check.problems == [f"line 2: {torn}", f"line 4: {torn}"]

    log.path.write_bytes(log.path.read_bytes()[:-10])  # a log that ends part-way through a line is torn there
    assert verify(log.path).problems[-1] == f"line 5: {torn}"
    log.path.write_bytes(b"\n".join(now) + b"\n" + now[0][:-1])
    assert verify(log.path).problems[-1] == "line 6: torn: the record stops part-way (its write was cut short: " \
                                            "a process killed, a full disk)"
    log.path.write_bytes(b"\n".join(now))  # only the last newline missing: the record is whole, and the next
    assert verify(log.path).problems == [f"line 2: {torn}", f"line 4: {torn}"]  # append puts it back
    log.append("model.load", {"name": "m"})
    assert verify(log.path).problems == [f"line 2: {torn}", f"line 4: {torn}"] and verify(log.path).records == 6


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX modes")
def test_log_and_lock_are_group_writable_for_a_shared_folder(tmp_path: Path) -> None:
    shared = tmp_path / "var-log-enclave"
    shared.mkdir()
    previous = os.umask(0o022)
    try:
        log = AuditLog(shared / "audit.jsonl")
        log.append("library.create", {"library": "one"})
    finally:
        os.umask(previous)
    assert (shared / "audit.jsonl").stat().st_mode & 0o777 == 0o660
    assert (shared / "audit.jsonl.lock").stat().st_mode & 0o777 == 0o660


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux setgid directories")
def test_files_take_the_setgid_folders_group(tmp_path: Path) -> None:
    others = [g for g in os.getgroups() if g != os.getegid()]
    group = others[0] if others else 65534 if os.geteuid() == 0 else None
    if group is None:
        pytest.skip("this account is in no second group")
    shared = tmp_path / "var-log-enclave"
    shared.mkdir()
    os.chown(shared, -1, group)
    shared.chmod(0o2770)
    AuditLog(shared / "audit.jsonl").append("library.create", {"library": "one"})
    for name in ("audit.jsonl", "audit.jsonl.lock"):
        assert (shared / name).stat().st_gid == group and (shared / name).stat().st_mode & 0o777 == 0o660


def test_a_last_hash_noted_elsewhere_shows_a_log_cut_short_or_rewritten(tmp_path: Path) -> None:
    log, lines = two_records(tmp_path)
    noted = verify(log.path).last_hash
    log.append("model.load", {"name": "m"})
    assert verify(log.path, noted=noted).ok
    log.path.write_bytes(lines[0] + b"\n")  # cut short: the chain alone cannot tell
    assert verify(log.path).ok
    assert verify(log.path, noted=noted).problems == [
        f"no line has the hash noted earlier ({noted}): the log was cut short or rewritten at or before it"]
