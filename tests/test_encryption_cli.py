"""``enclave database encrypt`` / ``decrypt`` and ``enclave doctor`` as a user runs them: real
processes, with a keyring kept in a test file (never the machine's)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from app.conversations import ConversationRepository
from app.store import open_store
from tests.cli import enclave as run_enclave
from tests.cli import one_error_line as the_error_line

SECRET = "marzipan heron 4412"
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def keyring_file(tmp_path: Path) -> Path:
    return tmp_path / "keyring.json"


def enclave(*args: str, home: Path, keys: Path, backend: str = "tests.memory_keyring.FileKeyring",
            stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return run_enclave(*args, home=home, env={"PYTHON_KEYRING_BACKEND": backend, "ENCLAVE_TEST_KEYRING": str(keys)},
                       stdin=stdin, timeout=120)


def one_error_line(result: subprocess.CompletedProcess[str], expected: str) -> None:
    assert expected in the_error_line(result), result.stderr


@pytest.fixture
def database(enclave_home: Path) -> Path:
    path = enclave_home / "data" / "enclave.db"
    with open_store(path) as store:
        repo = ConversationRepository(store)
        conversation = repo.create(title="kept")
        repo.add_message(conversation.id, "user", f"remember {SECRET}")
    return path


def test_encrypt_and_decrypt_from_the_command_line(database: Path, enclave_home: Path, keyring_file: Path) -> None:
    done = enclave("database", "encrypt", "--yes", home=enclave_home, keys=keyring_file)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"Encrypted {database}: ") and "rows, all checked" in done.stdout
    assert SECRET.encode() not in database.read_bytes()
    (stored,) = json.loads(keyring_file.read_text()).items()
    assert stored[0] == f"enclave\ndatabase-key {database.parent}" and len(stored[1]) == 64

    doctor = enclave("doctor", home=enclave_home, keys=keyring_file)
    assert doctor.returncode == 0, doctor.stderr
    line = next(x for x in doctor.stdout.splitlines() if x.startswith("Database encryption:"))
    assert line.startswith("Database encryption: on (SQLCipher 4.") and "AES-256-CBC" in line
    assert "HMAC_SHA512" in line and "key in keyring" in line and str(database.parent) in line

    found = enclave("history", "search", "heron", home=enclave_home, keys=keyring_file)
    assert found.returncode == 0 and "marzipan [heron] 4412" in found.stdout, found.stderr
    one_error_line(enclave("database", "encrypt", "--yes", home=enclave_home, keys=keyring_file),
                   "is already encrypted")

    back = enclave("database", "decrypt", home=enclave_home, keys=keyring_file)
    assert back.returncode == 0, back.stderr
    assert "Its key is removed from the keyring" in back.stdout
    assert SECRET.encode() in database.read_bytes() and json.loads(keyring_file.read_text()) == {}
    one_error_line(enclave("database", "decrypt", home=enclave_home, keys=keyring_file), "is not encrypted")


def test_encrypting_and_decrypting_are_audited(database: Path, enclave_home: Path, keyring_file: Path,
                                              tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = tmp_path / "audit.jsonl"
    policy = tmp_path / "policy.toml"
    policy.write_text(f'audit_log = "{log}"\n')
    monkeypatch.setenv("ENCLAVE_POLICY", str(policy))  # inherited by the subprocesses
    assert enclave("database", "encrypt", "--yes", home=enclave_home, keys=keyring_file).returncode == 0
    assert enclave("database", "decrypt", home=enclave_home, keys=keyring_file).returncode == 0
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["event"] for r in records] == ["database.encrypt", "database.decrypt"]
    assert all(r["details"]["database"] == str(database) and r["details"]["rows"] > 0 for r in records)


def test_declining_the_question_changes_nothing(database: Path, enclave_home: Path, keyring_file: Path) -> None:
    data = database.read_bytes()
    result = enclave("database", "encrypt", home=enclave_home, keys=keyring_file, stdin="n\n")
    assert result.returncode == 1 and "kept only in this machine's keyring" in result.stdout
    assert database.read_bytes() == data and not keyring_file.exists()


def test_no_keyring_wrong_key_and_a_running_enclave_are_one_line_each(database: Path, enclave_home: Path,
                                                                     keyring_file: Path) -> None:
    data = database.read_bytes()
    one_error_line(enclave("database", "encrypt", "--yes", home=enclave_home, keys=keyring_file,
                           backend="keyring.backends.fail.Keyring"), "no usable keyring")
    assert database.read_bytes() == data

    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; from pathlib import Path; from app.store import open_store;"
         f"s = open_store(Path({str(database)!r})); print('open', flush=True); sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert holder.stdout.readline().strip() == "open"
        one_error_line(enclave("database", "encrypt", "--yes", home=enclave_home, keys=keyring_file),
                       "Enclave is already running with this data folder")
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    assert database.read_bytes().startswith(b"SQLite format 3")

    assert enclave("database", "encrypt", "--yes", home=enclave_home, keys=keyring_file).returncode == 0
    keyring_file.write_text(json.dumps({f"enclave\ndatabase-key {database.parent}": "ab" * 32}))
    encrypted = database.read_bytes()
    one_error_line(enclave("history", "list", home=enclave_home, keys=keyring_file),
                   "does not open the database")
    keyring_file.write_text("{}")
    one_error_line(enclave("history", "list", home=enclave_home, keys=keyring_file),
                   "the keyring holds no Enclave key")
    assert database.read_bytes() == encrypted
