"""``enclave library`` and ``enclave ask`` as a user runs them."""

from __future__ import annotations

import json
from pathlib import Path

from tests import docs_samples as samples
from tests.cli import enclave


def test_a_folder_goes_in_and_ask_answers_from_it(enclave_home: Path, moe_model: Path, tmp_path: Path) -> None:
    folder = tmp_path / "contracts"
    folder.mkdir()
    (folder / "lease.txt").write_text("The lease runs for five years. " * 10)
    samples.write_pdf(folder / "report.pdf")
    (folder / "broken.pdf").write_bytes(b"%PDF-1.4 garbage")
    assert enclave("library", "create", "contracts", home=enclave_home).returncode == 0
    added = enclave("library", "add", "contracts", str(folder), "--exclude", "*.tmp", home=enclave_home)
    assert added.returncode == 0, added.stderr
    assert "2 added" in added.stdout and "1 could not be read" in added.stdout and "broken.pdf" in added.stdout

    listed = enclave("library", "list", "--json", home=enclave_home)
    assert json.loads(listed.stdout)[0]["documents"] == 2

    shown = json.loads(enclave("library", "show", "contracts", "--model", str(moe_model), "--json",
                               home=enclave_home).stdout)
    tokens = {Path(d["path"]).name: d["tokens"] for d in shown["documents"]}
    assert tokens["lease.txt"] > 0 and tokens["report.pdf"] > 0 and tokens["broken.pdf"] is None
    assert shown["sizing"]["exact"] is True and shown["sizing"]["needed_ctx"] % 1024 == 0
    assert shown["sizing"]["summary"].startswith("Library: ")

    assert enclave("settings", "set", "max_tokens", "6", home=enclave_home).returncode == 0
    answer = enclave("ask", "--library", "contracts", "--model", str(moe_model), "How long is the lease?",
                     home=enclave_home)
    assert answer.returncode == 0, answer.stderr
    assert "Read the whole library: 2 documents" in answer.stderr and answer.stdout.strip()
    cache = enclave("library", "cache", home=enclave_home)
    assert "2 saved prompt caches" in cache.stdout  # one KV block per readable document
    assert "contracts with tiny-moe.gguf: 2 documents" in cache.stdout.split("Document blocks")[1]
    history = json.loads(enclave("history", "list", "--json", home=enclave_home).stdout)
    assert history[0]["title"] == "How long is the lease?" and history[0]["library_id"] == 1

    removed = enclave("library", "remove", "contracts", str(folder / "lease.txt"), home=enclave_home)
    assert removed.returncode == 0 and "Removed" in removed.stdout
    assert enclave("library", "cache", "--clear", home=enclave_home).stdout.startswith("Deleted 2 saved")
    assert enclave("library", "remove", "contracts", home=enclave_home).returncode == 0
    missing = enclave("ask", "--library", "contracts", "q", home=enclave_home)
    assert missing.returncode == 2 and "There is no library 'contracts'" in missing.stderr
