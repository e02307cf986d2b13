"""The kill and soak proofs in small (``make kill-test`` and ``make soak-test`` run them in
full): the machinery runs, its checks hold, and the checks can fail."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from tests.proofs.kill_reply import Row, lost, unmarked
from tests.proofs.kills import prove
from tests.proofs.probes import database_problems
from tests.proofs.soak import soak


@pytest.mark.slow
@pytest.mark.parametrize("scenario", ["reply", "ingest", "download", "worker"])
def test_every_kill_is_survived(scenario: str, tmp_path: Path, moe_model: Path) -> None:
    tally = prove(scenario, kills=3, seed=7, work=tmp_path, model=moe_model, quick=True)
    assert tally.kills == 3 and tally.ok, tally.report()


@pytest.mark.slow
def test_a_short_soak_leaks_nothing(qapp, tmp_path: Path, moe_model: Path) -> None:
    result = soak(tmp_path / "home", moe_model, replies=30, cycles=5, warm_up=5)
    assert result.complete == 35
    assert not result.problems(), result.report()


def test_the_checks_see_lost_and_shortened_messages() -> None:
    seen = {1: Row(1, 1, "user", "hello", "complete", None), 2: Row(2, 1, "assistant", "the ans", "partial", None)}
    assert lost(seen, {**seen, 2: seen[2]._replace(content="the answer")}) == []
    assert lost(seen, {2: seen[2]}) == ["user message 1, committed before the kill, is gone"]
    assert lost(seen, {**seen, 2: seen[2]._replace(content="the")}) == \
        ["the partial reply 2 lost text it had before the kill"]
    assert unmarked({3: Row(3, 1, "assistant", "", "error", "crashed")}) == ["reply 3 is marked 'error' (crashed)"]


def test_the_checks_see_a_damaged_database(tmp_path: Path) -> None:
    database = tmp_path / "enclave.db"
    conn = sqlite3.connect(database)
    conn.executescript("CREATE TABLE _sqlite_migrations (name TEXT); CREATE TABLE t (x INTEGER);"
                       "INSERT INTO t VALUES (1);")
    conn.close()
    with database.open("r+b") as f:  # a page of the table overwritten
        f.seek(4096 + 100)
        f.write(b"\xff" * 200)
    problems = database_problems(database)
    assert problems and ("integrity_check" in problems[0] or "cannot be opened" in problems[0])
