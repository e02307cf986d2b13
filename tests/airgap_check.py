"""The no-network proof: the whole app, end to end, inside a network namespace with no
interfaces, with an audit hook in every Python process recording any network use.

    python -m tests.airgap_check            (or: make airgap-test)
    python -m tests.airgap_check --probe    the same plus a deliberate connection: must fail
    python -m tests.airgap_check --quick    only start-up, doctor and the download refusals

It re-runs itself under ``unshare --net`` (as root) or ``unshare --net --map-root-user``
(unprivileged user namespaces), checks that the namespace has no interface up, then runs
every step of ``tests/airgap_steps.py`` — CLI commands, the GUI (offscreen), their llama.cpp
workers — with ``tests/net_audit/sitecustomize.py`` in each process. It prints its figures
and exits 0 when every step did what it should and nothing used the network, 1 otherwise,
and 3 when no network namespace can be made here (with the reason). ``--no-namespace``
runs the same with the hook alone (no download attempts then: they would go online).
"""

from __future__ import annotations

import argparse
import fcntl
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from tests.airgap_steps import (
    Step,
    Workspace,
    doctor_step,
    first_steps,
    found_conversation,
    history_steps,
    model_id,
    model_steps,
    probe_step,
    refusal_steps,
    search_step,
)
from tests.audit_log import ROOT, AuditLog, hooked_env

EXIT_NO_NAMESPACE = 3
STEP_TIMEOUT = 180
SIOCGIFFLAGS = 0x8913
IFF_UP = 0x1
# Variables that would send requests elsewhere or switch the app's own offline mode on.
CLEARED = ("ENCLAVE_OFFLINE", "HF_HUB_OFFLINE", "HF_ENDPOINT", "http_proxy", "https_proxy", "all_proxy",
           "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")


def namespace_command() -> tuple[list[str] | None, str]:
    """The command prefix that runs a program in a new network namespace, or None and why not."""
    if not sys.platform.startswith("linux"):
        return None, f"network namespaces are Linux only (this is {sys.platform})"
    unshare = shutil.which("unshare")
    if unshare is None:
        return None, "the 'unshare' program (util-linux) is not installed"
    tried = []
    for prefix in ([unshare, "--net"], [unshare, "--net", "--map-root-user"]):
        result = subprocess.run([*prefix, "true"], capture_output=True, text=True, timeout=30)
        if result.returncode == 0:
            return prefix, ""
        tried.append(f"'{' '.join(prefix[1:])}': {result.stderr.strip() or result.returncode}")
    return None, ("cannot make a network namespace (" + "; ".join(tried) + "). Run as root, or allow unprivileged "
                  "user namespaces (sysctl kernel.unprivileged_userns_clone=1, user.max_user_namespaces > 0, and on "
                  "Ubuntu 24.04+ kernel.apparmor_restrict_unprivileged_userns=0)")


def interfaces() -> dict[str, bool]:
    """This process's network interfaces and whether each is up (SIOCGIFFLAGS; nothing is sent)."""
    found = {}
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for _, name in socket.if_nameindex():
            request = struct.pack("16sH14x", name.encode(), 0)
            flags = struct.unpack("16sH14x", fcntl.ioctl(sock, SIOCGIFFLAGS, request))[1]
            found[name] = bool(flags & IFF_UP)
    return found


class Run:
    """Runs steps with the hook, remembering which process was which step."""

    def __init__(self, ws: Workspace, log: Path) -> None:
        self.ws = ws
        self.log = log
        self.env = {k: v for k, v in hooked_env(log).items() if k not in CLEARED}
        self.env.update({"ENCLAVE_HOME": str(ws.root / "home"), "HOME": str(ws.root / "user"),
                         "QT_QPA_PLATFORM": "offscreen"})
        (ws.root / "user").mkdir()
        self.done: list[tuple[Step, int]] = []  # each step and its process id
        self.problems: list[str] = []

    def step(self, step: Step) -> subprocess.CompletedProcess[str]:
        started = time.monotonic()
        process = subprocess.Popen(step.command, cwd=ROOT, env={**self.env, **step.env}, text=True,
                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            out, err = process.communicate(step.stdin, timeout=STEP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            out, err = process.communicate()
        result = subprocess.CompletedProcess(step.command, process.returncode, out, err)
        self.done.append((step, process.pid))
        wrong = (f"exit {result.returncode}, expected {step.expect}: {err.strip()[-500:]}"
                 if result.returncode != step.expect else step.check(result) if step.check else None)
        print(f"  {'ok  ' if wrong is None else 'FAIL'}  {step.name:<28} exit {result.returncode}  "
              f"{time.monotonic() - started:5.1f} s", flush=True)
        if wrong is not None:
            self.problems.append(f"{step.name}: {wrong}")
        return result

    def all(self, steps: list[Step]) -> None:
        for step in steps:
            self.step(step)


def run_steps(run: Run, namespace: bool, quick: bool, probe: bool) -> None:
    if probe:
        run.step(probe_step())
    if quick:
        run.all([*first_steps(run.ws)[:1], doctor_step()])
    else:
        *start, imported = first_steps(run.ws)
        run.all(start)
        model = model_id(run.step(imported))
        run.all(model_steps(run.ws, model))
        run.all(history_steps(run.ws, found_conversation(run.step(search_step()))))
    run.all(refusal_steps(namespace))


def programs_started(run: Run, audit: AuditLog) -> dict[str, list[str]]:
    """Each program (not Python) the steps' processes started, with the step of each start."""
    step_of = {p: step.name for step, pid in run.done for p in audit.descendants(pid)}
    started: dict[str, list[str]] = {}
    for event in audit.of_kind("exec"):
        program = Path(event["detail"][0]).name if event["detail"] else "?"
        started.setdefault(program, []).append(step_of.get(event["pid"], "?"))
    return started


def report(run: Run, audit: AuditLog, namespace: str) -> bool:
    """Print the figures; True when the app used no network and every step did its job."""
    asked = {pid for step, pid in run.done if step.online}
    app_pids = set().union(*(audit.descendants(pid) for step, pid in run.done if not step.online))
    online_pids = set().union(*(audit.descendants(pid) for pid in asked)) if asked else set()
    problems = list(run.problems)
    unhooked = [step.name for step, pid in run.done if pid not in audit.processes]
    problems += [f"{name}: the audit hook was not active in its process" for name in unhooked]
    for step, pid in run.done:
        workers = [p for p in audit.descendants(pid) if audit.processes[p].role == "llama.cpp worker"]
        if step.worker and not workers:
            problems.append(f"{step.name}: no hooked llama.cpp worker ran under it")
    used = audit.network_use(app_pids)
    problems += [f"network use: {e['event']} {e['detail']} (pid {e['pid']})" for e in used]
    roles = Counter(p.role for p in audit.processes.values())
    programs = programs_started(run, audit)
    online = audit.network_use(online_pids)

    print(f"\nnetwork namespace: {namespace}")
    print(f"commands run: {len(run.done)}")
    print(f"processes hooked: {len(audit.processes)} (" + ", ".join(f"{n} {r}" for r, n in sorted(roles.items())) +
          f"); every command {'had' if not unhooked else 'did NOT have'} the hook active")
    print(f"other programs started (not Python, not network tools): {sum(map(len, programs.values()))}")
    for name, steps in programs.items():
        print(f"    {name} x {len(steps)}, by: {', '.join(sorted(set(steps)))}")
    print(f"connections recorded: {len(audit.of_kind('connect', app_pids))}")
    print(f"DNS lookups: {len(audit.of_kind('dns', app_pids))}")
    print(f"network programs started: {len(audit.of_kind('tool', app_pids))}")
    if asked:
        seen = sorted({f"{e['event']} {e['detail']}" for e in online})
        print(f"asked to go online (models pull/search without ENCLAVE_OFFLINE): {len(online)} attempts recorded "
              f"({'; '.join(seen)}), each failed with one 'No network' line")
    for problem in problems:
        print(f"PROBLEM  {problem}")
    plural = "s" if len(problems) > 1 else ""
    print("air-gap check: " + ("PASSED" if not problems else f"FAILED ({len(problems)} problem{plural})"))
    return not problems


def inside(args: argparse.Namespace, namespace: str) -> int:
    if args.namespace:
        present = interfaces()
        up = [name for name, is_up in present.items() if is_up]
        if up:
            print(f"air-gap check: FAILED: this namespace has interfaces up: {up}")
            return 1
        namespace += f"; interfaces: {', '.join(present) or 'none'}, none up"
    with tempfile.TemporaryDirectory(prefix="enclave-airgap-") as tmp:
        ws = Workspace(Path(tmp))
        log = ws.root / "net-audit.jsonl"
        run = Run(ws, log)
        print(f"Enclave air-gap check ({namespace})")
        try:
            run_steps(run, args.namespace, args.quick, args.probe)
        except RuntimeError as exc:  # a step whose output the next ones need did not give it
            run.problems.append(f"stopped: {exc}")
        return 0 if report(run, AuditLog.read(log), namespace) else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--probe", action="store_true", help="add a deliberate connection (the check must fail)")
    parser.add_argument("--quick", action="store_true", help="only start-up, doctor and the refusals")
    parser.add_argument("--no-namespace", dest="namespace", action="store_false",
                        help="the audit hook alone, without a network namespace")
    parser.add_argument("--inside", default=None, help=argparse.SUPPRESS)  # set when re-run in the namespace
    args = parser.parse_args()
    if args.inside is not None or not args.namespace:
        return inside(args, args.inside or "none (--no-namespace): the audit hook alone")
    prefix, why = namespace_command()
    if prefix is None:
        print(f"air-gap check: {why}", file=sys.stderr)
        return EXIT_NO_NAMESPACE
    again = [*sys.argv[1:], f"--inside=unshare {' '.join(prefix[1:])}"]
    return subprocess.run([*prefix, sys.executable, "-m", "tests.airgap_check", *again], cwd=ROOT).returncode


if __name__ == "__main__":
    sys.exit(main())
