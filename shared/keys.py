"""Provider and broker API keys, encrypted at rest (the seed's SecureKeyStorage, made real).

Keys live in one file, `DATA_DIR/keys.enc`, mode 0600: a JSON object of name -> Fernet token
(AES-128-CBC + HMAC-SHA256, from the maintained `cryptography` package). The Fernet master key
comes from `TRADING_MASTER_KEY` when set, else from the operating system's keyring (macOS
Keychain, Windows Credential Locker, Secret Service), where it is created on first use. With
neither, storing a key fails with a message saying how to provide one: a key is never written
unencrypted, and no value is ever printed or logged.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken
from pydantic import SecretStr

KEYRING_SERVICE = "trading-platform"
KEYRING_USER = "master-key"
KEY_FILE = "keys.enc"
NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$")


class KeyStoreError(Exception):
    """The key store cannot do what was asked; the message says why and what to do."""


@dataclass(frozen=True)
class StoredKey:
    """A stored key's name and when it was set (never its value)."""

    name: str
    updated_at: str


def _keyring_master(create: bool) -> bytes | None:
    try:
        import keyring
        from keyring.errors import KeyringError, NoKeyringError
    except ImportError:  # keyring is optional
        return None
    try:
        value = keyring.get_password(KEYRING_SERVICE, KEYRING_USER)
        if value is None and create:
            value = Fernet.generate_key().decode()
            keyring.set_password(KEYRING_SERVICE, KEYRING_USER, value)
    except (NoKeyringError, KeyringError, RuntimeError):
        return None
    return value.encode() if value else None


class KeyStore:
    """Encrypted name -> secret storage in a 0600 file under DATA_DIR."""

    def __init__(self, data_dir: Path, master_key: SecretStr | None = None) -> None:
        self.path = Path(data_dir) / KEY_FILE
        self._master = master_key

    def _fernet(self, *, create: bool) -> Fernet:
        if self._master is not None and self._master.get_secret_value():
            raw = self._master.get_secret_value().encode()
            source = "TRADING_MASTER_KEY"
        else:
            found = _keyring_master(create)
            if found is None:
                raise KeyStoreError(
                    "no master key: set TRADING_MASTER_KEY (generate one with `trading keys "
                    "new-master-key`) or use a machine with an OS keyring"
                )
            raw, source = found, "the OS keyring"
        try:
            return Fernet(raw)
        except ValueError as e:
            raise KeyStoreError(
                f"the master key from {source} is not a Fernet key (32 url-safe base64 bytes)"
            ) from e

    def _read(self) -> dict[str, dict[str, str]]:
        if not self.path.exists():
            return {}
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except ValueError as e:
            raise KeyStoreError(f"{self.path} is not a key file") from e
        if not isinstance(data, dict):
            raise KeyStoreError(f"{self.path} is not a key file")
        return data

    def _write(self, data: dict[str, dict[str, str]]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".keys-", dir=self.path.parent)
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(data, f, indent=1, sort_keys=True)
            os.replace(tmp, self.path)  # atomic: a crash leaves the old file whole
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        os.chmod(self.path, 0o600)

    def set(self, name: str, value: SecretStr) -> None:
        """Store (or replace) the secret under name."""
        if not NAME.match(name):
            raise KeyStoreError(
                f"invalid key name {name!r}: letters, digits, _ . - (start with a letter)"
            )
        secret = value.get_secret_value()
        if not secret:
            raise KeyStoreError("refusing to store an empty key")
        token = self._fernet(create=True).encrypt(secret.encode()).decode()
        data = self._read()
        data[name] = {"token": token, "updated_at": datetime.now(UTC).isoformat()}
        self._write(data)

    def get(self, name: str) -> SecretStr:
        """Return the secret stored under name."""
        entry = self._read().get(name)
        if entry is None:
            raise KeyStoreError(f"no key named {name!r}")
        try:
            plain = self._fernet(create=False).decrypt(entry["token"].encode())
        except InvalidToken as e:
            raise KeyStoreError(f"key {name!r} cannot be decrypted with this master key") from e
        return SecretStr(plain.decode())

    def list(self) -> list[StoredKey]:
        """Return every stored key's name and update time, sorted by name."""
        return [
            StoredKey(name, entry.get("updated_at", ""))
            for name, entry in sorted(self._read().items())
        ]

    def delete(self, name: str) -> bool:
        """Forget the key under name; return False when there was none."""
        data = self._read()
        if data.pop(name, None) is None:
            return False
        self._write(data)
        return True
