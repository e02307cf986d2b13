"""The app database: migrations, one writer, readers that never wait, refusing what is
not ours, one instance per data folder, full-text search that never raises."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from sqlite_utils import Database

from app.conversations import ConversationRepository
from app.schema import MIGRATIONS
from app.store import AnotherInstanceError, Store, StoreError, open_store

ALL = [m.name for m in MIGRATIONS._migrations]


@pytest.fixture
def store(tmp_path: Path):
    with open_store(tmp_path / "enclave.db") as s:
        yield s


def test_a_new_database_gets_every_migration_wal_and_foreign_keys(store: Store) -> None:
    assert store.applied_migrations() == ALL
    db = store.read()
    assert {"conversations", "messages", "messages_fts", "conversations_fts", "settings"} <= set(db.table_names())
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert store.integrity_check() == ["ok"]


@pytest.mark.parametrize("stop_before", ALL[1:])
def test_upgrading_from_every_earlier_version_keeps_the_data(tmp_path: Path, stop_before: str) -> None:
    path = tmp_path / "enclave.db"
    old = Database(path)
    MIGRATIONS.apply(old, stop_before=stop_before)
    old.execute("INSERT INTO conversations (title, created_at, updated_at) VALUES ('kept', 'a', 'a')")
    old.execute("INSERT INTO messages (conversation_id, role, content, created_at, updated_at) "
                "VALUES (1, 'user', 'still here', 'a', 'a')")
    old.conn.commit()
    old.close()
    with open_store(path) as s:
        assert s.applied_migrations() == ALL
        repo = ConversationRepository(s)
        assert repo.get(1).title == "kept"
        assert [m.content for m in repo.messages(1)] == ["still here"]
        assert repo.search("still")[0].conversation_id == 1


def test_deleting_a_conversation_deletes_its_messages(store: Store) -> None:
    repo = ConversationRepository(store)
    c = repo.create(title="gone")
    repo.add_message(c.id, "user", "bye")
    repo.delete(c.id)
    assert store.read().execute("SELECT count(*) FROM messages").fetchone()[0] == 0
    assert repo.search("bye") == []


def test_a_damaged_file_is_refused_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "enclave.db"
    junk = b"this is not a database at all\n" * 100
    path.write_bytes(junk)
    with pytest.raises(StoreError) as info:
        open_store(path)
    assert str(path) in str(info.value) and "did not change it" in str(info.value)
    assert path.read_bytes() == junk


def test_a_damaged_sqlite_file_is_refused_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "enclave.db"
    with open_store(path) as s:
        ConversationRepository(s).create(title="x")
    data = bytearray(path.read_bytes())
    data[100:4096] = b"\xff" * (4096 - 100)  # wreck the schema page, keep the magic
    path.write_bytes(bytes(data))
    with pytest.raises(StoreError, match="cannot be used"):
        open_store(path)
    assert path.read_bytes() == bytes(data)


def test_someone_elses_sqlite_database_is_not_touched(tmp_path: Path) -> None:
    path = tmp_path / "enclave.db"
    other = Database(path)
    other["accounts"].insert({"name": "alice"})
    other.close()
    before = path.read_bytes()
    with pytest.raises(StoreError, match="not Enclave's"):
        open_store(path)
    assert path.read_bytes() == before


def test_a_second_instance_is_told_plainly(tmp_path: Path) -> None:
    path = tmp_path / "enclave.db"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pathlib import Path; from app.store import open_store;"
         f"s = open_store(Path({str(path)!r})); print('open', flush=True); sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "open"
        with pytest.raises(AnotherInstanceError) as info:
            open_store(path)
        assert f"process {holder.pid}" in str(info.value) and "already running" in str(info.value)
        with open_store(path, readonly=True) as reader:  # reading beside it is fine
            assert reader.integrity_check() == ["ok"]
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    with open_store(path) as again:  # and once it is gone, the folder is free
        assert again.applied_migrations() == ALL


def test_readers_do_not_wait_for_a_long_write(store: Store) -> None:
    repo = ConversationRepository(store)
    c = repo.create(title="before")
    inside, release = threading.Event(), threading.Event()

    def long_write() -> None:
        with store.write() as db:
            db.execute("UPDATE conversations SET title = 'during' WHERE id = ?", [c.id])
            inside.set()
            release.wait(30)

    writer = threading.Thread(target=long_write)
    writer.start()
    try:
        assert inside.wait(10)
        seen: list[str] = []
        reader = threading.Thread(target=lambda: seen.append(repo.get(c.id).title))
        reader.start()
        reader.join(10)
        assert seen == ["before"]  # the committed state, while the write is still open
    finally:
        release.set()
        writer.join()
    assert repo.get(c.id).title == "during"


NASTY = ['"', '""', "'", "*", "-", "-memory", "NEAR", "NEAR(a b)", "a NEAR b", "(", ")", "((a", "a OR", "AND",
         "NOT", "^", ":", "col:word", "memory*", '"unbalanced', "a AND (b", "{", "}", "+", "%", "\\", "",
         "   ", "🙂", "ü", '"quoted"', "word*", "(really)", "planner NEAR", "NOT planner"]
# What each query finds in the title "notes on memory" and the message below, read as plain words
# (punctuation is not part of a word); every other query finds nothing.
FOUND = {"-memory": {"title", "message"}, "memory*": {"title", "message"}, "NEAR": {"message"}, "((a": {"message"},
         '"quoted"': {"message"}, "word*": {"message"}, "(really)": {"message"}, "planner NEAR": {"message"}}


@pytest.mark.parametrize("query", NASTY)
def test_search_takes_fts_syntax_as_plain_words(store: Store, query: str) -> None:
    repo = ConversationRepository(store)
    c = repo.create(title="notes on memory")
    repo.add_message(c.id, "user", "the memory planner NEAR the GPU (really) - a \"quoted\" word*")
    found = {"title" if hit.message_id is None else "message" for hit in repo.search(query)}
    assert found == FOUND.get(query, set())


def test_search_finds_words_and_marks_them(store: Store) -> None:
    repo = ConversationRepository(store)
    c = repo.create(title="Expert offloading")
    repo.add_message(c.id, "user", "How much memory does the planner need?")
    repo.add_message(c.id, "assistant", "The planner keeps attention in VRAM.")
    hits = repo.search("planner")
    assert {h.message_id for h in hits if h.message_id} == {m.id for m in repo.messages(c.id)}
    assert all("[planner]" in h.snippet.lower() for h in hits)
    assert [h.snippet for h in repo.search("offloading")] == ["Expert [offloading]"]
    assert repo.search("NEAR (") == []


def test_a_megabyte_message_stores_and_searches(store: Store) -> None:
    repo = ConversationRepository(store)
    c = repo.create(title="big")
    text = ("lorem ipsum dolor " * 60_000) + " needle"
    assert len(text) > 1_000_000
    m = repo.add_message(c.id, "user", text)
    assert repo.message(m.id).content == text
    assert repo.search("needle")[0].message_id == m.id


def test_pages_of_a_long_history(store: Store) -> None:
    repo = ConversationRepository(store)
    c = repo.create(title="long")
    ids = [repo.add_message(c.id, "user" if i % 2 == 0 else "assistant", f"m{i}").id for i in range(30)]
    last = repo.messages(c.id, limit=10)
    assert [m.id for m in last] == ids[-10:]
    before = repo.messages(c.id, limit=10, before_id=last[0].id)
    assert [m.id for m in before] == ids[-20:-10]
    assert repo.message_ids(c.id) == ids


def test_background_tasks_do_not_open_a_connection_each(qapp, store: Store) -> None:
    """Qt's pool threads run each task with a fresh Python thread state; a reader connection
    kept in thread-local storage was opened again (and never closed) for every task. Counted
    as this process's open files of the database (each connection holds one), so work other
    tests left running in the process cannot move the figure."""
    from ui.tasks import TaskRunner

    def open_fds() -> int:
        links = []
        for fd in os.listdir("/proc/self/fd"):
            with contextlib.suppress(OSError):  # closed while listed
                links.append(os.readlink(f"/proc/self/fd/{fd}"))
        return sum(link.startswith(str(store.path)) for link in links)

    tasks = TaskRunner()
    counts: list[int] = []

    def read() -> None:
        counts.append(store.read().execute("SELECT count(*) FROM conversations").fetchone()[0])

    def until(n: int) -> None:
        # not tasks.wait(): QThreadPool.waitForDone retires the pool's threads, and the next task's new
        # thread may or may not get the old one's id; the test is about tasks on one living thread
        deadline = time.monotonic() + 30
        while len(counts) < n and time.monotonic() < deadline:
            time.sleep(0.01)

    for _ in range(3):
        tasks.run(read, serial=True)
    until(3)
    before = open_fds()
    assert before >= 1  # the writer and this thread's reader hold the file: the count sees connections
    for _ in range(30):
        tasks.run(read, serial=True)
    until(33)
    assert counts == [0] * 33
    assert open_fds() == before
    assert tasks.wait()


def test_replies_stored_before_drafting_read_as_nothing_drafted(tmp_path: Path) -> None:
    path = tmp_path / "enclave.db"
    old = Database(path)
    MIGRATIONS.apply(old, stop_before="0015_message_drafting")
    old.execute("INSERT INTO conversations (title, created_at, updated_at) VALUES ('old', 'a', 'a')")
    old.execute("INSERT INTO messages (conversation_id, role, content, completion_tokens, created_at, updated_at) "
                "VALUES (1, 'assistant', 'an old reply', 12, 'a', 'a')")
    old.conn.commit()
    old.close()
    with open_store(path) as s:
        columns = {c.name: c for c in s.read()["messages"].columns}
        assert columns["drafted_tokens"].type == columns["accepted_tokens"].type == "INTEGER"
        repo = ConversationRepository(s)
        reply = repo.messages(1)[0]
        assert (reply.completion_tokens, reply.drafted_tokens, reply.accepted_tokens) == (12, 0, 0)
        repo.update_message(reply.id, drafted_tokens=8, accepted_tokens=5)
        assert (repo.message(reply.id).drafted_tokens, repo.message(reply.id).accepted_tokens) == (8, 5)
