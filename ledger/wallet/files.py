"""Where the CLI finds keys and passwords: keystore files, environment, a prompt."""

from __future__ import annotations

import getpass
import os
import sys
from pathlib import Path

from ledger.errors import KeystoreError
from ledger.wallet.keystore import create_keystore, load_keystore
from ledger.wallet.signer import Wallet

PASSWORD_ENV = "LEDGER_KEYSTORE_PASSWORD"
OPERATOR_KEYSTORE_ENV = "LEDGER_OPERATOR_KEYSTORE"
OPERATOR_PASSWORD_ENV = "LEDGER_OPERATOR_PASSWORD"
DEFAULT_OPERATOR_KEYSTORE = "operator.json"


def password(envs: tuple[str, ...], prompt: str, confirm: bool = False) -> str:
    """From the first set environment variable, else from a prompt (never an argument)."""
    for name in envs:
        value = os.environ.get(name)
        if value:
            return value
    if not sys.stdin.isatty():
        raise KeystoreError(f"no keystore password: set {envs[0]} or run in a terminal")
    first = getpass.getpass(prompt)
    if confirm and getpass.getpass("repeat the password: ") != first:
        raise KeystoreError("the passwords differ")
    return first


def new_wallet_file(path: Path) -> str:
    """Create an encrypted keystore at ``path``; returns its address."""
    return create_keystore(path, password((PASSWORD_ENV,), f"password for {path}: ", True))


def open_wallet(path: Path, l1_chain_id: int) -> Wallet:
    """The wallet in keystore ``path``."""
    key = load_keystore(path, password((PASSWORD_ENV,), f"password for {path}: "))
    return Wallet(key, l1_chain_id)


def operator_path() -> Path:
    """``LEDGER_OPERATOR_KEYSTORE``, else ``operator.json`` in the current folder."""
    return Path(os.environ.get(OPERATOR_KEYSTORE_ENV) or DEFAULT_OPERATOR_KEYSTORE)


def _operator_password(path: Path, confirm: bool = False) -> str:
    return password(
        (OPERATOR_PASSWORD_ENV, PASSWORD_ENV), f"operator keystore password ({path}): ", confirm
    )


def open_operator(l1_chain_id: int, create: bool = False) -> Wallet:
    """The operator wallet; with ``create``, make its keystore first if it is missing."""
    path = operator_path()
    if create and not path.exists():
        create_keystore(path, _operator_password(path, confirm=True))
    if not path.exists():
        raise KeystoreError(
            f"no operator keystore at {path}: run `ledger init` or set {OPERATOR_KEYSTORE_ENV}"
        )
    return Wallet(load_keystore(path, _operator_password(path)), l1_chain_id)
