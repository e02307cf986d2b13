"""Folders that fight back: a link to the parent folder, a link to itself, a broken link, a
named pipe, a file and a folder the user may not read. Library adds, model folder imports and
model discovery finish, take in what is good, and (where they report) say why each of the rest
was left out. Unreadable means unreadable: see ``tests/unprivileged.py``."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.discovery import GPT4ALL, JAN, discover
from app.ingest import IngestReport, ingest
from app.libraries import LibraryRepository
from app.models import ModelRegistry
from app.store import open_store
from app.transfer import import_folder
from inference.errors import EnclaveError
from tests.unprivileged import as_unprivileged, shared_folder


@pytest.fixture
def work() -> Iterator[Path]:
    folder = shared_folder()
    yield folder
    for path in folder.rglob("*"):
        if path.is_dir() and not path.is_symlink():
            path.chmod(0o755)
    shutil.rmtree(folder)


def hostile(folder: Path, good: dict[str, bytes], suffix: str) -> Path:
    """``folder`` with the good files, and one of each kind of trouble named ``*suffix``."""
    folder.mkdir()
    for name, content in good.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(content)
    (folder / "up").symlink_to("..")  # a folder linked to its parent
    (folder / f"self{suffix}").symlink_to(f"self{suffix}")  # a link to itself
    (folder / f"gone{suffix}").symlink_to(f"nowhere{suffix}")  # a broken link
    os.mkfifo(folder / f"pipe{suffix}")  # opening it would block for ever
    secret = folder / f"secret{suffix}"
    secret.write_bytes(next(iter(good.values())))
    secret.chmod(0)
    locked = folder / "locked"
    locked.mkdir()
    (locked / f"inside{suffix}").write_bytes(next(iter(good.values())))
    locked.chmod(0)
    return folder


def reasons(report: IngestReport, root: Path) -> dict[str, tuple[str, str]]:
    return {Path(path).relative_to(root).as_posix(): (reason, message) for path, reason, message in report.failed}


def test_a_library_add_skips_each_trouble_with_its_reason(work: Path) -> None:
    good = {"notes.txt": b"plain words about herons", "deeper/more.md": b"# More\n\nabout rivers"}
    clean = work / "clean"
    clean.mkdir()
    (clean / "warm.txt").write_text("loads the modules the child needs")
    docs = hostile(work / "docs", good, ".txt")

    def add(folder: Path, database: Path) -> IngestReport:
        with open_store(database) as store:
            repo = LibraryRepository(store)
            return ingest(repo, repo.create("hostile"), [folder])

    assert add(clean, work / "warm" / "enclave.db").added  # as root: the child then has every module it needs
    report = as_unprivileged(lambda: add(docs, work / "db" / "enclave.db"))

    assert sorted(Path(p).relative_to(docs).as_posix() for p in report.added) == ["deeper/more.md", "notes.txt"]
    failed = reasons(report, docs)
    assert failed["secret.txt"] == ("unreadable", f"{docs / 'secret.txt'}: cannot be read (Permission denied).")
    assert failed["locked"][0] == "unreadable"
    assert "this folder cannot be read (Permission denied)" in failed["locked"][1]
    assert "this link loops back on itself" in failed["self.txt"][1]
    assert "this link points to something that is not there" in failed["gone.txt"][1]
    assert "not a regular file (a device, pipe or socket)" in failed["pipe.txt"][1]
    assert len(failed) == 5
    assert (str(docs / "up"), "a link to a folder (not followed)") in report.skipped
    with open_store(work / "db" / "enclave.db") as store:  # recorded, with the reason, for the library page
        repo = LibraryRepository(store)
        stored = {Path(d.path).name: d.error_reason for d in repo.documents(repo.find("hostile").id)}
    assert stored == {"more.md": None, "notes.txt": None, "secret.txt": "unreadable", "locked": "unreadable",
                      "self.txt": "unreadable", "gone.txt": "unreadable", "pipe.txt": "unreadable"}


def test_a_model_folder_import_refuses_each_trouble_with_its_reason(work: Path, dense_model: Path) -> None:
    folder = hostile(work / "models", {"tiny.gguf": dense_model.read_bytes()}, ".gguf")
    warm = work / "warm"
    warm.mkdir()
    shutil.copy(dense_model, warm / "warm.gguf")

    def import_all(source: Path, database: Path = work / "db" / "enclave.db") -> tuple[list[str], dict[str, str]]:
        with open_store(database) as store:
            report = import_folder(ModelRegistry(store, work / "store"), source, "in_place")
        return [m.name for m in report.imported], {Path(f).name: why for f, why in report.refused}

    assert import_all(warm, work / "warm" / "enclave.db")[0] == ["tiny-dense"]
    imported, refused = as_unprivileged(lambda: import_all(folder))
    assert imported == ["tiny-dense"]
    assert "Permission denied" in refused["secret.gguf"]
    assert "not a regular file" in refused["pipe.gguf"]
    assert "points to a file that is not there, or loops back on itself" in refused["self.gguf"]
    assert "points to a file that is not there" in refused["gone.gguf"]
    assert len(refused) == 4

    def import_locked() -> str:
        try:
            import_all(folder / "locked")
        except EnclaveError as error:
            return str(error)
        return "imported"

    assert as_unprivileged(import_locked) == f"{folder / 'locked'}: this folder cannot be read (Permission denied)."


def test_discovery_finishes_and_finds_only_the_real_model(work: Path, dense_model: Path) -> None:
    jan = hostile(work / "jan", {"tiny/model.gguf": dense_model.read_bytes()}, ".gguf")
    (jan / "tiny" / "back").symlink_to("../..")  # a deeper loop, two levels up
    (jan / "tiny" / "again").symlink_to(".")
    gpt4all = hostile(work / "gpt4all", {"tiny.gguf": dense_model.read_bytes()}, ".gguf")

    def names() -> list[tuple[str, str]]:
        return [(model.app, model.name) for model in discover({JAN: [jan], GPT4ALL: [gpt4all, jan / "locked"]})]

    assert as_unprivileged(names) == [(GPT4ALL, "tiny"), (JAN, "tiny")]
