"""Encrypted keystore files (Ethereum keystore v3, scrypt), read and written by eth-account."""

from __future__ import annotations

import json
import os
from pathlib import Path

from eth_account import Account

from ledger.errors import KeystoreError


def create_keystore(path: Path, password: str) -> str:
    """Create a new key, encrypt it into ``path`` (mode 0600) and return its address.
    Refuses to overwrite an existing file: it may be someone's only copy of a key."""
    if not password:
        raise KeystoreError("refusing an empty keystore password")
    account = Account.create()
    encrypted = Account.encrypt(account.key, password)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError as exc:
        raise KeystoreError(f"{path} exists; choose another --out") from exc
    except OSError as exc:
        raise KeystoreError(f"cannot write {path}: {exc.strerror}") from exc
    with os.fdopen(fd, "w") as handle:
        json.dump(encrypted, handle)
    return str(account.address)


def load_keystore(path: Path, password: str) -> bytes:
    """The private key in ``path``; KeystoreError if unreadable or the password is wrong."""
    try:
        encrypted = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise KeystoreError(f"cannot read keystore {path}: {exc}") from exc
    try:
        return bytes(Account.decrypt(encrypted, password))
    except ValueError as exc:
        raise KeystoreError(f"cannot decrypt {path}: wrong password or damaged file") from exc
    except (KeyError, TypeError) as exc:
        raise KeystoreError(f"{path} is not an Ethereum v3 keystore") from exc
