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

``hosting`` and ``hosting_bind`` matter because llama.cpp's RPC protocol, which ``enclave host``
serves, has no authentication and no encryption: whoever reaches the address can use the
devices and see the model's weights and activations. By default hosting is allowed on any
address (``enclave host`` itself listens on 127.0.0.1 unless told otherwise); ``hosting_bind``
lists addresses and networks, and an address is allowed when it is one of them or inside one
(listening on every interface, 0.0.0.0, only when "0.0.0.0" or "0.0.0.0/0" is listed).
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
from typing import Any

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


class PolicyError(EnclaveError):
    """The policy file cannot be used; Enclave does not start."""


class PolicyRefusal(EnclaveError):
    """Something the policy does not allow was asked for."""


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
        ]

    def hosting_allows(self, address: str) -> bool:
        """Whether ``hosting_bind`` lets a host listen on ``address`` (an IP address)."""
        if self.hosting_bind is None:
            return True
        ip = ipaddress.ip_address(address)
        return any(ip.version == network.version and ip in network for network in self.hosting_bind)


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


def _networks(value: Any) -> tuple[IPNetwork, ...]:
    """Addresses ("10.1.2.3") and networks ("10.1.2.0/24"), at least one."""
    if not isinstance(value, list) or not value:
        raise ValueError("must be a list of addresses or networks, e.g. [\"127.0.0.1\", \"10.1.2.0/24\"]; to forbid "
                         "hosting, set hosting = false")
    networks = []
    for item in value:
        if not isinstance(item, str):
            raise ValueError(f"{item!r} is not an address or a network")
        try:
            networks.append(ipaddress.ip_network(item.strip()))
        except ValueError as exc:
            raise ValueError(f"{item!r} is not an IP address or network ({exc})") from None
    return tuple(networks)


_PARSERS: dict[str, Callable[[Any], Any]] = {
    "downloads": _bool, "export": _bool, "allowed_models": _hashes, "data_dir": _folder,
    "max_library_mb": _megabytes, "audit_log": _audit, "hosting": _bool, "hosting_bind": _networks,
}
