"""The user's terminal shows only what Enclave says: llama.cpp's log, pypdf's warnings and any
other library's output go to the log files.

Each command runs as a real process (tests/cli.py). Its stderr must be made of Enclave's own
lines only: every line has one of the shapes in ``ENCLAVE_LINES`` and none carries a marker of
llama.cpp, ggml or a Python library (``FOREIGN_MARKERS``). Each test also checks that the noise
it provokes really happened, in the log file, so it cannot pass by provoking none.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from tests import docs_samples as samples
from tests.cli import ROOT, enclave

# Every line Enclave itself may write to stderr in these commands.
ENCLAVE_LINES = (
    re.compile(r"plan: \S.*"),  # run --stats: the memory plan's verdict
    re.compile(r"prompt: [\d,]+ tokens .*generated: [\d,]+ tokens.*"),  # run --stats: counts and speeds
    re.compile(r"enclave: (error|warning): \S.*"),
    re.compile(r"\(.+\)"),  # chat and ask notes: "(Read the whole library: ...)", "(Saved as conversation 1; ...)"
    re.compile(r"\[stopped\]"),
    re.compile(r"Chat \d+ with .+"),  # chat's greeting
    re.compile(r"New chat \d+\."),
    re.compile(r"Reading (the prompt: |\d+/\d+ ).*"),  # progress lines (on a terminal only)
    re.compile(r"\S+ has no chat template and .+"),  # the format used for a model without one
)
FOREIGN_MARKERS = ("llama_", "ggml", "gguf_", "llm_load", "load_tensors", "print_info", "EOF marker", "startxref",
                   "pypdf", "Warning", "WARNING", "Traceback", "CUDA", "Metal")


def foreign_lines(stderr: str) -> list[str]:
    """The stderr lines that are not Enclave's own."""
    lines = [re.sub(r"\r|\x1b\[K", "", line) for line in stderr.splitlines()]
    return [line for line in lines if line.strip() and (
        not any(shape.fullmatch(line) for shape in ENCLAVE_LINES)
        or any(marker in line for marker in FOREIGN_MARKERS))]


def assert_quiet(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, result.stderr
    assert foreign_lines(result.stderr) == [], result.stderr


def damaged_pdfs(folder: Path) -> Path:
    """A good PDF, one cut in half and one without its %%EOF marker, and a text file."""
    folder.mkdir()
    whole = samples.pdf_bytes()
    (folder / "cut.pdf").write_bytes(whole[: len(whole) // 2])
    (folder / "no-eof.pdf").write_bytes(whole.replace(b"%%EOF", b""))
    samples.write_pdf(folder / "good.pdf")
    (folder / "notes.txt").write_text("The orchard ships apples in May. " * 5, encoding="utf-8")
    return folder


def test_the_foreign_line_check_catches_library_noise() -> None:
    assert foreign_lines("plan: Fits on the CPU.\nprompt: 3 tokens (0 cached), 5 tokens/s; generated: 2 tokens\n") == []
    noise = ["EOF marker not found", "llama_context: n_ctx_seq (512) > n_ctx_train (0) -- possible training context",
             "(llama_model_loader: loaded meta data)", "UserWarning: something"]
    assert foreign_lines("\n".join(noise)) == noise


def test_library_add_and_ask_on_damaged_pdfs_keep_the_terminal_quiet(enclave_home: Path, moe_model: Path,
                                                                      tmp_path: Path) -> None:
    folder = damaged_pdfs(tmp_path / "docs")
    added = enclave("library", "add", "docs", str(folder), "--create", home=enclave_home)
    assert_quiet(added)
    assert "2 added" in added.stdout and "2 could not be read" in added.stdout
    assert "cut.pdf is damaged" in added.stdout and "no-eof.pdf is damaged" in added.stdout
    log = (enclave_home / "logs" / "enclave.log").read_text(encoding="utf-8")
    assert "EOF marker not found" in log  # pypdf did complain, into the log

    assert enclave("settings", "set", "max_tokens", "4", home=enclave_home).returncode == 0
    asked = enclave("ask", "--library", "docs", "--model", str(moe_model), "When are apples shipped?",
                    home=enclave_home)
    assert_quiet(asked)
    assert "(Read the whole library: 2 documents" in asked.stderr and asked.stdout.strip()


def test_run_with_stats_prints_only_the_plan_and_the_figures(enclave_home: Path, moe_model: Path) -> None:
    result = enclave("run", str(moe_model), "hello there", "--stats", "--max-tokens", "8", "--temperature", "0",
                     home=enclave_home)
    assert_quiet(result)
    assert re.search(r"^plan: ", result.stderr, re.M) and re.search(r"^prompt: \d+ tokens", result.stderr, re.M)
    assert result.stdout.strip()
    llama_log = (enclave_home / "logs" / "llama.log").read_text(encoding="utf-8")
    assert "llama_context:" in llama_log and "print_info:" in llama_log  # llama.cpp spoke, into its log


def test_chat_keeps_the_terminal_quiet(enclave_home: Path, moe_model: Path) -> None:
    assert enclave("settings", "set", "max_tokens", "4", home=enclave_home).returncode == 0
    result = enclave("chat", "--model", str(moe_model), stdin="hello\n/exit\n", home=enclave_home)
    assert_quiet(result)
    assert re.search(r"^Chat 1 with ", result.stderr, re.M)


def test_python_warnings_in_the_cli_go_to_the_log(tmp_path: Path) -> None:
    script = ("import warnings\n"
              "from pathlib import Path\n"
              "from app.logs import configure_logging\n"
              "from app.paths import AppPaths\n"
              f"configure_logging(AppPaths.under(Path({str(tmp_path)!r})))\n"
              "warnings.warn('a library is unhappy')\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert result.returncode == 0 and result.stderr == ""
    assert "UserWarning: a library is unhappy" in (tmp_path / "logs" / "enclave.log").read_text(encoding="utf-8")
