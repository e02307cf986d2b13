"""The policy applied: the few checks the services make at their choke points (load, import,
library growth, export, download), each refusal audited, and the audit log's other records.

``Enforcer()`` — no policy, no log — is what the repositories use unless ``Services``
gives them the one in force.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from app.audit import AuditLog
from app.hashing import sha256_file
from app.paths import AppPaths, app_paths
from app.policy import Policy, PolicyRefusal, policy_in_force

_FileStamp = tuple[str, int, int, int, int, int]


@dataclass
class Enforcer:
    policy: Policy = field(default_factory=Policy)
    audit: AuditLog | None = None
    _hashes: dict[_FileStamp, str] = field(default_factory=dict, repr=False)

    @classmethod
    def in_force(cls, paths: AppPaths | None = None, policy: Policy | None = None) -> Enforcer:
        """The policy in force (``policy``, when the caller read it), with its audit log opened
        (refused at once if it cannot be written)."""
        policy = policy if policy is not None else policy_in_force()
        where = policy.audit_path((paths or app_paths(policy)).logs) if policy.audit_log else None
        return cls(policy, AuditLog(where) if where else None)

    def record(self, event: str, **details: Any) -> None:
        """One audit record. Give names, ids, paths and hashes — never text a user wrote or read."""
        if self.audit is not None:
            self.audit.append(event, details)

    def refuse(self, rule: str, message: str, **details: Any) -> NoReturn:
        self.record("policy.refused", rule=rule, **details)
        raise PolicyRefusal(f"{message} ({self._source()}).")

    def _source(self) -> str:
        return f"your organisation's policy, {self.policy.source}"

    # The checks --------------------------------------------------------------------------

    def check_downloads(self, what: str) -> None:
        if not self.policy.downloads:
            self.refuse("downloads", "Downloads are turned off by your organisation. Copy the GGUF file onto this "
                        "machine and import it", action=what)

    def check_export(self, what: str, **details: Any) -> None:
        if not self.policy.export:
            self.refuse("export", f"Exporting ({what}) is turned off by your organisation", action=what, **details)

    def check_model(self, name: str, hashes: Sequence[str], action: str) -> None:
        """Every file of the model (each shard) must be on the allow-list."""
        allowed = self.policy.allowed_models
        missing = [sha for sha in hashes if allowed is not None and sha not in allowed]
        if missing:
            self.refuse("allowed_models", f"{name} is not on your organisation's list of allowed models (SHA-256 "
                        f"{missing[0]} is not listed); ask your administrator to add it", action=action,
                        model=name, sha256=list(hashes))

    def admit_load(self, name: str, files: Sequence[Path]) -> list[str]:
        """The files' SHA-256 (when the allow-list or the audit log needs them), checked
        against the allow-list. The bytes are hashed, not the registry's record believed;
        a file unchanged since this process last hashed it is not read again."""
        if self.policy.allowed_models is None and self.audit is None:
            return []
        hashes = [self._hash(path) for path in files]
        self.check_model(name, hashes, "load")
        return hashes

    def _hash(self, path: Path) -> str:
        s = path.stat()
        stamp = (str(path.resolve()), s.st_dev, s.st_ino, s.st_size, s.st_mtime_ns, s.st_ctime_ns)
        if stamp not in self._hashes:
            self._hashes[stamp] = sha256_file(path)
        return self._hashes[stamp]

    def check_library_size(self, library: str, current_chars: int, adding_chars: int, path: str) -> None:
        limit = self.policy.max_library_mb
        if limit is not None and current_chars + adding_chars > limit * 1_000_000:
            self.refuse("max_library_mb", f"{path} would take library {library!r} past {limit:g} million "
                        "characters of text, the most your organisation allows", library=library, path=path)
