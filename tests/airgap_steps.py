"""What the air-gap check runs: the whole app, a command at a time, as a user would on a
machine without network — and what each command must do there."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tests.docs_samples import write_pdf
from tests.tiny_models import MOE, write_tiny_model

REPO = "Qwen/Qwen3-30B-A3B-GGUF"
WORD = "lighthouse"  # in the chat's first message, searched for afterwards
Check = Callable[[subprocess.CompletedProcess[str]], str | None]  # None, or what is wrong


@dataclass
class Step:
    name: str
    command: list[str]
    stdin: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    expect: int = 0
    check: Check | None = None
    worker: bool = False  # it loads a model: a hooked llama.cpp worker must have run under it
    online: bool = False  # asked to go online: its attempts are expected (and must fail plainly)


def app(*args: str) -> list[str]:
    return [sys.executable, "-m", "app", *args]


def one_line_error(*words: str) -> Check:
    """A refusal a user can read: exit 2 (checked by the step), one line on stderr that
    starts ``enclave: error:`` and says ``words``, no traceback."""
    def check(result: subprocess.CompletedProcess[str]) -> str | None:
        lines = result.stderr.strip().splitlines()
        if len(lines) != 1 or not lines[0].startswith("enclave: error: "):
            return f"not one 'enclave: error:' line: {result.stderr.strip()!r}"
        missing = [w for w in words if w.lower() not in lines[0].lower()]
        return f"{lines[0]!r} does not say {missing}" if missing else None
    return check


def prints(pattern: str) -> Check:
    def check(result: subprocess.CompletedProcess[str]) -> str | None:
        return None if re.search(pattern, result.stdout) else f"stdout does not match {pattern!r}: {result.stdout!r}"
    return check


def file_says(path: Path, text: str) -> Check:
    def check(result: subprocess.CompletedProcess[str]) -> str | None:
        return None if path.exists() and text in path.read_text() else f"{path} does not contain {text!r}"
    return check


@dataclass
class Workspace:
    """The files a run needs, under one temporary folder."""

    root: Path

    def __post_init__(self) -> None:
        self.model = write_tiny_model(self.root / "tiny-moe.gguf", MOE)
        self.docs = self.root / "docs"
        self.docs.mkdir()
        (self.docs / "keeper.txt").write_text(f"The {WORD} keeper writes everything down offline.\n")
        (self.docs / "notes.md").write_text("# Notes\n\nNothing leaves this machine.\n")
        (self.docs / "page.html").write_text(  # what it links to must not be fetched
            '<html><head><link rel="stylesheet" href="https://example.com/style.css"></head><body>'
            '<p>An offline page.</p><img src="https://example.com/logo.png"></body></html>')
        write_pdf(self.docs / "report.pdf")
        self.exported = self.root / "usb-stick"
        self.markdown = self.root / "conversation.md"


def model_id(result: subprocess.CompletedProcess[str]) -> str:
    found = re.search(r"^Imported (\S+):", result.stdout, re.M)
    if not found:
        raise RuntimeError(f"models import printed no model id: {result.stdout!r} {result.stderr!r}")
    return found.group(1)


def found_conversation(search: subprocess.CompletedProcess[str]) -> int:
    """The newest conversation ``history search --json`` found (the terminal chat's)."""
    hits = json.loads(search.stdout) if search.returncode == 0 else []
    if not hits:
        raise RuntimeError(f"history search found nothing: {search.stdout!r} {search.stderr!r}")
    return hits[0]["conversation_id"]


def doctor_step() -> Step:
    return Step("doctor", app("doctor"), check=prints(r"llama\.cpp"))


def first_steps(ws: Workspace) -> list[Step]:
    """Up to the import, whose printed model id the later steps need."""
    return [
        Step("version", app("--version"), check=prints(r"^enclave \d")),
        Step("models import", app("models", "import", str(ws.model)), check=prints("Imported")),
    ]


def model_steps(ws: Workspace, model: str) -> list[Step]:
    ask = f"What does the {WORD} keeper do?"
    return [
        Step("models verify", app("models", "verify"), check=prints(f"{model}: ok")),
        Step("settings", app("settings", "set", "default_model", model)),
        Step("settings", app("settings", "set", "max_tokens", "8")),
        Step("run", app("run", str(ws.model), "hello", "--max-tokens", "4"), worker=True),
        Step("library create", app("library", "create", "docs")),
        Step("library add", app("library", "add", "docs", str(ws.docs)),  # counts with the default model
             check=prints(r"\b4 added, 0 updated, 0 unchanged, 0 could not"), worker=True),
        Step("library show", app("library", "show", "docs", "--model", model), worker=True),
        Step("ask", app("ask", "--library", "docs", "--model", model, ask), worker=True),
        Step("chat", app("chat", "--model", model), stdin=f"Tell me about the {WORD}.\n/exit\n", worker=True),
        Step("models discover", app("models", "discover")),
        Step("models catalog", app("models", "catalog"), check=prints("enclave models pull")),
        Step("models export", app("models", "export", model, str(ws.exported)),
             check=file_says(ws.exported / "enclave-manifest.json", model)),
    ]


def search_step() -> Step:
    return Step("history search", app("history", "search", WORD, "--json"), check=prints(f"\\[{WORD}\\]"))


def history_steps(ws: Workspace, conversation: int) -> list[Step]:
    gui = [sys.executable, "-m", "tests.airgap_gui", str(conversation), WORD, "Hello from the window."]
    return [
        Step("history export md", app("history", "export", str(conversation), "--format", "md", "-o",
                                      str(ws.markdown)), check=file_says(ws.markdown, WORD)),
        Step("GUI", gui, check=prints('"reply_tokens": [1-9]'), worker=True),
        Step("import on the other machine", app("models", "import", str(ws.exported)), check=prints("Imported"),
             env={"ENCLAVE_HOME": str(ws.root / "other-machine")}),
        doctor_step(),
        Step("doctor --check-db", app("doctor", "--check-db"), check=prints(r"enclave\.db: ok ")),
    ]


def refusal_steps(namespace: bool) -> list[Step]:
    """Downloads: refused offline; without offline mode, in the namespace, a plain 'no network'."""
    offline = {"ENCLAVE_OFFLINE": "1"}
    steps = [
        Step("offline: models pull", app("models", "pull", REPO), env=offline, expect=2,
             check=one_line_error("offline")),
        Step("offline: models search", app("models", "search", "qwen"), env=offline, expect=2,
             check=one_line_error("offline")),
    ]
    if namespace:  # outside a namespace these would really go online
        steps += [
            Step("no network: models pull", app("models", "pull", REPO), expect=2, online=True,
                 check=one_line_error("no network")),
            Step("no network: models search", app("models", "search", "qwen"), expect=2, online=True,
                 check=one_line_error("no network")),
        ]
    return steps


PROBE = ("import socket\n"
         "socket.getaddrinfo('localhost', 9)\n"
         "s = socket.socket()\n"
         "s.settimeout(0.1)\n"
         "try:\n    s.connect(('127.0.0.1', 9))\nexcept OSError:\n    pass\n")


def probe_step() -> Step:
    """A deliberate name lookup and connection (to this machine only), to show the check fails."""
    return Step("probe", [sys.executable, "-c", PROBE])
