"""Encryption at rest: every row survives encrypt and decrypt, the file says nothing without
its key, a missing or wrong key or keyring is refused without touching the file, a failed
move leaves the old database, and a real chat and library flow runs on the encrypted file
leaving no content anywhere on disk."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import keyring
import pytest
from keyring.backends import fail
from keyring.errors import KeyringError

import app.encryption as encryption
from app import sqlcipher
from app.chat import ReplyFinished
from app.db_key import SERVICE, DatabaseKeyError, entry_name, load_key, new_key
from app.diagnostics import collect
from app.encryption import EncryptionError, decrypt_database, describe, encrypt_database, status
from app.ingest import ingest
from app.paths import app_paths
from app.services import Services
from app.sqlcipher import is_encrypted_file
from app.store import AnotherInstanceError, StoreError, open_store
from tests.memory_keyring import MemoryKeyring

SECRET = "zanzibar quokka 7781"


def snapshot(conn: Any) -> dict[str, list[str]]:
    """Every row of every table (FTS5 and its shadow tables included), in a comparable form."""
    names = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
    return {name: sorted(map(repr, conn.execute(f'SELECT * FROM "{name}"').fetchall())) for name in names}


def plain_snapshot(path: Path) -> dict[str, list[str]]:
    with sqlite3.connect(path) as conn:
        return snapshot(conn)


def encrypted_snapshot(path: Path) -> dict[str, list[str]]:
    conn = sqlcipher.connect(path, load_key(path))
    try:
        return snapshot(conn)
    finally:
        conn.close()


@pytest.fixture
def database(enclave_home: Path, tmp_path: Path) -> Path:
    """A database with conversations, a library and settings, closed."""
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "plan.txt").write_text(f"The orchard plan mentions {SECRET} twice. {SECRET}.\n" * 5)
    (docs / "notes.md").write_text("# Notes\n\nNothing secret in here, only apples.\n")
    with Services.open() as services:
        for n in range(3):
            c = services.conversations.create(title=f"talk {n}")
            services.conversations.add_message(c.id, "user", f"question {n} about {SECRET}")
            services.conversations.add_message(c.id, "assistant", f"answer {n}")
        ingest(services.libraries, services.libraries.create("orchard"), [docs])
        services.settings.set("temperature", 0.3)
        return services.paths.database


def test_encrypting_keeps_every_row_and_the_file_says_nothing(database: Path,
                                                                memory_keyring: MemoryKeyring) -> None:
    before = plain_snapshot(database)
    assert SECRET.encode() in database.read_bytes()

    done = encrypt_database(database)

    assert done.tables == len(before) and done.rows == sum(len(rows) for rows in before.values())
    data = database.read_bytes()
    assert not data.startswith(b"SQLite format 3") and SECRET.encode() not in data
    assert b"orchard" not in data and b"CREATE TABLE" not in data
    with pytest.raises(sqlite3.DatabaseError, match="not a database"), sqlite3.connect(database) as plain:
        plain.execute("SELECT count(*) FROM sqlite_master").fetchall()
    assert sorted(p.name for p in database.parent.iterdir()) == ["enclave.db", "enclave.db.lock", "enclave.db.pid"]
    assert list(memory_keyring.passwords) == [(SERVICE, entry_name(database))]
    assert encrypted_snapshot(database) == before

    with Services.open() as services:  # the app opens it with the key, migrations and FTS5 work
        assert services.store.encrypted and services.store.integrity_check() == ["ok"]
        assert {hit.conversation_title for hit in services.conversations.search("quokka")} == {
            "talk 0", "talk 1", "talk 2"}
        services.conversations.add_message(1, "user", "one more, encrypted")
        after_use = snapshot(services.store.read().conn)
    assert b"one more, encrypted" not in database.read_bytes()

    decrypt_database(database)

    assert database.read_bytes().startswith(b"SQLite format 3\x00")
    assert plain_snapshot(database) == after_use
    assert memory_keyring.passwords == {}
    with Services.open() as services:
        assert not services.store.encrypted
        assert len(services.conversations.search("quokka")) == 3


def test_doctor_reports_on_off_and_the_cipher(database: Path) -> None:
    assert collect(app_paths())["encryption"] == {"encrypted": False, "sqlcipher_available": True}
    assert describe(status(database)) == "off ('enclave database encrypt' turns it on)"
    encrypt_database(database)
    report = collect(app_paths())["encryption"]
    assert report["encrypted"] and report["cipher"]["cipher"] == "AES-256-CBC"
    assert report["cipher"]["sqlcipher"].startswith("4.") and report["cipher"]["hmac"] == "HMAC_SHA512"
    assert report["keyring"] == MemoryKeyring().name and report["key_entry"].endswith(str(database.parent))
    assert describe(report).startswith("on (SQLCipher 4.")


def test_a_wrong_key_is_refused_and_the_file_left_alone(database: Path, memory_keyring: MemoryKeyring) -> None:
    encrypt_database(database)
    memory_keyring.passwords[(SERVICE, entry_name(database))] = new_key()
    data = database.read_bytes()
    with pytest.raises(StoreError, match="does not open the database") as info:
        open_store(database)
    assert "did not change it" in str(info.value) and entry_name(database) in str(info.value)
    assert database.read_bytes() == data
    with pytest.raises(EncryptionError, match="left as it was"):
        decrypt_database(database)
    assert database.read_bytes() == data and not database.with_name("enclave.db.rewrite").exists()


def test_a_missing_key_is_refused_and_the_file_left_alone(database: Path, memory_keyring: MemoryKeyring) -> None:
    encrypt_database(database)
    memory_keyring.passwords.clear()
    data = database.read_bytes()
    for readonly in (False, True):
        with pytest.raises(StoreError, match="keyring holds no Enclave key") as info:
            open_store(database, readonly=readonly)
        assert "unlock the keyring" in str(info.value)
    with pytest.raises(EncryptionError, match="holds no key"):
        decrypt_database(database)
    assert database.read_bytes() == data


def test_without_a_keyring_nothing_is_encrypted_or_opened(database: Path) -> None:
    data = database.read_bytes()
    keyring.set_keyring(fail.Keyring())
    with pytest.raises(DatabaseKeyError, match="no usable keyring"):
        encrypt_database(database)
    assert database.read_bytes() == data and not is_encrypted_file(database)

    keyring.set_keyring(MemoryKeyring())
    encrypt_database(database)
    keyring.set_keyring(fail.Keyring())
    data = database.read_bytes()
    with pytest.raises(StoreError, match=r"encrypted.*no usable keyring"):
        open_store(database)
    assert database.read_bytes() == data


def _verification_fails(monkeypatch: pytest.MonkeyPatch, keys: MemoryKeyring) -> None:
    def broken(*args: object) -> None:
        raise EncryptionError("the copy did not check out")
    monkeypatch.setattr(encryption, "_verify", broken)


def _keyring_refuses(monkeypatch: pytest.MonkeyPatch, keys: MemoryKeyring) -> None:
    def refuse(*args: object) -> None:
        raise KeyringError("locked")
    monkeypatch.setattr(keys, "set_password", refuse)


def _rename_fails(monkeypatch: pytest.MonkeyPatch, keys: MemoryKeyring) -> None:
    def full(*args: object) -> None:
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(encryption.os, "replace", full)


def _copy_loses_a_row(monkeypatch: pytest.MonkeyPatch, keys: MemoryKeyring) -> None:
    export = encryption._export

    def lossy(source: Any, copy: Path, key: str | None) -> None:
        export(source, copy, key)
        conn = sqlcipher.connect(copy, key)
        conn.execute("DELETE FROM messages WHERE id = 2")
        conn.commit()
        conn.close()
    monkeypatch.setattr(encryption, "_export", lossy)


@pytest.mark.parametrize("failure", [_verification_fails, _keyring_refuses, _rename_fails, _copy_loses_a_row])
def test_an_interrupted_encryption_leaves_the_original(database: Path, memory_keyring: MemoryKeyring,
                                                       monkeypatch: pytest.MonkeyPatch, failure: Any) -> None:
    before = plain_snapshot(database)
    data = database.read_bytes()
    failure(monkeypatch, memory_keyring)
    with pytest.raises((EncryptionError, DatabaseKeyError, OSError)):
        encrypt_database(database)
    assert database.read_bytes() == data
    assert not database.with_name("enclave.db.rewrite").exists()
    assert memory_keyring.passwords == {}  # no key for a database that is not encrypted
    monkeypatch.undo()
    keyring.set_keyring(memory_keyring)
    with open_store(database) as store:
        assert not store.encrypted and snapshot(store.read().conn) == before


def test_an_interrupted_decryption_leaves_the_encrypted_original(database: Path, memory_keyring: MemoryKeyring,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    encrypt_database(database)
    data, keys = database.read_bytes(), dict(memory_keyring.passwords)
    _copy_loses_a_row(monkeypatch, memory_keyring)
    with pytest.raises(EncryptionError, match="did not check out"):
        decrypt_database(database)
    assert database.read_bytes() == data and memory_keyring.passwords == keys
    assert not database.with_name("enclave.db.rewrite").exists()
    with open_store(database) as store:
        assert store.encrypted and store.integrity_check() == ["ok"]


def test_a_key_the_keyring_will_not_delete_does_not_undo_a_decryption(database: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    encrypt_database(database)

    def refuse(path: Path) -> None:
        raise DatabaseKeyError("The keyring refused to delete the database key (locked).")

    monkeypatch.setattr(encryption.db_key, "delete_key", refuse)
    done = decrypt_database(database)
    assert not is_encrypted_file(database) and done.rows > 0
    assert "still in the keyring" in done.warning and entry_name(database) in done.warning


def test_a_copy_left_by_a_killed_run_is_replaced(database: Path) -> None:
    leftover = database.with_name("enclave.db.rewrite")
    leftover.write_bytes(b"half a database from a run that was killed")
    with open_store(database) as store:  # the app does not care about it
        assert not store.encrypted
    encrypt_database(database)
    assert not leftover.exists() and is_encrypted_file(database)


def test_refused_while_enclave_runs(database: Path) -> None:
    with open_store(database), pytest.raises(AnotherInstanceError, match="already running"):
        encrypt_database(database)
    assert not is_encrypted_file(database)


@pytest.fixture
def content_logged(enclave_home: Path) -> Iterator[None]:
    """The app's log at its most talkative, in this test's home."""
    (enclave_home / "logs").mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(enclave_home / "logs" / "enclave.log")
    root = logging.getLogger()
    previous = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield
    root.removeHandler(handler)
    root.setLevel(previous)
    handler.close()


def test_chat_and_library_on_an_encrypted_database_leave_no_content_on_disk(
        database: Path, enclave_home: Path, moe_model: Path, content_logged: None) -> None:
    encrypt_database(database)
    with Services.open() as services:
        for key, value in (("max_tokens", 6), ("temperature", 0.0), ("context_length", 2048), ("threads", 2)):
            services.settings.set(key, value)
        library = services.libraries.get("orchard")
        conversation = services.chat.start(model=str(moe_model), library_id=library.id)
        replies = [list(services.chat.send(conversation.id, question))[-1]
                   for question in (f"What does the plan say about {SECRET}?", "And the notes?")]
        assert all(isinstance(r, ReplyFinished) and r.message.status == "complete" for r in replies)
        assert replies[1].message.cached_tokens > 0  # the library's prefix, held in the worker's memory
        plain = services.chat.start(model=str(moe_model))
        assert isinstance(list(services.chat.send(plain.id, f"Say {SECRET} back"))[-1], ReplyFinished)

        assert services.prompt_cache.entries() == []  # nothing saved: the KV state is the library's text
        found = {hit.conversation_id for hit in services.conversations.search("quokka")}
        assert found == {1, 2, 3, conversation.id, plain.id}
        assert services.store.integrity_check() == ["ok"]
    kv_folder = services.paths.kv_cache
    assert not kv_folder.exists() or not any(kv_folder.iterdir())
    with open_store(database) as store:  # everything committed, still encrypted
        assert store.encrypted and store.read().execute("SELECT count(*) FROM messages").fetchone()[0] == 12

    for path in enclave_home.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert SECRET.encode() not in data and b"orchard plan" not in data, path
    assert (enclave_home / "logs" / "llama.log").stat().st_size > 0  # the logs were written, without content


def test_saved_prompt_states_are_removed_when_the_database_is_encrypted(database: Path) -> None:
    with Services.open() as services:
        folder = services.paths.kv_cache
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "0123.kv").write_bytes(SECRET.encode())  # as saved before encryption
        (folder / "0123.kv.json").write_text("{}")
    encrypt_database(database)
    with Services.open() as services:
        assert not services.prompt_cache.persistent and list(folder.iterdir()) == []
        assert services.prompt_cache.lookup("0123") is None


def test_the_settings_page_says_whether_encryption_is_on(database: Path, qtbot: Any) -> None:
    from ui.settings_page import SettingsPage
    from ui.tasks import TaskRunner

    for encrypt in (False, True):
        if encrypt:
            encrypt_database(database)
        with Services.open() as services:
            page = SettingsPage(services, TaskRunner(synchronous=True))
            qtbot.addWidget(page)
            text = page.encryption_label.text()
            page.close()
        assert text.startswith("On" if encrypt else "Off")
        assert ("enclave database decrypt" if encrypt else "enclave database encrypt") in text


def test_every_tampered_page_is_found_out(database: Path) -> None:
    """SQLCipher authenticates each page: a changed byte anywhere is refused at open or
    reported by the integrity check (what 'enclave doctor --check-db' runs), never read as data."""
    encrypt_database(database)
    original = database.read_bytes()
    pages = len(original) // 4096
    for page in range(pages):
        data = bytearray(original)
        data[page * 4096 + 2000] ^= 0xFF
        database.write_bytes(bytes(data))
        try:
            with open_store(database, readonly=True) as store:
                problems = store.integrity_check()
        except StoreError as exc:
            assert "damaged" in str(exc), exc
            continue
        assert any(line.startswith("cipher: ") for line in problems), (page, problems)
    database.write_bytes(original)
    with open_store(database, readonly=True) as store:
        assert store.integrity_check() == ["ok"]
