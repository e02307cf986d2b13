"""The organisation's policy: a TOML file an administrator owns and users cannot override.

Where it is read from, in this order:

1. the system file, ``system_policy_path()`` — ``/etc/xdg/enclave/policy.toml`` on Linux and
   other Unix (fixed: ``XDG_CONFIG_DIRS`` is not consulted, since any user can set it),
   ``/Library/Application Support/enclave/policy.toml`` on macOS,
   ``C:\\ProgramData\\enclave\\policy.toml`` on Windows. When it exists it is in force, and
   ``ENCLAVE_POLICY`` is ignored;
2. otherwise the file ``ENCLAVE_POLICY`` names — for deployments without a system-wide
   folder (the environment is then the administrator's) and for tests;
3. otherwise there is no policy.

A policy that cannot be read or is not valid (a TOML error, an unknown key, a wrong type)
stops Enclave with the file and the problem: it fails closed, never open.

    downloads = false                     # no pull, search or catalog downloads
    export = false                        # no conversation or model export
    allowed_models = ["<sha256>", ...]    # every file of a model (each shard) must be listed
    data_dir = "/srv/enclave/{user}"      # everything under here, whatever ENCLAVE_HOME says
    max_library_mb = 200                  # extracted text per library, in millions of characters
    audit_log = true                      # or a path, e.g. "/var/log/enclave/audit.jsonl"
    hosting = false                       # no `enclave host`: this machine's devices are not served
    hosting_bind = ["127.0.0.1", "10.1.2.0/24"]  # the only addresses `enclave host` may listen on
    serve = "loopback"                    # `enclave serve`: "off", "loopback" (this machine only) or "network"
    serve_bind = ["127.0.0.1", "10.1.2.0/24"]    # the only addresses `enclave serve` may listen on
    serve_keyless = false                 # every request needs an API key, on loopback too
    remote_hosts = ["gpu.corp.example:8000", "10.2.0.0/16"]  # the only servers remote models may reach

``hosting`` and ``hosting_bind`` matter because llama.cpp's RPC protocol, which ``enclave host``
serves, has no authentication and no encryption: whoever reaches the address can use the
devices and see the model's weights and activations. By default hosting is allowed on any
address (``enclave host`` itself listens on 127.0.0.1 unless told otherwise); ``hosting_bind``
lists addresses and networks, and an address is allowed when it is one of them or inside one
(listening on every interface, 0.0.0.0, only when "0.0.0.0" or "0.0.0.0/0" is listed).

``serve`` and ``serve_bind`` do the same for ``enclave serve``, the OpenAI-compatible HTTP server:
by default it may listen on any address (``serve = "network"``); ``"loopback"`` keeps it to this
machine, ``"off"`` forbids it. ``serve_bind`` is read like ``hosting_bind``. ``serve_keyless``
(default true) lets requests without an API key in only while the server listens on loopback;
false asks a key of every request. The server asks ``serve_refusal`` and ``allows_keyless``.

``remote_hosts`` lists the servers a remote model backend may connect to: a host name
("gpu.corp.example", any port), a host and port ("gpu.corp.example:8000", "[fd00::5]:8000"), or
an address or network ("10.2.0.0/16", any port). A name matches a URL naming that host; a network
matches a URL written with an address in it (names are not resolved for the check: what a name
resolves to is not the policy's to trust). By default any server may be reached — but remote
backends obey the offline setting too. The backend asks ``remote_host_refusal(url)``.
"""

from __future__ import annotations

import ipaddress
import os
import re
import stat
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from platformdirs import site_config_path

from app.audit import os_user
from inference.errors import EnclaveError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

POLICY_ENV = "ENCLAVE_POLICY"
POLICY_NAME = "policy.toml"
SET_BY = "Set by your organisation"
_SHA256 = re.compile(r"[0-9a-f]{64}")
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
ServeRule = Literal["off", "loopback", "network"]
SERVE_RULES: tuple[ServeRule, ...] = ("off", "loopback", "network")
_LABEL = r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?"
_HOST_NAME = re.compile(rf"(?=.{{1,253}}$){_LABEL}(?:\.{_LABEL})*")
_DEFAULT_PORTS = {"http": 80, "https": 443}


class PolicyError(EnclaveError):
    """The policy file cannot be used; Enclave does not start."""


class PolicyRefusal(EnclaveError):
    """Something the policy does not allow was asked for."""


@dataclass(frozen=True)
class RemoteHost:
    """One ``remote_hosts`` entry: a host name or an address network, and a port (None: any)."""

    name: str | None = None  # lower case, no trailing dot
    network: IPNetwork | None = None
    port: int | None = None

    def matches(self, host: str, port: int) -> bool:
        if self.port is not None and port != self.port:
            return False
        if self.name is not None:
            return host == self.name
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            return False  # a name never matches a network: names are not resolved for the check
        return self.network is not None and ip.version == self.network.version and ip in self.network

    def __str__(self) -> str:
        where = self.name if self.name is not None else shown_network(self.network)  # type: ignore[arg-type]
        if self.port is None:
            return where
        return f"[{where}]:{self.port}" if ":" in where else f"{where}:{self.port}"


@dataclass(frozen=True)
class Policy:
    source: Path | None = None  # None: no policy in force
    downloads: bool = True
    export: bool = True
    allowed_models: frozenset[str] | None = None  # SHA-256 of every allowed model file; None: any model
    data_dir: Path | None = None
    max_library_mb: float | None = None
    audit_log: Path | bool = False  # True: audit.jsonl in the data folder's logs/
    hosting: bool = True
    hosting_bind: tuple[IPNetwork, ...] | None = None  # None: any address
    serve: ServeRule = "network"
    serve_bind: tuple[IPNetwork, ...] | None = None  # None: any address
    serve_keyless: bool = True  # requests without a key allowed while listening on loopback
    remote_hosts: tuple[RemoteHost, ...] | None = None  # None: any server

    @property
    def in_force(self) -> bool:
        return self.source is not None

    def audit_path(self, logs: Path) -> Path | None:
        if self.audit_log is True:
            return logs / "audit.jsonl"
        return self.audit_log or None

    def managed_settings(self) -> dict[str, Any]:
        """Settings the policy decides, with the value it imposes."""
        return {} if self.downloads else {"offline": True}

    def rules(self) -> list[tuple[str, str]]:
        """(key, what it means) for every rule, for ``doctor`` and ``policy show``."""
        allowed = self.allowed_models
        return [
            ("downloads", "allowed" if self.downloads else "turned off"),
            ("export", "allowed" if self.export else "turned off"),
            ("allowed_models", "any model" if allowed is None else f"only {len(allowed)} listed file hashes"),
            ("data_dir", str(self.data_dir) if self.data_dir else "not fixed"),
            ("max_library_mb", f"{self.max_library_mb:g} million characters of text per library"
             if self.max_library_mb is not None else "no limit"),
            ("audit_log", "on (the data folder's logs/audit.jsonl)" if self.audit_log is True
             else str(self.audit_log) if self.audit_log else "off"),
            ("hosting", "allowed" if self.hosting else "turned off"),
            ("hosting_bind", "any address" if self.hosting_bind is None
             else "only " + ", ".join(shown_network(network) for network in self.hosting_bind)),
            ("serve", {"off": "turned off", "loopback": "this machine only (loopback)",
                       "network": "allowed"}[self.serve]),
            ("serve_bind", "any address" if self.serve_bind is None
             else "only " + ", ".join(shown_network(network) for network in self.serve_bind)),
            ("serve_keyless", "requests without a key allowed on loopback only" if self.serve_keyless
             else "every request needs a key"),
            ("remote_hosts", "any server" if self.remote_hosts is None
             else "only " + ", ".join(map(str, self.remote_hosts)) if self.remote_hosts else "no server"),
        ]

    def hosting_allows(self, address: str) -> bool:
        """Whether ``hosting_bind`` lets a host listen on ``address`` (an IP address)."""
        return _bind_allowed(self.hosting_bind, ipaddress.ip_address(address))

    def serve_refusal(self, bind_address: str) -> str | None:
        """Why the policy does not let ``enclave serve`` listen on ``bind_address`` (an IP address,
        or "localhost"), naming the rule; None when it may. The sentence has no final full stop:
        ``Enforcer.refuse(rule, sentence)`` adds where the policy is."""
        if self.serve == "off":
            return 'Serving models over HTTP is turned off by your organisation (rule serve = "off")'
        ip = _bind_ip(bind_address)
        if ip is None:
            if self.serve == "network" and self.serve_bind is None:
                return None
            return (f"{bind_address!r} is not an IP address, and your organisation's serve rules are checked on "
                    "addresses; give one with --host (127.0.0.1 for this machine only)")
        if self.serve == "loopback" and not ip.is_loopback:
            return (f"Your organisation allows serving to this machine only (rule serve = \"loopback\"), and "
                    f"{bind_address} is not a loopback address; use --host 127.0.0.1")
        if not _bind_allowed(self.serve_bind, ip):
            allowed = ", ".join(shown_network(network) for network in self.serve_bind or ())
            return (f"Your organisation does not allow serving on {bind_address} (rule serve_bind allows only "
                    f"{allowed}); choose one of those with --host")
        return None

    def allows_keyless(self, bind_address: str) -> bool:
        """Whether requests without an API key may be served on ``bind_address``: only on loopback,
        and only while ``serve_keyless`` is true."""
        return self.serve_keyless and is_loopback(bind_address)

    def remote_host_refusal(self, url: str) -> str | None:
        """Why ``remote_hosts`` does not let a remote model backend connect to ``url``, naming the
        rule; None when it may (no final full stop, as ``serve_refusal``)."""
        try:
            parts = urlsplit(url.strip())
            host, port = parts.hostname, parts.port
        except ValueError as exc:
            return f"{url!r} is not a server's address ({exc})"
        if parts.scheme not in _DEFAULT_PORTS or not host:
            return f"{url!r} is not a server's address: give it as http://HOST:PORT or https://HOST:PORT"
        if self.remote_hosts is None:
            return None
        host = host.rstrip(".")
        port = port if port is not None else _DEFAULT_PORTS[parts.scheme]
        if any(allowed.matches(host, port) for allowed in self.remote_hosts):
            return None
        allowed = "only " + ", ".join(map(str, self.remote_hosts)) if self.remote_hosts else "no server"
        shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        return f"Your organisation does not allow connecting to {shown} (rule remote_hosts allows {allowed})"


def _bind_allowed(networks: tuple[IPNetwork, ...] | None, ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Whether a listening address is one of ``networks`` or inside one (None: any address)."""
    if networks is None:
        return True
    return any(ip.version == network.version and ip in network for network in networks)


def is_loopback(address: str) -> bool:
    """Whether a listening address reaches this machine only: "localhost" or a loopback IP. The
    one test for it: keyless use, TLS and the exposure warnings all ask it."""
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def _bind_ip(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """A listening address as an IP address ("localhost" is 127.0.0.1); None for another name."""
    address = address.strip().strip("[]")
    if address.lower() == "localhost":
        return ipaddress.IPv4Address("127.0.0.1")
    try:
        return ipaddress.ip_address(address)
    except ValueError:
        return None


def shown_network(network: IPNetwork) -> str:
    """"10.1.2.0/24", and a single address as itself ("127.0.0.1", not "127.0.0.1/32")."""
    return str(network.network_address) if network.num_addresses == 1 else str(network)


def system_policy_path() -> Path:
    if sys.platform in ("win32", "darwin"):
        return site_config_path("enclave", appauthor=False) / POLICY_NAME
    return Path("/etc/xdg/enclave") / POLICY_NAME


def policy_file() -> Path | None:
    """The file in force (see the module's docstring), or None."""
    system = system_policy_path()
    try:
        os.lstat(system)
    except (FileNotFoundError, NotADirectoryError):
        named = os.environ.get(POLICY_ENV)
        return Path(named).expanduser() if named else None
    except OSError as exc:  # it may be there: an unreadable folder is not "no policy"
        raise PolicyError(f"the policy {system} cannot be read ({exc.strerror or exc}). Enclave does not start "
                          "until it can be; ask your administrator.") from exc
    _check_only_an_administrator_can_change(system)
    return system


def _check_only_an_administrator_can_change(system: Path) -> None:
    """A system policy that a user could have written is no policy: refused (POSIX), so that a
    user cannot put a permissive one in place. On Windows the installer makes its folder
    writable by administrators only (installers/windows/enclave.iss)."""
    if os.name != "posix":
        return
    for path in (system.parent, system.resolve()):
        info = os.stat(path)
        if info.st_uid != 0 or info.st_mode & stat.S_IWOTH:
            who = f"owned by user id {info.st_uid}" if info.st_uid != 0 else "writable by every user"
            raise PolicyError(f"the policy {system} cannot be trusted: {path} is {who}. Enclave does not start "
                              "until only root can change it (chown root and chmod o-w); ask your administrator.")


def policy_in_force() -> Policy:
    path = policy_file()
    return load_policy(path) if path is not None else Policy()


def load_policy(path: Path) -> Policy:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise _invalid(path, exc.strerror or str(exc)) from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise _invalid(path, str(exc)) from exc
    values: dict[str, Any] = {}
    for key, value in data.items():
        if key not in _PARSERS:
            raise _invalid(path, f"unknown key {key!r} (known: {', '.join(_PARSERS)})")
        try:
            values[key] = _PARSERS[key](value)
        except ValueError as exc:
            raise _invalid(path, f"{key}: {exc}") from exc
    return Policy(source=path.absolute(), **values)


def _invalid(path: Path, problem: str) -> PolicyError:
    return PolicyError(f"the policy {path} is not valid: {problem}. Enclave does not start until it is fixed; "
                       "ask your administrator.")


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"must be true or false, not {value!r}")
    return value


def _hashes(value: Any) -> frozenset[str]:
    if not isinstance(value, list):
        raise ValueError("must be a list of SHA-256 hashes")
    for item in value:
        if not isinstance(item, str) or not _SHA256.fullmatch(item.strip().lower()):
            raise ValueError(f"{item!r} is not a SHA-256 hash (64 hexadecimal digits)")
    return frozenset(item.strip().lower() for item in value)


def _folder(value: Any) -> Path:
    """An absolute path; ``{user}`` becomes the account's name (one data folder per user)."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError("must be a path")
    path = Path(value.replace("{user}", os_user()))
    if not path.is_absolute():
        raise ValueError(f"{value!r} must be an absolute path")
    return path


def _megabytes(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ValueError(f"must be a positive number, not {value!r}")
    return float(value)


def _audit(value: Any) -> Path | bool:
    if not isinstance(value, (bool, str)):
        raise ValueError(f"must be true, false or a path, not {value!r}")
    return value if isinstance(value, bool) else _folder(value)


def _networks(value: Any, *, to_forbid: str = "hosting = false") -> tuple[IPNetwork, ...]:
    """Addresses ("10.1.2.3") and networks ("10.1.2.0/24"), at least one."""
    if not isinstance(value, list) or not value:
        raise ValueError("must be a list of addresses or networks, e.g. [\"127.0.0.1\", \"10.1.2.0/24\"]; to forbid "
                         f"it, set {to_forbid}")
    networks = []
    for item in value:
        if not isinstance(item, str):
            raise ValueError(f"{item!r} is not an address or a network")
        try:
            networks.append(ipaddress.ip_network(item.strip()))
        except ValueError as exc:
            raise ValueError(f"{item!r} is not an IP address or network ({exc})") from None
    return tuple(networks)


def _serve(value: Any) -> ServeRule:
    for rule in SERVE_RULES:
        if value == rule:
            return rule
    raise ValueError(f"must be \"off\", \"loopback\" or \"network\", not {value!r}")


def _serve_networks(value: Any) -> tuple[IPNetwork, ...]:
    return _networks(value, to_forbid='serve = "off"')


def _remote_hosts(value: Any) -> tuple[RemoteHost, ...]:
    """Host names, host:port, addresses and networks; an empty list allows no server at all."""
    if not isinstance(value, list):
        raise ValueError("must be a list of servers, e.g. [\"gpu.corp.example:8000\", \"10.2.0.0/16\"]")
    return tuple(_remote_host(item) for item in value)


def _remote_host(item: Any) -> RemoteHost:
    if not isinstance(item, str) or not item.strip():
        raise ValueError(f"{item!r} is not a host, host:port, address or network")
    text = item.strip().lower()
    try:
        return RemoteHost(network=ipaddress.ip_network(text.strip("[]")))
    except ValueError:
        pass
    host, port = text, None
    split = re.fullmatch(r"\[([0-9a-f:.]+)\]:(\d+)|([^:\[\]]+):(\d+)", text)
    if split:
        host = split.group(1) or split.group(3)
        port = int(split.group(2) or split.group(4))
        if not 0 < port < 65536:
            raise ValueError(f"{item!r}: the port must be between 1 and 65535")
    try:
        return RemoteHost(network=ipaddress.ip_network(host), port=port)
    except ValueError:
        pass
    host = host.rstrip(".")
    if not _HOST_NAME.fullmatch(host):
        raise ValueError(f"{item!r} is not a host, host:port, address or network")
    return RemoteHost(name=host, port=port)


_PARSERS: dict[str, Callable[[Any], Any]] = {
    "downloads": _bool, "export": _bool, "allowed_models": _hashes, "data_dir": _folder,
    "max_library_mb": _megabytes, "audit_log": _audit, "hosting": _bool, "hosting_bind": _networks,
    "serve": _serve, "serve_bind": _serve_networks, "serve_keyless": _bool, "remote_hosts": _remote_hosts,
}
