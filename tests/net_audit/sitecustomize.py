"""A Python audit hook that records every use of the network, in every Python process
started with this folder on ``PYTHONPATH`` (Python imports ``sitecustomize`` at start-up):
the app, its llama.cpp worker, multiprocessing's helpers and the GUI. ``tests/airgap_check.py``
and ``tests/test_offline.py`` read the log it writes to ``$ENCLAVE_NET_AUDIT``.

One JSON line per event: ``{"pid", "kind", "event", "detail"}``. The first line of each
process has kind ``hook``, with its parent and command line, to prove the hook was active
there. Kinds: ``connect`` (a socket connected, sent to an address, bound to an IP address,
or an HTTP/FTP/mail client or a browser asked to open something), ``dns`` (a name or address
lookup), ``tool`` (a program that goes online was started) and ``exec`` (any other program
started: not network use, listed so that no process goes unnoticed). Local IPC over AF_UNIX
sockets is not network use and is not recorded.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from typing import Any

LOG = os.environ.get("ENCLAVE_NET_AUDIT", "")
LOCAL_FAMILIES = {socket.AF_UNIX}
IP_FAMILIES = {socket.AF_INET, socket.AF_INET6}
SOCKET_EVENTS = {"socket.connect", "socket.sendto", "socket.sendmsg"}
DNS_EVENTS = {"socket.getaddrinfo", "socket.gethostbyname", "socket.gethostbyaddr", "socket.getnameinfo"}
CLIENT_EVENTS = {"http.client.connect", "ftplib.connect", "smtplib.connect", "poplib.connect", "imaplib.open",
                 "nntplib.connect", "telnetlib.Telnet.open", "webbrowser.open"}
EXEC_EVENTS = {"subprocess.Popen", "os.exec", "os.posix_spawn", "os.spawn", "os.system"}
SHELLS = {"sh", "bash", "dash", "zsh"}
NETWORK_TOOLS = {"curl", "wget", "ssh", "scp", "sftp", "rsync", "nc", "ncat", "netcat", "socat", "telnet", "ftp",
                 "git", "pip", "pip3", "apt", "apt-get", "dig", "nslookup", "host", "ping", "xdg-open"}


def record(kind: str, event: str, detail: object) -> None:
    """One line; ``detail`` is the event's arguments as text, or a command line or the hook
    line's dict as they are."""
    shown = detail if isinstance(detail, (dict, list)) else repr(detail)[:500]
    line = json.dumps({"pid": os.getpid(), "kind": kind, "event": event, "detail": shown})
    with open(LOG, "a", encoding="utf-8") as log:
        log.write(line + "\n")


def command_of(event: str, args: tuple[Any, ...]) -> list[str]:
    """The command line an exec-like event starts (never its environment: it may hold tokens)."""
    if event == "os.system":
        return os.fsdecode(args[0]).split()
    if event == "os.spawn":  # (mode, path, args, env)
        args = args[1:]
    program, argv = args[0], args[1]
    words = [os.fsdecode(w) for w in argv] if isinstance(argv, (list, tuple)) else [os.fsdecode(argv)]
    return [os.fsdecode(program), *words[1:]] if program is not None else words


def starts_network_tool(command: list[str]) -> bool:
    if command and os.path.basename(command[0]) in SHELLS and "-c" in command[:-1]:
        command = command[command.index("-c") + 1].split()  # sh -c 'curl ...'
    return bool(command) and os.path.basename(command[0]) in NETWORK_TOOLS


def kind_of(event: str, args: tuple[Any, ...]) -> str | None:
    """What an audit event means for the network, or None when it does not concern it."""
    if event in SOCKET_EVENTS:
        return None if args[0].family in LOCAL_FAMILIES else "connect"
    if event == "socket.bind":
        return "connect" if args[0].family in IP_FAMILIES else None
    if event in DNS_EVENTS:
        return "dns"
    if event in CLIENT_EVENTS:
        return "connect"
    if event == "urllib.Request":
        return None if str(args[0]).lower().startswith(("file:", "data:")) else "connect"
    if event in EXEC_EVENTS:
        return "tool" if starts_network_tool(command_of(event, args)) else "exec"
    return None


def hook(event: str, args: tuple[Any, ...]) -> None:
    kind = kind_of(event, args)
    if kind is not None:
        if event in EXEC_EVENTS:
            record(kind, event, command_of(event, args))
        else:
            record(kind, event, args[1:] if event in SOCKET_EVENTS or event == "socket.bind" else args)


if LOG:
    record("hook", "active", {"ppid": os.getppid(), "argv": getattr(sys, "orig_argv", sys.argv)})
    sys.addaudithook(hook)
