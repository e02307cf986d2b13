"""A keyring in a dict, so that tests never touch the machine's password store
(``conftest.memory_keyring`` installs one for every test)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from keyring.backend import KeyringBackend
from keyring.errors import PasswordDeleteError


class MemoryKeyring(KeyringBackend):
    priority = 1  # type: ignore[assignment]

    def __init__(self) -> None:
        super().__init__()
        self.passwords: dict[tuple[str, str], str] = {}

    def get_password(self, service: str, username: str) -> str | None:
        return self.passwords.get((service, username))

    def set_password(self, service: str, username: str, password: str) -> None:
        self.passwords[(service, username)] = password

    def delete_password(self, service: str, username: str) -> None:
        if self.passwords.pop((service, username), None) is None:
            raise PasswordDeleteError("no such password")


class FileKeyring(MemoryKeyring):
    """The same, kept in the JSON file ``$ENCLAVE_TEST_KEYRING``, for tests that run ``enclave``
    as a process: ``PYTHON_KEYRING_BACKEND=tests.memory_keyring.FileKeyring``."""

    def __init__(self) -> None:
        super().__init__()
        self.file = Path(os.environ.get("ENCLAVE_TEST_KEYRING", os.devnull))  # keyring makes one of each backend
        if self.file.is_file():
            self.passwords = {tuple(k.split("\n", 1)): v for k, v in json.loads(self.file.read_text()).items()}

    def set_password(self, service: str, username: str, password: str) -> None:
        super().set_password(service, username, password)
        self._save()

    def delete_password(self, service: str, username: str) -> None:
        super().delete_password(service, username)
        self._save()

    def _save(self) -> None:
        self.file.write_text(json.dumps({f"{s}\n{u}": p for (s, u), p in self.passwords.items()}))
