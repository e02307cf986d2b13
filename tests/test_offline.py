"""Nothing goes online unless asked: every command below runs in a real process (and its
worker processes) with an audit hook that records any socket connection or name lookup."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

AUDIT = '''
import socket, sys, os
_log = os.environ["ENCLAVE_NET_AUDIT"]
def _hook(event, args):
    if event in ("socket.connect", "socket.getaddrinfo", "socket.gethostbyname"):
        if event == "socket.connect" and args[0].family == socket.AF_UNIX:
            return
        with open(_log, "a") as f:
            f.write(f"{os.getpid()} {event} {args[1:]!r}\\n")
sys.addaudithook(_hook)
'''


def run(*args: str, home: Path, env_extra: dict[str, str], stdin: str | None = None
        ) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ENCLAVE_HOME": str(home), **env_extra}
    return subprocess.run([sys.executable, "-m", "app", *args], input=stdin, capture_output=True, text=True,
                          env=env, timeout=180)


def test_start_import_discover_chat_and_library_open_no_socket(tmp_path: Path, moe_model: Path) -> None:
    hook_dir = tmp_path / "hook"
    hook_dir.mkdir()
    (hook_dir / "sitecustomize.py").write_text(AUDIT)
    audit = tmp_path / "net.log"
    fake_home = tmp_path / "user"
    (fake_home / ".cache" / "huggingface" / "hub").mkdir(parents=True)
    env = {"ENCLAVE_NET_AUDIT": str(audit), "PYTHONPATH": f"{hook_dir}{os.pathsep}{os.getcwd()}",
           "HOME": str(fake_home)}
    home = tmp_path / "enclave"
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.txt").write_text("The library is offline.")
    steps = [
        ("--version",), ("doctor",), ("models", "import", str(moe_model), "--in-place"), ("models", "list"),
        ("models", "discover"), ("models", "verify"), ("settings", "set", "max_tokens", "4"),
        ("run", str(moe_model), "hi", "--max-tokens", "3"), ("library", "create", "docs"),
        ("library", "add", "docs", str(docs)), ("ask", "--library", "docs", "--model", "tiny-moe", "why?"),
        ("history", "search", "offline"), ("models", "catalog"),
    ]
    for step in steps:
        result = run(*step, home=home, env_extra=env)
        assert result.returncode == 0, (step, result.stderr)
    chat = run("chat", "--model", "tiny-moe", home=home, env_extra=env, stdin="hello\n")
    assert chat.returncode == 0, chat.stderr
    assert audit.exists() is False or audit.read_text() == "", audit.read_text()
    # the hook did run, in the app and in its llama.cpp worker: prove it can see a connection
    probe = subprocess.run([sys.executable, "-c", "import socket; s = socket.socket(); s.settimeout(0.01)\n"
                            "try: s.connect(('127.0.0.1', 9))\nexcept OSError: pass"],
                           env={**os.environ, **env}, capture_output=True, text=True, timeout=30)
    assert probe.returncode == 0 and "socket.connect" in audit.read_text()


def test_offline_mode_refuses_downloads_and_search_plainly(tmp_path: Path) -> None:
    env = {"ENCLAVE_OFFLINE": "1"}
    for args in (("models", "pull", "Qwen/Qwen3-30B-A3B-GGUF"), ("models", "search", "qwen")):
        result = run(*args, home=tmp_path / "e", env_extra=env)
        assert result.returncode == 2
        assert result.stderr.startswith("enclave: error: ") and "offline" in result.stderr.lower()
    setting = run("settings", "set", "offline", "true", home=tmp_path / "f", env_extra={})
    assert setting.returncode == 0
    refused = run("models", "pull", "Qwen/Qwen3-30B-A3B-GGUF", home=tmp_path / "f", env_extra={})
    assert refused.returncode == 2 and "offline" in refused.stderr.lower()
