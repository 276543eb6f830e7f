"""Encryption at rest for payloads and results (job records, dead letters).

With `[security] payload_key` (or `payload_key_file`) set, values are sealed with Fernet
(AES-128-CBC + HMAC-SHA256, from the `cryptography` package) under the first key and opened with
any listed key (MultiFernet), so a new key can be put in front while old values stay readable;
`jobrunner keys rotate` then re-seals them under it. A sealed value is marked by its prefix, so
values written in clear before a key was set still read. Without a key, values are stored in
clear, as before, and a sealed value is an error naming the setting.
"""

from __future__ import annotations

from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from jobrunner.config import ConfigError, JobrunnerError, Settings

SEALED = "fernet:"  # prefix of a sealed value


class Cipher:
    """Seals with the first key, opens with any; with no key, a pass-through."""

    def __init__(self, keys: list[str] | None = None) -> None:
        try:
            self._fernet = MultiFernet([Fernet(key.encode()) for key in keys]) if keys else None
        except ValueError:
            raise ConfigError(
                "security.payload_key: a key is not a Fernet key (`jobrunner keys generate`)"
            ) from None

    @property
    def enabled(self) -> bool:
        return self._fernet is not None

    def seal(self, text: str) -> str:
        if self._fernet is None:
            return text
        return SEALED + self._fernet.encrypt(text.encode()).decode()

    def seal_once(self, text: str) -> str:
        """`text` sealed, unless it is sealed already: a value copied from another record stays
        as it is, under whichever key sealed it (this host may not hold that key)."""
        return text if text.startswith(SEALED) else self.seal(text)

    def open(self, stored: str) -> str:
        if not stored.startswith(SEALED):
            return stored  # written in clear (before a key was set)
        if self._fernet is None:
            raise JobrunnerError(
                "this value is encrypted: set security.payload_key (or payload_key_file) to read it"
            )
        try:
            return self._fernet.decrypt(stored.removeprefix(SEALED).encode()).decode()
        except InvalidToken:
            raise JobrunnerError("no configured payload key opens this value") from None

    def reseal(self, stored: str) -> str:
        """`stored` sealed under the first key (a clear value gets sealed too)."""
        if self._fernet is None:
            raise ConfigError("no payload key set: nothing to rotate to")
        if not stored.startswith(SEALED):
            return self.seal(stored)
        try:
            token = self._fernet.rotate(stored.removeprefix(SEALED).encode())
        except InvalidToken:
            raise JobrunnerError("no configured payload key opens a stored value") from None
        return SEALED + token.decode()


CLEAR = Cipher()


def cipher(settings: Settings) -> Cipher:
    """The configured cipher: keys from payload_key (comma-separated), then payload_key_file."""
    keys = [k.strip() for k in settings.security.payload_key.split(",") if k.strip()]
    if settings.security.payload_key_file:
        path = Path(settings.security.payload_key_file)
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except OSError as error:
            raise ConfigError(f"security.payload_key_file {path}: {error.strerror}") from None
        keys += [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    return Cipher(keys) if keys else CLEAR


def new_key() -> str:
    return Fernet.generate_key().decode()
