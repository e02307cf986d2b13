"""Libraries: ingesting folders (bad input included), and whole-library prompts."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from app.extract import Limits
from app.ingest import ingest
from app.libraries import LibraryRepository
from app.prompting import LibraryPromptBuilder, rank
from app.store import Store, open_store
from tests import docs_samples as samples
from tests.test_library_transcription import picture


@pytest.fixture
def store(tmp_path: Path):
    with open_store(tmp_path / "db" / "enclave.db") as s:
        yield s


@pytest.fixture
def repo(store: Store) -> LibraryRepository:
    return LibraryRepository(store)


def mixed_folder(root: Path) -> Path:
    (root / "notes").mkdir(parents=True)
    (root / "notes" / "memo.txt").write_text("The memory planner keeps attention in VRAM.\n", encoding="utf-8")
    (root / "notes" / "latin1.txt").write_bytes("Café menu: crème brûlée and more text here.".encode("cp1252"))
    (root / "readme.md").write_text("# Enclave\n\nRuns models offline.\n")
    (root / "code.py").write_text("def answer():\n    return 42\n")
    (root / "page.html").write_text("<html><head><title>Web</title><script>x()</script></head>"
                                    "<body><h1>Hello</h1><p>Visible words.</p></body></html>")
    (root / "table.csv").write_text("name,qty\napples,3\npears,5\n")
    (root / "data.json").write_text('{"k": [1, 2, 3]}')
    samples.write_pdf(root / "report.pdf")
    samples.write_docx(root / "letter.docx")
    samples.write_pptx(root / "slides.pptx")
    samples.write_xlsx(root / "sheet.xlsx")
    samples.write_eml_plain(root / "mail.eml")
    (root / ".hidden.txt").write_text("secret")
    (root / ".git").mkdir()
    (root / ".git" / "config.txt").write_text("ignored")
    (root / "image.png").write_bytes(picture((230, 230, 230)))
    return root


def test_a_mixed_folder_goes_in(repo: LibraryRepository, tmp_path: Path) -> None:
    lib = repo.create("mixed")
    report = ingest(repo, lib, [mixed_folder(tmp_path / "docs")])
    # an image is a document only a vision model can read: without one it is recorded as unread, saying so
    assert [(Path(p).name, r) for p, r, _ in report.failed] == [("image.png", "no_text")], report.failed
    assert len(report.added) == 12
    kinds = {d.kind for d in repo.documents(lib.id) if d.ok}
    assert kinds == {"text", "markdown", "code", "html", "csv", "json", "pdf", "docx", "pptx", "xlsx", "email"}
    skipped = dict(report.skipped)
    assert any(p.endswith(".hidden.txt") for p in skipped) and not any(p.endswith("image.png") for p in skipped)
    assert not any(".git" in d.path for d in repo.documents(lib.id))
    pdf = next(d for d in repo.documents(lib.id) if d.kind == "pdf")
    content = repo.content(pdf.sha256 or "")
    assert len(content.pages) == 3 and "bravo bananas" in content.text
    assert "Café" in repo.content(next(d for d in repo.documents(lib.id) if "latin1" in d.path).sha256 or "").text
    assert repo.store.read().execute("SELECT count(*) FROM contents_fts WHERE contents_fts MATCH 'bananas'"
                                     ).fetchone()[0] == 1


def test_include_and_exclude_globs(repo: LibraryRepository, tmp_path: Path) -> None:
    lib = repo.create("globs")
    report = ingest(repo, lib, [mixed_folder(tmp_path / "docs")], include=("*.txt", "*.md"), exclude=("notes/l*",))
    assert sorted(Path(p).name for p in report.added) == ["memo.txt", "readme.md"]


def test_identical_content_is_stored_once_and_changes_update(repo: LibraryRepository, tmp_path: Path) -> None:
    lib = repo.create("dups")
    (tmp_path / "a.txt").write_text("same words")
    (tmp_path / "b.txt").write_text("same words")
    ingest(repo, lib, [tmp_path / "a.txt", tmp_path / "b.txt"])
    db = repo.store.read()
    assert db.execute("SELECT count(*) FROM contents").fetchone()[0] == 1
    again = ingest(repo, lib, [tmp_path / "a.txt"])
    assert again.unchanged == [str(tmp_path / "a.txt")]
    (tmp_path / "a.txt").write_text("new words now")
    changed = ingest(repo, lib, [tmp_path / "a.txt"])
    assert changed.updated == [str(tmp_path / "a.txt")]
    assert db.execute("SELECT count(*) FROM contents").fetchone()[0] == 2
    (tmp_path / "b.txt").write_text("new words now")
    ingest(repo, lib, [tmp_path / "b.txt"])
    assert db.execute("SELECT count(*) FROM contents").fetchone()[0] == 1  # the old text is gone with its last user


def test_bad_input_never_stops_an_ingest(repo: LibraryRepository, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "bad"
    root.mkdir()
    (root / "good.txt").write_text("A perfectly good document about apples.")
    samples.write_encrypted_pdf(root / "locked.pdf", "hunter2")
    (root / "corrupt.pdf").write_bytes(samples.pdf_bytes()[:300])
    samples.write_pdf(root / "scanned.pdf", pages=("",))
    samples.write_streamed_zip_bomb(root / "bomb.docx", megabytes=300)
    (root / "binary.txt").write_bytes(os.urandom(4096))
    (root / "vanishing.txt").write_text("here a moment")
    (root / "unreadable.txt").write_text("no access")
    with (root / "huge.log").open("wb") as f:  # 200 MB, sparse: no disk used
        f.truncate(200 * 2**20)
    (root / "good2.md").write_text("# Also fine\n\nPears.")

    real_open = Path.open

    def fake_open(self: Path, *args: object, **kwargs: object):
        if self.name == "unreadable.txt":
            raise PermissionError(13, "Permission denied")
        if self.name == "vanishing.txt":
            self.unlink(missing_ok=True)
            raise FileNotFoundError(2, "No such file")
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(Path, "open", fake_open)
    lib = repo.create("bad")
    report = ingest(repo, lib, [root], limits=Limits(max_file_bytes=50 * 2**20))
    reasons = {Path(p).name: reason for p, reason, _ in report.failed}
    assert reasons == {"locked.pdf": "encrypted", "corrupt.pdf": "corrupt", "scanned.pdf": "no_text",
                       "bomb.docx": "zip_bomb", "binary.txt": "binary", "vanishing.txt": "vanished",
                       "unreadable.txt": "unreadable", "huge.log": "too_large"}
    assert sorted(Path(p).name for p in report.added) == ["good.txt", "good2.md"]
    messages = {Path(p).name: m for p, _, m in report.failed}
    assert "password" in messages["locked.pdf"] and "max_document_mb" in messages["huge.log"]
    stored = {Path(d.path).name: d for d in repo.documents(lib.id)}
    assert stored["bomb.docx"].error_reason == "zip_bomb" and stored["good.txt"].ok
    assert repo.store.integrity_check() == ["ok"]


def test_a_file_that_breaks_later_keeps_its_text(repo: LibraryRepository, tmp_path: Path) -> None:
    lib = repo.create("keep")
    path = tmp_path / "doc.txt"
    path.write_text("the original text")
    ingest(repo, lib, [path])
    path.write_bytes(os.urandom(2048))  # now it is garbage
    report = ingest(repo, lib, [path])
    assert report.failed and report.failed[0][1] == "binary"
    doc = repo.documents(lib.id)[0]
    assert doc.sha256 and repo.content(doc.sha256).text == "the original text"


def test_cancelling_leaves_whole_documents_only(repo: LibraryRepository, tmp_path: Path) -> None:
    folder = tmp_path / "ten"
    folder.mkdir()
    for i in range(10):
        (folder / f"{i:02}.txt").write_text(f"document number {i}")
    lib = repo.create("cancel")
    seen = []
    report = ingest(repo, lib, [folder], on_progress=seen.append, cancelled=lambda: len(seen) >= 4)
    assert report.cancelled and len(report.added) == 4
    docs = repo.documents(lib.id)
    assert len(docs) == 4 and all(d.ok for d in docs)
    assert [p.files_done for p in seen[:4]] == [0, 1, 2, 3] and seen[0].files_total == 10
    assert repo.store.read().execute("SELECT count(*) FROM contents").fetchone()[0] == 4


# Prompts ------------------------------------------------------------------------------


def words(texts: list[str]) -> list[int]:
    """A stand-in tokenizer: one token per word-ish piece."""
    return [len(re.findall(r"\w+|[^\w\s]", t)) for t in texts]


def library_with(repo: LibraryRepository, tmp_path: Path, docs: dict[str, str]) -> int:
    lib = repo.create("lib")
    for name, text in docs.items():
        (tmp_path / name).write_text(text)
    ingest(repo, lib, [tmp_path / name for name in docs])
    return lib.id


def test_the_whole_library_goes_in_once_in_a_stable_order(repo: LibraryRepository, tmp_path: Path) -> None:
    lib = library_with(repo, tmp_path, {"b.txt": "bananas are yellow", "a.txt": "apples are red",
                                        "c.txt": "cherries are dark", "copy.txt": "apples are red"})
    builder = LibraryPromptBuilder(repo, words, "test-tokenizer")
    first = builder.build(repo.get(lib), 10_000, "what colour are apples?")
    again = builder.build(repo.get(lib), 10_000, "something else entirely")
    assert first.complete and first.system_text == again.system_text  # the same prefix for every question
    ids = re.findall(r'<document id="(\d+)"', first.system_text)
    assert ids == ["1", "2", "3"]  # the order they were added; the identical copy only once
    for text in ("bananas are yellow", "apples are red", "cherries are dark"):
        assert first.system_text.count(text) == 1
    assert "[doc N, p. M]" in first.system_text
    assert first.library_tokens == first.included_tokens == sum(u.tokens for u in first.units)
    # counts were cached per tokenizer: a second build counts only the frames
    calls: list[int] = []
    counting = LibraryPromptBuilder(repo, lambda ts: calls.append(len(ts)) or words(ts), "test-tokenizer")
    counting.build(repo.get(lib), 10_000, "q")
    assert sorted(calls) == [1, 3]  # the instruction; the three documents' delimiters in one call


def test_page_markers_and_citations_for_pdfs(repo: LibraryRepository, tmp_path: Path) -> None:
    lib = repo.create("pdfs")
    ingest(repo, lib, [samples.write_pdf(tmp_path / "r.pdf")])
    built = LibraryPromptBuilder(repo, words, "t").build(repo.get(lib.id), 10_000, "q")
    text = built.system_text
    assert text.index("[page 1]") < text.index("alpha apples") < text.index("[page 2]") < text.index("bravo")
    assert text.index("[page 3]") < text.index("charlie cherries")


def test_over_budget_the_most_relevant_documents_fill_it(repo: LibraryRepository, tmp_path: Path) -> None:
    filler = " ".join(["lorem ipsum dolor sit amet"] * 40)
    docs = {f"{i:02}.txt": f"{filler} topic{i}" for i in range(10)}
    docs["07.txt"] = f"{filler} the kiwi harvest report kiwi kiwi"
    docs["03.txt"] = f"{filler} a kiwi mention"
    lib = library_with(repo, tmp_path, docs)
    builder = LibraryPromptBuilder(repo, words, "t")
    whole = builder.build(repo.get(lib), 100_000, "q").library_tokens
    budget = whole // 3
    built = builder.build(repo.get(lib), budget, "Tell me about the kiwi harvest")
    assert not built.complete and built.included_tokens <= budget
    included = [u.document.path for u in built.units]
    assert included[:1] != [] and any(p.endswith("07.txt") for p in included)
    assert any(p.endswith("03.txt") for p in included)
    assert included == sorted(included, key=lambda p: next(d.id for d in repo.documents(lib) if d.path == p))
    note = built.note(4096, 20480)
    assert f"included {len(included)} of 10 documents" in note and "Left out:" in note
    assert "needs a context of about 20,480 tokens" in note


def test_a_very_long_document_competes_by_sections(repo: LibraryRepository, tmp_path: Path) -> None:
    parts = [" ".join(["filler words"] * 400) + f" section{i}\n" for i in range(12)]
    parts[9] = parts[9].replace("section9", "the zebra section")
    lib = library_with(repo, tmp_path, {"long.txt": "".join(parts), "short.txt": "a short note"})
    builder = LibraryPromptBuilder(repo, words, "t")
    whole = builder.build(repo.get(lib), 10**6, "q").library_tokens
    built = builder.build(repo.get(lib), whole // 4, "zebra")
    assert "zebra" in built.system_text and 'section="' in built.system_text
    assert [d.path for d in built.partial] == [str(tmp_path / "long.txt")]


def test_bm25_ranks_by_relevance() -> None:
    texts = ["nothing here", "kiwi once", "kiwi kiwi kiwi harvest", "harvest moon"]
    order = rank("kiwi harvest", texts)
    assert order[0] == 2 and order[-1] == 0
    assert rank("", texts) == [0, 1, 2, 3]
