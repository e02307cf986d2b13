"""The app database's schema, as migrations applied in order, once each.

Each migration is a function registered on ``MIGRATIONS``; sqlite-utils records it in
``_sqlite_migrations`` and runs it in a transaction with that record. Never edit a
migration that has shipped: add a new one. Later features (libraries, models) add their
tables here as further migrations.
"""

from __future__ import annotations

from sqlite_utils import Database, Migrations

MIGRATIONS = Migrations("enclave")


@MIGRATIONS(name="0001_conversations")
def conversations(db: Database) -> None:
    db.execute("""
        CREATE TABLE conversations (
            id INTEGER PRIMARY KEY,
            title TEXT NOT NULL DEFAULT '',
            model TEXT,
            library_id INTEGER,
            system_prompt TEXT NOT NULL DEFAULT '',
            sampling TEXT NOT NULL DEFAULT '{}',
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL
        )""")
    db.execute("""
        CREATE TABLE messages (
            id INTEGER PRIMARY KEY,
            conversation_id INTEGER NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
            role TEXT NOT NULL CHECK (role IN ('system', 'user', 'assistant')),
            content TEXT NOT NULL DEFAULT '',
            reasoning TEXT NOT NULL DEFAULT '',
            status TEXT NOT NULL DEFAULT 'complete' CHECK (status IN ('complete', 'partial', 'error')),
            error TEXT,
            stop_reason TEXT,
            prompt_tokens INTEGER,
            completion_tokens INTEGER,
            cached_tokens INTEGER,
            prompt_seconds REAL,
            generation_seconds REAL,
            reasoning_seconds REAL,
            model TEXT,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL
        )""")
    db.execute("CREATE INDEX messages_by_conversation ON messages (conversation_id, id)")
    db.execute("CREATE INDEX conversations_by_update ON conversations (updated_at DESC)")
    db["messages"].enable_fts(["content"], fts_version="FTS5", create_triggers=True, tokenize="unicode61")
    db["conversations"].enable_fts(["title"], fts_version="FTS5", create_triggers=True, tokenize="unicode61")


@MIGRATIONS(name="0002_settings")
def settings(db: Database) -> None:
    db.execute("CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
