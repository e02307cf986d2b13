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


@MIGRATIONS(name="0003_libraries")
def libraries(db: Database) -> None:
    db.execute("""
        CREATE TABLE libraries (
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL UNIQUE COLLATE NOCASE,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL
        )""")
    # Extracted text, stored once per distinct file content (SHA-256 of the file's bytes).
    db.execute("""
        CREATE TABLE contents (
            sha256 TEXT PRIMARY KEY,
            text TEXT NOT NULL,
            pages TEXT NOT NULL DEFAULT '[]',
            kind TEXT NOT NULL,
            title TEXT NOT NULL DEFAULT '',
            warnings TEXT NOT NULL DEFAULT '[]'
        )""")
    db.execute("""
        CREATE TABLE documents (
            id INTEGER PRIMARY KEY,
            library_id INTEGER NOT NULL REFERENCES libraries(id) ON DELETE CASCADE,
            path TEXT NOT NULL,
            title TEXT NOT NULL DEFAULT '',
            kind TEXT,
            size INTEGER NOT NULL DEFAULT 0,
            mtime REAL,
            sha256 TEXT REFERENCES contents(sha256),
            error TEXT,
            error_reason TEXT,
            added_at TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            UNIQUE (library_id, path)
        )""")
    db.execute("CREATE INDEX documents_by_content ON documents (sha256)")
    db.execute("""
        CREATE TABLE token_counts (
            sha256 TEXT NOT NULL REFERENCES contents(sha256) ON DELETE CASCADE,
            tokenizer TEXT NOT NULL,
            tokens INTEGER NOT NULL,
            PRIMARY KEY (sha256, tokenizer)
        )""")
    db.execute("""
        CREATE TABLE kv_cache (
            key TEXT PRIMARY KEY,
            path TEXT NOT NULL,
            library_id INTEGER REFERENCES libraries(id) ON DELETE SET NULL,
            model TEXT NOT NULL,
            tokens INTEGER NOT NULL,
            bytes INTEGER NOT NULL,
            created_at TEXT NOT NULL,
            last_used_at TEXT NOT NULL
        )""")
    db.execute("ALTER TABLE messages ADD COLUMN context_note TEXT")
    db["contents"].enable_fts(["text"], fts_version="FTS5", create_triggers=True, tokenize="unicode61")


@MIGRATIONS(name="0004_models")
def models(db: Database) -> None:
    db.execute("""
        CREATE TABLE models (
            id TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            origin TEXT NOT NULL CHECK (origin IN ('copied', 'linked', 'in_place', 'downloaded', 'discovered')),
            source TEXT NOT NULL DEFAULT '{}',
            architecture TEXT,
            parameters INTEGER,
            experts INTEGER,
            experts_used INTEGER,
            quantization TEXT,
            context_length INTEGER,
            license TEXT,
            size INTEGER NOT NULL,
            info TEXT NOT NULL DEFAULT '{}',
            added_at TEXT NOT NULL,
            verified_at TEXT
        )""")
    db.execute("""
        CREATE TABLE model_files (
            model_id TEXT NOT NULL REFERENCES models(id) ON DELETE CASCADE,
            position INTEGER NOT NULL,
            path TEXT NOT NULL,
            size INTEGER NOT NULL,
            sha256 TEXT NOT NULL,
            PRIMARY KEY (model_id, position)
        )""")
    db.execute("CREATE INDEX model_files_by_hash ON model_files (sha256)")


@MIGRATIONS(name="0005_kv_cache_scope")
def kv_cache_scope(db: Database) -> None:
    # What a saved prefix belongs to (library, model weights, cache settings, system prompt):
    # a newer state of the same scope makes the older one stale.
    db.execute("ALTER TABLE kv_cache ADD COLUMN scope TEXT NOT NULL DEFAULT ''")


@MIGRATIONS(name="0006_contents_chars")
def contents_chars(db: Database) -> None:
    # Each stored text's length in characters, kept beside it: a library's size is then a sum
    # of integers, not a read of every text (the policy's size limit asks for it on every add).
    db.execute("ALTER TABLE contents ADD COLUMN chars INTEGER NOT NULL DEFAULT 0")
    db.execute("UPDATE contents SET chars = length(text)")


@MIGRATIONS(name="0007_model_profiles")
def model_profiles(db: Database) -> None:
    # One saved configuration per model (app/profiles.py), keyed by the registered model's id,
    # or by the file's absolute path for a model used without registering it.
    db.execute("""
        CREATE TABLE model_profiles (
            model TEXT PRIMARY KEY,
            profile TEXT NOT NULL DEFAULT '{}',
            updated_at TEXT NOT NULL
        )""")


@MIGRATIONS(name="0008_kv_cache_version")
def kv_cache_version(db: Database) -> None:
    # The library's documents a saved prefix was made from (``LibraryRepository.version``):
    # a library is warm for a model when a saved prefix of its scope has the library's
    # current version, which can be told without loading the model.
    db.execute("ALTER TABLE kv_cache ADD COLUMN version TEXT NOT NULL DEFAULT ''")


@MIGRATIONS(name="0009_kv_blocks")
def kv_blocks(db: Database) -> None:
    # A library document's KV cache encoded alone (a block, ``kind = 'block'``) lives in the
    # same size-capped cache as whole prefixes. Which block holds which document of a library,
    # for a model and system prompt (the prefix scope), is in ``kv_block_uses``: a library is
    # warm when each of its documents, as it is now (``document_version``), has a block there.
    db.execute("ALTER TABLE kv_cache ADD COLUMN kind TEXT NOT NULL DEFAULT 'prefix'")
    db.execute("""
        CREATE TABLE kv_block_uses (
            scope TEXT NOT NULL,
            document TEXT NOT NULL,
            key TEXT NOT NULL REFERENCES kv_cache(key) ON DELETE CASCADE,
            PRIMARY KEY (scope, document)
        )""")
    db.execute("CREATE INDEX kv_block_uses_by_key ON kv_block_uses (key)")


@MIGRATIONS(name="0010_message_sources")
def message_sources(db: Database) -> None:
    # What a library answer was given (documents, passages of long ones) and what was left out,
    # as JSON (``conversations.sources_json``): listed under the answer, each opening the passage.
    db.execute("ALTER TABLE messages ADD COLUMN sources TEXT NOT NULL DEFAULT '[]'")


@MIGRATIONS(name="0011_message_alternatives")
def message_alternatives(db: Database) -> None:
    # Regenerate keeps earlier replies: the replies to one user message are alternatives, a group
    # named by its first reply (``alternative_of``: that reply's id; NULL on the first itself and
    # on every other message). One of a group is ``shown``: the conversation as listed and as
    # the model reads it holds only shown messages; the choice is the user's and is kept.
    db.execute("ALTER TABLE messages ADD COLUMN alternative_of INTEGER")
    db.execute("ALTER TABLE messages ADD COLUMN shown INTEGER NOT NULL DEFAULT 1")
    db.execute("CREATE INDEX messages_by_alternative_of ON messages (alternative_of) "
               "WHERE alternative_of IS NOT NULL")


@MIGRATIONS(name="0012_hosts")
def hosts(db: Database) -> None:
    # RPC hosts (``enclave host`` on another machine) whose devices the planner may use, by
    # "address:port"; ``memory_limit``: bytes of each of its devices Enclave may fill (NULL: all free).
    db.execute("""
        CREATE TABLE hosts (
            endpoint TEXT PRIMARY KEY,
            memory_limit INTEGER,
            added_at TEXT NOT NULL
        )""")


@MIGRATIONS(name="0013_api_keys")
def api_keys(db: Database) -> None:
    # Keys for ``enclave serve`` (``app.api_keys``): never the secret, only its SHA-256 (``hash``)
    # and a short prefix to tell keys apart. A revoked key keeps its row (and name), so audit
    # records naming it stay unambiguous; ``last_used_at`` is written at most once a minute.
    db.execute("""
        CREATE TABLE api_keys (
            name TEXT PRIMARY KEY,
            prefix TEXT NOT NULL,
            hash TEXT NOT NULL UNIQUE,
            created_at TEXT NOT NULL,
            last_used_at TEXT,
            revoked_at TEXT
        )""")
    db.execute("CREATE INDEX api_keys_by_prefix ON api_keys (prefix)")


@MIGRATIONS(name="0014_remote_models")
def remote_models(db: Database) -> None:
    # Models served elsewhere (an OpenAI-compatible /v1: another Enclave, llama-server, vLLM), by
    # the name a user gave them (``app.remote_models``). Never the API key: ``key_env`` names the
    # environment variable that holds it, read at each request. ``context_length``: what the server
    # said (``context_source`` = "server"), or what the user gave / the default ("given", "default").
    db.execute("""
        CREATE TABLE remote_models (
            name TEXT PRIMARY KEY,
            url TEXT NOT NULL,
            model_id TEXT NOT NULL,
            key_env TEXT,
            context_length INTEGER NOT NULL,
            context_source TEXT NOT NULL,
            added_at TEXT NOT NULL
        )""")


@MIGRATIONS(name="0015_message_drafting")
def message_drafting(db: Database) -> None:
    # Speculative decoding: a reply's tokens proposed by drafting (from the prompt, or a draft
    # model) and checked in one batch, and how many of them the model accepted; 0 on replies
    # written before (or without) drafting.
    db.execute("ALTER TABLE messages ADD COLUMN drafted_tokens INTEGER NOT NULL DEFAULT 0")
    db.execute("ALTER TABLE messages ADD COLUMN accepted_tokens INTEGER NOT NULL DEFAULT 0")


@MIGRATIONS(name="0016_images")
def images(db: Database) -> None:
    # Vision models (issue 20). ``images``: each image once, by the SHA-256 of the PNG Enclave
    # re-encoded it as (app/images.py; the user's file is never kept as given), in the database so
    # an encrypted database covers it too. ``message_images``: which images a message shows the
    # model, in order, with the name the user's file had. ``model_files.role``: 'model' (the
    # weights, in shards) or 'projector' (a vision model's mmproj file). ``libraries.vision_model``:
    # the model that transcribes a library's scanned pages and images while they are added.
    db.execute("""
        CREATE TABLE images (
            sha256 TEXT PRIMARY KEY,
            png BLOB NOT NULL,
            width INTEGER NOT NULL,
            height INTEGER NOT NULL,
            added_at TEXT NOT NULL
        )""")
    db.execute("""
        CREATE TABLE message_images (
            message_id INTEGER NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
            position INTEGER NOT NULL,
            sha256 TEXT NOT NULL REFERENCES images(sha256),
            name TEXT NOT NULL DEFAULT '',
            PRIMARY KEY (message_id, position)
        )""")
    db.execute("CREATE INDEX message_images_by_image ON message_images (sha256)")
    db.execute("ALTER TABLE model_files ADD COLUMN role TEXT NOT NULL DEFAULT 'model'")
    db.execute("ALTER TABLE libraries ADD COLUMN vision_model TEXT")


@MIGRATIONS(name="0017_transcriptions")
def transcriptions(db: Database) -> None:
    # Scanned pages and images read by a library's vision model (app/transcription.py): which model
    # wrote a content's text for which pages (JSON list, 1-based), so the user knows which text a
    # model read from a picture rather than from the file's own text layer. NULL: none was.
    db.execute("ALTER TABLE contents ADD COLUMN transcribed_by TEXT")
    db.execute("ALTER TABLE contents ADD COLUMN transcribed_pages TEXT NOT NULL DEFAULT '[]'")
