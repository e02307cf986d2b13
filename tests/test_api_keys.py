"""API keys for ``enclave serve``: a key made verifies, its secret is stored nowhere (not in the
database file, not in the audit log, not in any list), a revoked key opens nothing, and
``last_used_at`` is written at most once a minute. ``record_request`` writes one audit record
per request, without content."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from app.api_keys import ApiKeyRepository
from app.audit import verify
from app.enforcement import Enforcer
from app.policy import load_policy
from app.serve_audit import record_request
from app.store import Store, open_store
from inference.errors import EnclaveError
from tests.cli import enclave


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2025, 3, 1, 9, 0, 0, tzinfo=timezone.utc)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with open_store(tmp_path / "enclave.db") as opened:
        yield opened


def database_bytes(folder: Path) -> bytes:
    """The database file and its WAL, as they are on disk."""
    return b"".join(path.read_bytes() for path in sorted(folder.glob("enclave.db*")))


def test_a_key_verifies_and_its_secret_is_not_in_the_database(store: Store, tmp_path: Path) -> None:
    keys = ApiKeyRepository(store)
    key, secret = keys.create("ci-runner")
    assert secret.startswith("enc-") and len(secret) >= 4 + 43 and key.prefix == secret[:10]
    assert key.name == "ci-runner" and key.last_used_at is None and not key.revoked

    found = keys.verify(secret)
    assert found is not None and found.name == "ci-runner" and found.last_used_at is not None
    assert keys.verify(secret[:-1] + ("A" if secret[-1] != "A" else "B")) is None  # same prefix, other secret
    assert keys.verify("not-a-key") is None and keys.verify("") is None and keys.verify(key.prefix) is None

    store.close()
    on_disk = database_bytes(tmp_path)
    assert key.prefix.encode() in on_disk  # the part shown in lists is there...
    assert secret.encode() not in on_disk and secret[10:].encode() not in on_disk  # ...the secret is not
    assert secret[10:30].encode() not in on_disk


def test_names_are_unique_even_after_revoking_and_unknown_names_are_listed(store: Store) -> None:
    keys = ApiKeyRepository(store)
    keys.create("alice")
    with pytest.raises(EnclaveError, match="A key named 'alice' already exists; choose another name"):
        keys.create("alice")
    keys.revoke("alice")
    with pytest.raises(EnclaveError, match=r"revoked .*names of revoked keys stay taken"):
        keys.create("alice")
    keys.create("bob")
    with pytest.raises(EnclaveError, match=r"There is no key named 'carol' \(keys: alice, bob\)"):
        keys.revoke("carol")
    with pytest.raises(EnclaveError, match="cannot name a key"):
        keys.create("two words")
    assert [k.name for k in keys.list()] == ["alice", "bob"]


def test_a_revoked_key_does_not_verify(store: Store) -> None:
    keys = ApiKeyRepository(store)
    _, kept = keys.create("kept")
    _, gone = keys.create("gone")
    revoked = keys.revoke("gone")
    assert revoked.revoked_at is not None
    assert keys.verify(gone) is None
    assert keys.verify(kept) is not None
    assert keys.revoke("gone") == revoked  # revoking again changes nothing
    assert {k.name: k.revoked for k in keys.list()} == {"kept": False, "gone": True}


def test_last_used_is_written_at_most_once_a_minute(store: Store) -> None:
    clock = Clock()
    keys = ApiKeyRepository(store, clock=clock)
    _, secret = keys.create("busy")
    first = keys.verify(secret)
    assert first is not None and first.last_used_at == "2025-03-01T09:00:00+00:00"
    clock.now += timedelta(seconds=59)
    assert keys.verify(secret).last_used_at == "2025-03-01T09:00:00+00:00"  # type: ignore[union-attr]
    assert keys.list()[0].last_used_at == "2025-03-01T09:00:00+00:00"
    clock.now += timedelta(seconds=2)
    assert keys.verify(secret).last_used_at == "2025-03-01T09:01:01+00:00"  # type: ignore[union-attr]
    assert keys.list()[0].last_used_at == "2025-03-01T09:01:01+00:00"


def test_a_request_is_audited_without_content(tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    policy = tmp_path / "policy.toml"
    policy.write_text(f'audit_log = "{log}"\n')
    enforcer = Enforcer.in_force(policy=load_policy(policy))
    record_request(enforcer, key="ci-runner", model="library/handbook", tokens_in=812, tokens_out=64, status=200,
                   seconds=1.23456, client="10.1.2.3")
    record_request(enforcer, key=None, model="qwen", tokens_in=5, tokens_out=0, status=400, seconds=0.01,
                   client="127.0.0.1")
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["event"] for r in records] == ["serve.request", "serve.request"]
    assert records[0]["details"] == {"key": "ci-runner", "model": "library/handbook", "tokens_in": 812,
                                     "tokens_out": 64, "status": 200, "seconds": 1.235, "client": "10.1.2.3"}
    assert records[1]["details"]["key"] is None and records[1]["details"]["status"] == 400
    assert verify(log).ok


def test_the_keys_command_shows_a_secret_once_and_audits_without_it(enclave_home: Path, tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    policy = tmp_path / "policy.toml"
    policy.write_text(f'audit_log = "{log}"\n')
    env = {"ENCLAVE_POLICY": str(policy)}

    made = enclave("keys", "create", "editor-plugin", home=enclave_home, env=env)
    assert made.returncode == 0, made.stderr
    secret = made.stdout.strip()
    assert secret.startswith("enc-") and made.stdout.count("\n") == 1  # the secret, alone, on stdout
    assert "store it now: it is not shown again" in made.stderr and secret[:10] in made.stderr
    assert secret not in made.stderr

    listed = enclave("keys", "list", home=enclave_home, env=env)
    assert listed.returncode == 0, listed.stderr
    header, row = listed.stdout.splitlines()
    assert header.split() == ["NAME", "PREFIX", "CREATED", "LAST", "USED", "REVOKED"]
    assert row.split()[:2] == ["editor-plugin", secret[:10]] and row.split()[-2:] == ["never", "-"]
    as_json = json.loads(enclave("keys", "list", "--json", home=enclave_home, env=env).stdout)
    assert as_json[0]["name"] == "editor-plugin" and as_json[0]["revoked_at"] is None
    assert set(as_json[0]) == {"name", "prefix", "created_at", "last_used_at", "revoked_at"}

    revoked = enclave("keys", "revoke", "editor-plugin", home=enclave_home, env=env)
    assert revoked.returncode == 0 and "requests with it are refused from now on" in revoked.stdout
    assert json.loads(enclave("keys", "list", "--json", home=enclave_home, env=env).stdout)[0]["revoked_at"]
    unknown = enclave("keys", "revoke", "nobody", home=enclave_home, env=env)
    assert unknown.returncode == 2 and "There is no key named 'nobody' (keys: editor-plugin)" in unknown.stderr

    everything = listed.stdout + as_json.__repr__() + revoked.stdout + log.read_text()
    assert secret not in everything and secret[10:].encode() not in database_bytes(enclave_home / "data")
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert [(r["event"], r["details"]) for r in records] == [
        ("key.create", {"name": "editor-plugin", "prefix": secret[:10]}),
        ("key.revoke", {"name": "editor-plugin", "prefix": secret[:10]})]
