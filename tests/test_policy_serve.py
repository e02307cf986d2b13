"""The policy's rules for ``enclave serve`` (``serve``, ``serve_bind``, ``serve_keyless``) and for
remote model backends (``remote_hosts``): parsed, shown, refused with the rule named, and bad
values stopping Enclave with the problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.policy import Policy, PolicyError, load_policy


def policy(tmp_path: Path, text: str) -> Policy:
    path = tmp_path / "policy.toml"
    path.write_text(text)
    return load_policy(path)


def test_by_default_serving_is_allowed_anywhere_and_keyless_only_on_loopback() -> None:
    default = Policy()
    assert all(default.serve_refusal(address) is None for address in ("127.0.0.1", "0.0.0.0", "10.1.2.3", "::"))
    assert default.allows_keyless("127.0.0.1") and default.allows_keyless("localhost")
    assert default.allows_keyless("::1")
    assert not default.allows_keyless("0.0.0.0") and not default.allows_keyless("10.1.2.3")
    assert default.remote_host_refusal("http://gpu.corp.example:8000/v1") is None
    rules = dict(default.rules())
    assert rules["serve"] == "allowed" and rules["serve_bind"] == "any address"
    assert rules["serve_keyless"] == "requests without a key allowed on loopback only"
    assert rules["remote_hosts"] == "any server"


def test_serve_off_refuses_every_address_naming_the_rule(tmp_path: Path) -> None:
    off = policy(tmp_path, 'serve = "off"\n')
    for address in ("127.0.0.1", "0.0.0.0"):
        assert off.serve_refusal(address) == ('Serving models over HTTP is turned off by your organisation '
                                              '(rule serve = "off")')
    assert dict(off.rules())["serve"] == "turned off"


def test_serve_loopback_refuses_every_interface(tmp_path: Path) -> None:
    loopback = policy(tmp_path, 'serve = "loopback"\n')
    refusal = loopback.serve_refusal("0.0.0.0")
    assert refusal is not None and 'rule serve = "loopback"' in refusal and "0.0.0.0 is not a loopback" in refusal
    assert "--host 127.0.0.1" in refusal
    assert loopback.serve_refusal("10.1.2.3") is not None
    assert loopback.serve_refusal("127.0.0.1") is None and loopback.serve_refusal("localhost") is None
    assert "is not an IP address" in (loopback.serve_refusal("gpu-box.lan") or "")
    assert dict(loopback.rules())["serve"] == "this machine only (loopback)"


def test_serve_bind_allows_only_its_addresses(tmp_path: Path) -> None:
    bound = policy(tmp_path, 'serve_bind = ["127.0.0.1", "10.1.2.0/24"]\nserve_keyless = false\n')
    assert bound.serve_refusal("10.1.2.40") is None and bound.serve_refusal("127.0.0.1") is None
    refusal = bound.serve_refusal("0.0.0.0")
    assert refusal == ("Your organisation does not allow serving on 0.0.0.0 (rule serve_bind allows only "
                       "127.0.0.1, 10.1.2.0/24); choose one of those with --host")
    assert "rule serve_bind" in (bound.serve_refusal("10.1.3.1") or "")
    assert not bound.allows_keyless("127.0.0.1")  # serve_keyless = false: a key for every request
    assert dict(bound.rules())["serve_bind"] == "only 127.0.0.1, 10.1.2.0/24"
    assert dict(bound.rules())["serve_keyless"] == "every request needs a key"
    assert policy(tmp_path, 'serve_bind = ["0.0.0.0/0"]\n').serve_refusal("0.0.0.0") is None


def test_remote_hosts_allow_only_the_servers_listed(tmp_path: Path) -> None:
    remote = policy(tmp_path, 'remote_hosts = ["gpu.corp.example:8000", "vllm.corp.example", "10.2.0.0/16", '
                              '"[fd00::5]:8080"]\n')
    for allowed in ("http://gpu.corp.example:8000/v1", "https://VLLM.corp.example/v1", "http://vllm.corp.example:9",
                    "http://10.2.9.9:8000", "http://[fd00::5]:8080/v1"):
        assert remote.remote_host_refusal(allowed) is None, allowed
    refusal = remote.remote_host_refusal("https://gpu.corp.example/v1")  # port 443, not 8000
    assert refusal == ("Your organisation does not allow connecting to gpu.corp.example:443 (rule remote_hosts "
                       "allows only gpu.corp.example:8000, vllm.corp.example, 10.2.0.0/16, [fd00::5]:8080)")
    assert "rule remote_hosts" in (remote.remote_host_refusal("http://evil.example:8000") or "")
    assert "rule remote_hosts" in (remote.remote_host_refusal("http://10.3.0.1:8000") or "")
    assert "rule remote_hosts" in (remote.remote_host_refusal("http://[fd00::5]:8081") or "")
    assert "is not a server's address" in (remote.remote_host_refusal("ftp://gpu.corp.example") or "")
    assert "is not a server's address" in (Policy().remote_host_refusal("gpu.corp.example:8000") or "")
    assert dict(remote.rules())["remote_hosts"].startswith("only gpu.corp.example:8000, vllm.corp.example")
    nowhere = policy(tmp_path, "remote_hosts = []\n")
    assert nowhere.remote_host_refusal("http://10.0.0.1") == ("Your organisation does not allow connecting to "
                                                              "10.0.0.1:80 (rule remote_hosts allows no server)")
    assert dict(nowhere.rules())["remote_hosts"] == "no server"


@pytest.mark.parametrize(("text", "problem"), [
    ('serve = "lan"', 'serve: must be "off", "loopback" or "network", not \'lan\''),
    ("serve = false", 'serve: must be "off", "loopback" or "network", not False'),
    ("serve_bind = []", 'serve_bind: must be a list of addresses or networks, e.g. ["127.0.0.1", "10.1.2.0/24"]; '
                        'to forbid it, set serve = "off"'),
    ('serve_bind = ["gpu-box.lan"]', "serve_bind: 'gpu-box.lan' is not an IP address or network"),
    ('serve_keyless = "yes"', "serve_keyless: must be true or false, not 'yes'"),
    ('remote_hosts = "10.0.0.0/8"', "remote_hosts: must be a list of servers"),
    ('remote_hosts = ["gpu box"]', "remote_hosts: 'gpu box' is not a host, host:port, address or network"),
    ('remote_hosts = ["gpu.corp.example:70000"]', "the port must be between 1 and 65535"),
    ("remote_hosts = [8000]", "remote_hosts: 8000 is not a host, host:port, address or network"),
])
def test_bad_values_stop_enclave_with_the_problem(tmp_path: Path, text: str, problem: str) -> None:
    with pytest.raises(PolicyError) as info:
        policy(tmp_path, text + "\n")
    assert problem in str(info.value) and "Enclave does not start" in str(info.value)
