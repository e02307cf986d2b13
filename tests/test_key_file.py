"""Headless encryption at rest: the database key in a file (``--key-file``, ``ENCLAVE_DB_KEY_FILE``,
systemd's ``$CREDENTIALS_DIRECTORY/enclave-db-key``) instead of the keyring. A database encrypted
with a key file opens with it and is refused without it; a key file others can read is refused
with how to fix it; decrypting with it gives back every row; the keyring is never asked."""

from __future__ import annotations

import os
import sqlite3
import stat
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

import app.encryption as encryption
from app import sqlcipher
from app.conversations import ConversationRepository
from app.encryption import EncryptionError, decrypt_database, describe, encrypt_database, status
from app.key_file import FROM_OPTION, KeyFile, KeyFileError, read_key
from app.store import StoreError, open_store
from tests.cli import enclave
from tests.cli import one_error_line as the_error_line
from tests.memory_keyring import MemoryKeyring

SECRET = "pangolin lantern 5190"


def snapshot(conn: Any) -> dict[str, list[str]]:
    names = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
    return {name: sorted(map(repr, conn.execute(f'SELECT * FROM "{name}"').fetchall())) for name in names}


@pytest.fixture
def database(enclave_home: Path) -> Path:
    path = enclave_home / "data" / "enclave.db"
    with open_store(path) as store:
        repo = ConversationRepository(store)
        for n in range(3):
            conversation = repo.create(title=f"kept {n}")
            repo.add_message(conversation.id, "user", f"remember {SECRET} ({n})")
    return path


def plain_snapshot(path: Path) -> dict[str, list[str]]:
    with sqlite3.connect(path) as conn:
        return snapshot(conn)


def write_key(path: Path, mode: int, key: str = "c0ffee" * 10 + "abcd") -> str:
    path.write_text(key + "\n")
    path.chmod(mode)
    return key


def test_encrypting_with_a_new_key_file_and_opening_with_the_environment(database: Path, enclave_home: Path,
                                                                         tmp_path: Path) -> None:
    before = plain_snapshot(database)
    key_file = tmp_path / "secrets" / "enclave-db.key"
    key_file.parent.mkdir(mode=0o700)
    keyring_file = tmp_path / "test-keyring.json"  # the processes' keyring (conftest): never written

    done = enclave("database", "encrypt", "--yes", "--key-file", str(key_file), home=enclave_home)
    assert done.returncode == 0, done.stderr
    assert f"The key is made now in {key_file}; set ENCLAVE_DB_KEY_FILE={key_file}" in done.stdout
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    key = key_file.read_text()
    assert len(key) == 65 and key.endswith("\n") and int(key, 16) > 0
    data = database.read_bytes()
    assert not data.startswith(b"SQLite format 3") and SECRET.encode() not in data
    assert not keyring_file.exists()

    opened = enclave("history", "search", "lantern", home=enclave_home, env={"ENCLAVE_DB_KEY_FILE": str(key_file)})
    assert opened.returncode == 0 and opened.stdout.count("pangolin [lantern] 5190") == 3, opened.stderr
    doctor = enclave("doctor", home=enclave_home, env={"ENCLAVE_DB_KEY_FILE": str(key_file)})
    line = next(x for x in doctor.stdout.splitlines() if x.startswith("Database encryption:"))
    assert line.startswith("Database encryption: on (SQLCipher 4.")
    assert line.endswith(f"key in file {key_file} (ENCLAVE_DB_KEY_FILE))")

    refused = the_error_line(enclave("history", "list", home=enclave_home))
    assert "the keyring holds no Enclave key" in refused and "set ENCLAVE_DB_KEY_FILE to that file" in refused

    key_file.chmod(0o644)
    loose = the_error_line(enclave("history", "list", home=enclave_home, env={"ENCLAVE_DB_KEY_FILE": str(key_file)}))
    assert f"The database key file {key_file} is open to group or others (mode 0644)" in loose
    assert f"Fix it with 'chmod 600 {key_file}'" in loose
    assert database.read_bytes() == data
    key_file.chmod(0o400)

    back = enclave("database", "decrypt", "--key-file", str(key_file), home=enclave_home)
    assert back.returncode == 0, back.stderr
    assert f"The key file {key_file} is no longer needed" in back.stdout
    assert database.read_bytes().startswith(b"SQLite format 3\x00")
    assert plain_snapshot(database) == before
    assert key_file.read_text() == key  # left where it was


def test_a_credentials_directory_holds_the_key(database: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               memory_keyring: MemoryKeyring) -> None:
    before = plain_snapshot(database)
    credentials = tmp_path / "credentials"
    credentials.mkdir(mode=0o500)
    key = write_key(credentials / "enclave-db-key", 0o400)
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(credentials))

    done = encrypt_database(database)  # found by itself: the credential, not the keyring
    assert done.key_file is not None and done.key_file.path == credentials / "enclave-db-key"
    assert not done.key_file_made and memory_keyring.passwords == {}
    with closing(sqlcipher.connect(database, key)) as conn:  # the credential's key is the database's
        assert snapshot(conn) == before
    with open_store(database) as store:
        assert store.encrypted and len(ConversationRepository(store).search("pangolin")) == 3
    assert describe(status(database)).endswith(
        f"key in file {credentials / 'enclave-db-key'} (systemd credential enclave-db-key))")

    (credentials / "enclave-db-key").chmod(0o440)  # systemd's ACL for the service user shows as group read
    with open_store(database, readonly=True) as store:
        assert store.encrypted
    (credentials / "enclave-db-key").chmod(0o404)  # others: never
    with pytest.raises(StoreError, match=r"open to group or others \(mode 0404\).*chmod 600"):
        open_store(database)

    monkeypatch.delenv("CREDENTIALS_DIRECTORY")
    with pytest.raises(StoreError, match="the keyring holds no Enclave key"):
        open_store(database)


def test_the_environment_variable_comes_before_the_credential_and_the_keyring(
        database: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, memory_keyring: MemoryKeyring) -> None:
    named = tmp_path / "named.key"
    key = write_key(named, 0o600)
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    write_key(credentials / "enclave-db-key", 0o400, "ab" * 32)
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(credentials))
    monkeypatch.setenv("ENCLAVE_DB_KEY_FILE", str(named))
    encrypt_database(database)
    assert memory_keyring.passwords == {}
    with closing(sqlcipher.connect(database, key)) as conn:
        assert conn.execute("SELECT count(*) FROM messages").fetchone()[0] == 3
    monkeypatch.delenv("ENCLAVE_DB_KEY_FILE")  # the credential's key is another one: refused, file unchanged
    data = database.read_bytes()
    with pytest.raises(StoreError, match=r"The key in the key file .*enclave-db-key .* does not open the database"):
        open_store(database)
    assert database.read_bytes() == data
    monkeypatch.delenv("CREDENTIALS_DIRECTORY")
    rewritten = decrypt_database(database, KeyFile(named, FROM_OPTION))
    assert rewritten.rows >= 6 and database.read_bytes().startswith(b"SQLite format 3\x00")


@pytest.mark.parametrize(("make", "problem"), [
    (lambda p: p.mkdir(), "is not a regular file"),
    (lambda p: write_key(p, 0o640), "is open to group or others (mode 0640)"),
    (lambda p: write_key(p, 0o600, "not a key"), "does not hold a database key: 64 hexadecimal digits expected"),
    (lambda p: write_key(p, 0o600, "ab" * 31), "does not hold a database key"),
    (lambda p: None, "does not exist (named by --key-file)"),
])
def test_a_key_file_that_cannot_be_trusted_is_refused_with_the_reason(tmp_path: Path, make: Any,
                                                                       problem: str) -> None:
    path = tmp_path / "db.key"
    make(path)
    with pytest.raises(KeyFileError) as info:
        read_key(KeyFile(path, FROM_OPTION))
    assert problem in str(info.value)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() != 0, reason="giving a file away needs root")
def test_a_key_file_owned_by_another_user_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "db.key"
    write_key(path, 0o600)
    os.chown(path, 65534, 65534)
    with pytest.raises(KeyFileError, match=r"belongs to user id 65534, not to the user Enclave runs as .*chown"):
        read_key(KeyFile(path, FROM_OPTION))


def test_encrypting_with_an_existing_loose_key_file_changes_nothing(database: Path, enclave_home: Path,
                                                                     tmp_path: Path) -> None:
    key_file = tmp_path / "db.key"
    write_key(key_file, 0o644)
    data = database.read_bytes()
    result = enclave("database", "encrypt", "--yes", "--key-file", str(key_file), home=enclave_home)
    assert f"Fix it with 'chmod 600 {key_file}'" in the_error_line(result)
    assert database.read_bytes() == data
    missing_folder = the_error_line(enclave("database", "encrypt", "--yes", "--key-file",
                                            str(tmp_path / "nowhere" / "db.key"), home=enclave_home))
    assert f"The folder {tmp_path / 'nowhere'} does not exist" in missing_folder
    assert database.read_bytes() == data


def test_a_failed_encryption_removes_the_key_file_it_made(database: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    key_file = tmp_path / "db.key"
    data = database.read_bytes()

    def broken_switch(*args: Any, **kwargs: Any) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(encryption, "_switch", broken_switch)
    with pytest.raises(OSError, match="disk full"):
        encrypt_database(database, KeyFile(key_file, FROM_OPTION))
    assert not key_file.exists() and database.read_bytes() == data
    with pytest.raises(EncryptionError, match="is not encrypted"):
        decrypt_database(database, KeyFile(key_file, FROM_OPTION))
