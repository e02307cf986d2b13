"""One path per operation: the same operation done from the terminal (``enclave`` as a
process) and from the window (the real pages, pytest-qt), each in a data folder of its own,
leaves the same rows in the database."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pytestqt.qtbot import QtBot

from app.paths import AppPaths
from app.services import Services
from app.store import open_store
from tests.cli import enclave
from tests.docs_samples import write_pdf
from ui.libraries_page import LibrariesPage
from ui.models_page import ModelsPage
from ui.tasks import TaskRunner

BINARY = bytes(range(256)) * 8  # not text, whatever its name says

MODEL_COLUMNS = ("id, name, origin, source, architecture, parameters, experts, experts_used, quantization, "
                 "context_length, license, size, info")
DOCUMENT_COLUMNS = "d.path, d.title, d.kind, d.size, d.sha256, d.error, d.error_reason"


def run(home: Path, *args: str) -> str:
    result = enclave(*args, home=home)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def query(store_of: Any, home: Path, sql: str) -> list[dict[str, Any]]:
    """Rows as plain values, with ``home`` (where each front end keeps its data) written HOME."""
    def plain(value: Any) -> Any:
        return value.replace(str(home), "HOME") if isinstance(value, str) else value
    return [{k: plain(v) for k, v in row.items()} for row in store_of.read().query(sql)]


def cli_rows(home: Path, sql: str) -> list[dict[str, Any]]:
    store = open_store(AppPaths.under(home).database, readonly=True)
    try:
        return query(store, home, sql)
    finally:
        store.close()


def default_model_of(home: Path) -> object:
    [row] = cli_rows(home, "SELECT value FROM settings WHERE key = 'default_model'")
    return json.loads(row["value"])


@pytest.fixture
def cli_home(tmp_path: Path) -> Path:
    return tmp_path / "cli-home"


@pytest.fixture
def tasks() -> TaskRunner:
    return TaskRunner(synchronous=True)


@pytest.fixture
def models_page(qtbot: QtBot, services: Services, tasks: TaskRunner) -> ModelsPage:
    page = ModelsPage(services, tasks)
    qtbot.addWidget(page)
    return page


@pytest.fixture
def libraries_page(qtbot: QtBot, services: Services, tasks: TaskRunner) -> LibrariesPage:
    page = LibrariesPage(services, tasks)
    page.default_name = "Docs"
    page.progress_interval = 0
    qtbot.addWidget(page)
    return page


def test_model_import_export_and_removal(models_page: ModelsPage, services: Services, enclave_home: Path,
                                         cli_home: Path, moe_model: Path, dense_model: Path, tmp_path: Path) -> None:
    gui_home = enclave_home

    run(cli_home, "models", "import", str(moe_model), "--in-place")
    run(cli_home, "models", "import", str(dense_model), "--copy")
    models_page.import_paths([moe_model], mode="in_place")
    models_page.import_paths([dense_model], mode="copy")

    models_sql = f"SELECT {MODEL_COLUMNS} FROM models ORDER BY id"
    files_sql = "SELECT model_id, position, path, size, sha256 FROM model_files ORDER BY model_id, position"
    gui_models = query(services.store, gui_home, models_sql)
    assert {m["name"]: m["origin"] for m in gui_models} == {"tiny-moe": "in_place", "tiny-dense": "copied"}
    assert cli_rows(cli_home, models_sql) == gui_models
    gui_files = query(services.store, gui_home, files_sql)
    assert {f["path"] for f in gui_files} == {str(moe_model), f"HOME/data/models/tiny-dense/{dense_model.name}"}
    assert cli_rows(cli_home, files_sql) == gui_files
    moe_id, dense_id = (next(m["id"] for m in gui_models if m["name"] == name) for name in ("tiny-moe", "tiny-dense"))

    run(cli_home, "models", "export", moe_id, str(tmp_path / "cli-stick"))
    models_page.export(moe_id, tmp_path / "gui-stick")
    manifests = [json.loads((tmp_path / stick / "enclave-manifest.json").read_text())
                 for stick in ("cli-stick", "gui-stick")]
    assert manifests[0] == manifests[1]
    assert [m["id"] for m in manifests[0]["models"]] == [moe_id]
    for stick in ("cli-stick", "gui-stick"):
        assert (tmp_path / stick / moe_model.name).read_bytes() == moe_model.read_bytes()

    # The default model is removed: both front ends clear the setting that named it.
    run(cli_home, "settings", "set", "default_model", dense_id)
    models_page.set_default(dense_id)
    assert default_model_of(cli_home) == services.settings.load().default_model == dense_id
    removed = run(cli_home, "models", "remove", dense_id, "--delete-files")
    assert "It was the default model" in removed
    models_page.remove(dense_id, delete_files=True)
    assert "It was the default model" in models_page.jobs.status.text()

    assert default_model_of(cli_home) is None and services.settings.load().default_model is None
    left = query(services.store, gui_home, models_sql)
    assert [m["id"] for m in left] == [moe_id]
    assert cli_rows(cli_home, models_sql) == left
    assert cli_rows(cli_home, files_sql) == query(services.store, gui_home, files_sql)
    for home in (cli_home, gui_home):
        assert not (home / "data" / "models" / "tiny-dense").exists()  # its copied file deleted with it


def test_library_ingest_limits_and_token_counts(libraries_page: LibrariesPage, services: Services,
                                                enclave_home: Path, cli_home: Path, moe_model: Path,
                                                tmp_path: Path) -> None:
    gui_home = enclave_home
    folder = tmp_path / "docs"
    (folder / "notes").mkdir(parents=True)
    (folder / "notes" / "memo.txt").write_text("The planner keeps attention in VRAM.\n" * 12)
    (folder / "plan.md").write_text("# Plan\n\nExperts go to RAM first.\n")
    (folder / "broken.txt").write_bytes(BINARY)
    (folder / "huge.txt").write_text("too long to read " * 70_000)  # 1.1 MiB: over max_document_mb = 1
    write_pdf(folder / "report.pdf")

    run(cli_home, "settings", "set", "max_document_mb", "1")
    services.settings.set("max_document_mb", 1)
    run(cli_home, "library", "add", "Docs", str(folder), "--create")
    libraries_page.add_paths([folder])

    libraries_sql = "SELECT name FROM libraries ORDER BY id"
    documents_sql = f"SELECT {DOCUMENT_COLUMNS} FROM documents d ORDER BY d.path"
    assert query(services.store, gui_home, libraries_sql) == cli_rows(cli_home, libraries_sql) == [{"name": "Docs"}]
    gui_documents = query(services.store, gui_home, documents_sql)
    reasons = {Path(d["path"]).name: d["error_reason"] for d in gui_documents}
    assert reasons == {"broken.txt": "binary", "huge.txt": "too_large", "memo.txt": None, "plan.md": None,
                       "report.pdf": None}
    assert cli_rows(cli_home, documents_sql) == gui_documents

    # Exact token counts with a model: `library show --model` and the page's "Size the context".
    run(cli_home, "models", "import", str(moe_model), "--in-place")
    [model] = services.import_model(moe_model, "in_place").imported
    model_id = model.id
    services.settings.set("default_model", model_id)
    shown = json.loads(run(cli_home, "library", "show", "Docs", "--model", model_id, "--json"))
    libraries_page.open_library(services.libraries.get("Docs").id)
    libraries_page.size_button.click()

    counts_sql = "SELECT sha256, tokenizer, tokens FROM token_counts ORDER BY sha256, tokenizer"
    gui_counts = query(services.store, gui_home, counts_sql)
    readable = {d["sha256"] for d in gui_documents if d["error_reason"] is None}
    assert {c["sha256"] for c in gui_counts} == readable and all(c["tokens"] > 0 for c in gui_counts)
    assert cli_rows(cli_home, counts_sql) == gui_counts
    assert shown["sizing"]["exact"] is True
    assert services.profile(model_id).n_ctx == shown["sizing"]["needed_ctx"]  # the page applied it to the profile
    assert {d["sha256"]: d["tokens"] for d in shown["documents"] if d["tokens"]} == {
        c["sha256"]: c["tokens"] for c in gui_counts}
