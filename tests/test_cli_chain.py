"""The chain commands against anvil: `vault-deploy`, `watch`, `settle`, `reconcile`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ledger import Ledger
from ledger.chain.vault import Vault, connect
from ledger.cli import main
from tests.anvil import running_anvil
from tests.conftest import ALICE, ALICE_WALLET, open_book
from tests.test_cli import PASSWORD, write_keystore

USDC = 10**6


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_deploy_watch_settle_reconcile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("LEDGER_KEYSTORE_PASSWORD", PASSWORD)
    monkeypatch.setenv("LEDGER_OPERATOR_KEYSTORE", write_keystore(tmp_path / "op.json", "operator"))
    db = f"sqlite:///{tmp_path}/ledger.db"
    open_book(db).close()
    with running_anvil() as rpc:
        code, out, err = run(
            capsys, "vault-deploy", "--rpc-url", rpc, "--fund-from-node", "--json", "--db", db
        )
        assert (code, err) == (0, "")
        address = json.loads(out)["vault"]
        chain = ("--rpc-url", rpc, "--vault", address, "--db", db)
        vault = Vault.at(connect(rpc), address)
        payer = vault.w3.eth.accounts[1]  # anvil unlocks it
        for call in (
            vault.usdc.functions.mint(payer, 1_000 * USDC),
            vault.usdc.functions.approve(vault.vault.address, 1_000 * USDC),
            vault.vault.functions.deposit(400 * USDC, vault.w3.to_checksum_address(ALICE)),
        ):
            vault.w3.eth.wait_for_transaction_receipt(call.transact({"from": payer}))
        code, out, _ = run(capsys, "watch", *chain)
        assert code == 0 and "1 deposits, 1 newly credited" in out
        code, out, _ = run(capsys, "watch", *chain)
        assert code == 0 and "0 deposits" in out  # resumed from the cursor
        with Ledger(db) as book:
            assert book.balance(ALICE).units == 400 * USDC
            book.withdraw(ALICE, "150", wallet=ALICE_WALLET, nonce=1)
        code, out, _ = run(capsys, "reconcile", *chain)
        assert code == 0 and out.startswith("reconciled:") and "150.00 in withdrawals" in out
        code, out, _ = run(capsys, "settle", *chain)
        assert code == 0 and "block 1 committed" in out and "paid" in out
        assert vault.balance(ALICE) == 150 * USDC
        assert "1 withdrawals finalised" in out
        code, out, _ = run(capsys, "settle", *chain)  # the payout's block
        assert code == 0 and out.startswith("block 2 committed")
        code, out, _ = run(capsys, "settle", *chain)
        assert (code, out) == (0, "nothing to settle: every sealed block is committed\n")
        # USDC sent to the vault outside a deposit is a difference, reported with exit 1.
        tx = vault.usdc.functions.mint(vault.vault.address, 5 * USDC).transact({"from": payer})
        vault.w3.eth.wait_for_transaction_receipt(tx)
        code, out, _ = run(capsys, "reconcile", *chain)
        assert code == 1 and out.startswith("MISMATCH of 5.00 USDC")
