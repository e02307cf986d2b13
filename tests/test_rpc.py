"""llama.cpp's RPC backend in Enclave: host addresses, the reachability check and handshake,
hosts added as devices with stable ids, the ``hosting`` policy rules and ``enclave host``
serving this machine on loopback until Ctrl-C (audited)."""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from app.hosting import exposure_warning
from app.policy import Policy, PolicyError, load_policy
from inference.errors import EnclaveError
from inference.rpc import DEFAULT_PORT, PROTOCOL_MAJOR, HostUnreachable, check_reachable, handshake, parse_endpoint
from tests.cli import ROOT, enclave, one_error_line
from tests.rpc_hosts import LoopbackHosts, free_port


def write_policy(folder: Path, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "policy.toml"
    path.write_text(text)
    return path


def audit_events(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# Addresses ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "endpoint"), [
    ("10.0.0.5", f"10.0.0.5:{DEFAULT_PORT}"),
    ("10.0.0.5:9000", "10.0.0.5:9000"),
    ("  gpu-box.lan:50053 ", "gpu-box.lan:50053"),
    ("gpu-box.lan", f"gpu-box.lan:{DEFAULT_PORT}"),
    ("[::1]:9000", "[::1]:9000"),
    ("[fe80::1]", f"[fe80::1]:{DEFAULT_PORT}"),
])
def test_an_address_becomes_host_and_port(text: str, endpoint: str) -> None:
    assert parse_endpoint(text) == endpoint


@pytest.mark.parametrize(("text", "problem"), [
    ("", "give HOST or HOST:PORT"),
    ("10.0.0.5:", "give HOST or HOST:PORT"),
    ("10.0.0.5:port", "give HOST or HOST:PORT"),
    ("::1:9000", "give HOST or HOST:PORT"),
    ("two words", "give HOST or HOST:PORT"),
    ("10.0.0.5:70000", "the port must be between 1 and 65535"),
    ("10.0.0.5:0", "the port must be between 1 and 65535"),
    ("[not-v6]:9000", "is not an IPv6 address"),
])
def test_an_address_that_is_not_one_is_refused_in_one_line(text: str, problem: str) -> None:
    with pytest.raises(EnclaveError) as caught:
        parse_endpoint(text)
    message = str(caught.value)
    assert problem in message and repr(text) in message and "\n" not in message


def test_a_closed_port_is_reported_as_refused_with_what_to_check() -> None:
    endpoint = f"127.0.0.1:{free_port()}"
    with pytest.raises(HostUnreachable) as caught:
        check_reachable(endpoint, timeout=1)
    assert str(caught.value) == (f"Cannot reach the host {endpoint}: connection refused; is `enclave host` running "
                                 "there?")


def test_a_host_answers_the_handshake_and_a_busy_one_is_said_to_be(rpc_hosts: LoopbackHosts) -> None:
    endpoint = rpc_hosts.endpoints[0]
    assert 0 < check_reachable(endpoint) < 1
    assert handshake(endpoint)[0] == PROTOCOL_MAJOR  # this build's llama.cpp speaks what rpc.py expects
    with socket.create_connection(("127.0.0.1", rpc_hosts.ports[0]), timeout=3) as held:  # another client
        held.sendall(bytes([14]) + (24).to_bytes(8, "little") + bytes(24))
        assert int.from_bytes(held.recv(8), "little") == 28  # its HELLO answered: the host is serving it
        with pytest.raises(HostUnreachable, match=r"did not answer within 0\.5 s: it serves one Enclave at a time"):
            handshake(endpoint, timeout=0.5)
    assert handshake(endpoint)[0] == PROTOCOL_MAJOR  # free again once that client is gone


# Hosts as devices ------------------------------------------------------------------------------------

ADD_HOSTS = """
import json, sys
from inference import ggml_backend
from inference.rpc import HostUnreachable, add_host
first, second, closed = sys.argv[1:]
added = [add_host(first), add_host(second), add_host(first)]
try:
    add_host(closed)
    unreachable = None
except HostUnreachable as exc:
    unreachable = str(exc)
lib = ggml_backend._lib()
devices = ggml_backend.list_devices()
print(json.dumps({
    "added": [[d.__dict__ for d in host] for host in added],
    "all": [d.__dict__ for d in devices],
    "buffer_types": {d.id: lib.ggml_backend_buft_name(ggml_backend.buffer_type(d.id)).decode() for d in devices},
    "by_name": lib.ggml_backend_buft_name(ggml_backend.buffer_type("rpc1")).decode(),
    "unreachable": unreachable,
}))
"""


def test_two_hosts_become_devices_with_stable_ids(rpc_hosts: LoopbackHosts) -> None:
    """In a process of its own, as the worker will: llama.cpp keeps hosts for the process's life."""
    first, second = rpc_hosts.endpoints
    closed = f"127.0.0.1:{free_port()}"
    run = subprocess.run([sys.executable, "-c", ADD_HOSTS, first, second, closed], capture_output=True, text=True,
                         cwd=ROOT, timeout=120)
    assert run.returncode == 0, run.stderr
    seen = json.loads(run.stdout.strip().splitlines()[-1])
    ids = [d["id"] for d in seen["all"]]
    assert ids == ["CPU", f"RPC0[{first}]", f"RPC0[{second}]"]  # k counts within a host: both are RPC0[...]
    assert [d["name"] for d in seen["all"]] == ["CPU", "RPC0", "RPC1"]  # names count across hosts
    assert [d["host"] for d in seen["all"]] == [None, first, second]
    for device in seen["all"][1:]:
        assert device["type"] == "gpu" and device["description"] == device["host"]
        assert 0 < device["free_bytes"] <= device["total_bytes"]
    assert [[d["id"] for d in host] for host in seen["added"]] == [[f"RPC0[{first}]"], [f"RPC0[{second}]"],
                                                                   [f"RPC0[{first}]"]]  # added once
    assert seen["buffer_types"] == {"CPU": "CPU", f"RPC0[{first}]": f"RPC0[{first}]",
                                    f"RPC0[{second}]": f"RPC0[{second}]"}  # the id is llama.cpp's buffer name
    assert seen["by_name"] == f"RPC0[{second}]"  # a name still finds its device
    assert seen["unreachable"] == (f"Cannot reach the host {closed}: connection refused; is `enclave host` running "
                                   "there?")


# The policy ------------------------------------------------------------------------------------------


def test_the_hosting_rules_are_read_and_shown(tmp_path: Path) -> None:
    policy = load_policy(write_policy(tmp_path, 'hosting = false\nhosting_bind = ["127.0.0.1", "10.1.2.0/24"]\n'))
    assert not policy.hosting
    assert dict(policy.rules())["hosting"] == "turned off"
    assert dict(policy.rules())["hosting_bind"] == "only 127.0.0.1, 10.1.2.0/24"
    assert [policy.hosting_allows(a) for a in ("127.0.0.1", "10.1.2.77", "10.1.3.1", "0.0.0.0", "::1")] == [
        True, True, False, False, False]
    assert dict(Policy().rules())["hosting"] == "allowed" and dict(Policy().rules())["hosting_bind"] == "any address"
    assert Policy().hosting_allows("0.0.0.0")
    assert load_policy(write_policy(tmp_path, 'hosting_bind = ["0.0.0.0/0"]\n')).hosting_allows("0.0.0.0")


@pytest.mark.parametrize(("text", "problem"), [
    ('hosting = "no"', "hosting: must be true or false"),
    ("hosting_bind = []", "hosting_bind: must be a list of addresses or networks"),
    ('hosting_bind = "127.0.0.1"', "hosting_bind: must be a list of addresses or networks"),
    ('hosting_bind = ["gpu-box.lan"]', "hosting_bind: 'gpu-box.lan' is not an IP address or network"),
    ('hosting_bind = ["10.1.2.5/24"]', "has host bits set"),
    ("hosting_bind = [7]", "hosting_bind: 7 is not an address or a network"),
])
def test_a_hosting_rule_that_is_not_valid_is_refused(tmp_path: Path, text: str, problem: str) -> None:
    path = write_policy(tmp_path, text)
    with pytest.raises(PolicyError, match="Enclave does not start") as caught:
        load_policy(path)
    assert problem in str(caught.value)


def test_hosting_turned_off_is_refused_naming_the_rule_and_audited(tmp_path: Path, enclave_home: Path) -> None:
    policy = write_policy(tmp_path / "admin", "hosting = false\naudit_log = true\n")
    line = one_error_line(enclave("host", home=enclave_home, env={"ENCLAVE_POLICY": str(policy)}))
    assert "Serving this machine's devices to other machines is turned off by your organisation" in line
    assert "(rule hosting = false)" in line and str(policy) in line
    refused = audit_events(enclave_home / "logs" / "audit.jsonl")[-1]
    assert refused["event"] == "policy.refused" and refused["details"]["rule"] == "hosting"
    assert refused["details"]["endpoint"] == f"127.0.0.1:{DEFAULT_PORT}"


def test_an_address_outside_hosting_bind_is_refused_before_any_warning(tmp_path: Path, enclave_home: Path) -> None:
    policy = write_policy(tmp_path / "admin", 'hosting_bind = ["127.0.0.1", "10.1.2.0/24"]\n')
    result = enclave("host", "--bind", "0.0.0.0", home=enclave_home, env={"ENCLAVE_POLICY": str(policy)})
    line = one_error_line(result)  # the one line: no warning printed for a host that will not start
    assert "does not allow hosting on 0.0.0.0 (rule hosting_bind allows only 127.0.0.1, 10.1.2.0/24)" in line
    assert "choose one of those with --bind" in line


def test_serving_beyond_loopback_warns_what_anyone_on_the_network_can_do() -> None:
    assert exposure_warning("127.0.0.1", 50052) is None
    everywhere = exposure_warning("0.0.0.0", 50052)
    assert everywhere is not None
    assert everywhere.startswith("Warning: llama.cpp's RPC protocol has no authentication and no encryption.")
    assert "this machine on port 50052 (every interface)" in everywhere
    assert "see the model's weights and activations" in everywhere and "network you trust" in everywhere
    assert "hosting and hosting_bind rules" in everywhere
    assert "Anyone who can reach 10.0.0.5:9000 can use this machine's devices" in exposure_warning("10.0.0.5", 9000)


def test_a_build_without_rpc_says_how_to_rebuild() -> None:
    script = ("from inference import ggml_backend\n"
              "ggml_backend.rpc_function = lambda symbol: None  # what a build without -DGGML_RPC=on answers\n"
              "from inference.rpc_host import main\n"
              "raise SystemExit(main(['--port', '50052']))\n")
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert run.returncode == 2
    assert run.stderr.strip().splitlines()[-1] == (
        "rpc_host: error: This Enclave was built without llama.cpp's RPC backend, so it cannot use or serve hosts. "
        'Rebuild it with `make` (which builds llama-cpp-python with CMAKE_ARGS="-DGGML_RPC=on").')


def test_bad_addresses_ports_and_devices_are_one_line(enclave_home: Path) -> None:
    assert "--bind needs an IPv4 address of this machine" in one_error_line(
        enclave("host", "--bind", "localhost", home=enclave_home))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        line = one_error_line(enclave("host", "--port", str(port), home=enclave_home))
    assert line == (f"enclave: error: port {port} on 127.0.0.1 is already in use (by another program, or another "
                    "Enclave); choose another with --port.")
    line = one_error_line(enclave("host", "--port", str(free_port()), "--device", "CUDA7", home=enclave_home))
    assert line == "enclave: error: llama.cpp has no device 'CUDA7' here (it has: CPU)."


# enclave host ----------------------------------------------------------------------------------------


def read_lines(stream: object, into: queue.Queue[str]) -> None:
    for line in stream:  # type: ignore[attr-defined]
        into.put(line.rstrip("\n"))


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM])
def test_enclave_host_serves_on_loopback_until_stopped(tmp_path: Path, enclave_home: Path, stop: int) -> None:
    """Ctrl-C in a terminal, SIGTERM from a service manager: the same clean, audited stop."""
    policy = write_policy(tmp_path / "admin", "audit_log = true\n")
    port = free_port()
    endpoint = f"127.0.0.1:{port}"
    process = subprocess.Popen(
        [sys.executable, "-m", "app", "host", "--port", str(port), "--device", "CPU", "--threads", "1"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "ENCLAVE_HOME": str(enclave_home), "ENCLAVE_POLICY": str(policy)})
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=read_lines, args=(process.stdout, lines), daemon=True).start()
    try:
        said = [lines.get(timeout=60) for _ in range(4)]
        assert said[0].startswith("Serving CPU (") and said[0].endswith(f" free) on {endpoint}.")
        assert said[1] == f"Add it in another Enclave on this machine with: enclave hosts add {endpoint}"
        assert said[3] == "Ctrl-C stops."
        assert check_reachable(endpoint) < 1 and handshake(endpoint)[0] == PROTOCOL_MAJOR
        process.send_signal(stop)
        assert process.wait(timeout=30) == 0, process.stderr.read() if process.stderr else ""
    finally:
        if process.poll() is None:
            process.kill()
    assert lines.get(timeout=5) == "Stopped."
    assert process.stderr is not None and process.stderr.read() == ""  # no warning on loopback, no traceback
    with pytest.raises(HostUnreachable, match="connection refused"):
        check_reachable(endpoint, timeout=1)  # the server process ended with it
    events = [(e["event"], e["details"]) for e in audit_events(enclave_home / "logs" / "audit.jsonl")]
    assert events == [("host.start", {"endpoint": endpoint, "devices": ["CPU"]}),
                      ("host.stop", {"endpoint": endpoint, "reason": "stopped"})]
