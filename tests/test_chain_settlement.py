"""Settlement on a real EVM (in-process py-evm): deposits made on L1 are ingested once,
sealed blocks are committed in order, withdrawals are paid out with the ledger's proofs,
and the vault's USDC reconciles with the ledger's liabilities; a reorg below the cursor is
reported."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ledger import Ledger
from ledger.chain.settlement import commit_blocks, pay_withdrawals, reconcile
from ledger.chain.vault import ChainError, Vault
from ledger.chain.watcher import ReorgDetected, sync
from ledger.cli import main
from ledger.core.accounts import BRIDGE
from tests.anvil import running_anvil
from tests.conftest import ALICE, ALICE_WALLET, BOB, BOB_WALLET, OPERATOR

USDC = 10**6


def test_round_trip_deposit_withdraw_reconcile(book: Ledger, vault: Vault) -> None:
    vault.deposit(ALICE_WALLET.l1_account, 300 * USDC, ALICE)
    vault.deposit(BOB_WALLET.l1_account, 200 * USDC, BOB)
    vault.deposit(BOB_WALLET.l1_account, 50 * USDC, f"{ALICE}")  # BOB pays into ALICE's account
    report = sync(book, vault)
    assert (report.deposits, report.credited) == (3, 3)
    assert book.balance(ALICE).units == 350 * USDC and book.balance(BOB).units == 200 * USDC
    # Delivered again (the cursor reset by hand, as a restart from scratch would): nothing new.
    book.store.set_chain_cursor(vault.chain, vault.vault.address, 0, "0x" + "00" * 32)
    with pytest.raises(ReorgDetected):
        sync(book, vault)  # block 0's hash is not zero: reported, not absorbed
    genesis_hash = "0x" + bytes(vault.w3.eth.get_block(0)["hash"]).hex()
    book.store.set_chain_cursor(vault.chain, vault.vault.address, 0, genesis_hash)
    again = sync(book, vault)
    assert (again.deposits, again.credited) == (3, 0)  # read again, credited once
    assert book.balance(ALICE).units == 350 * USDC
    assert reconcile(book, vault).ok
    book.transfer(ALICE, BOB, "25", wallet=ALICE_WALLET, nonce=1)
    w1 = book.withdraw(ALICE, "100", wallet=ALICE_WALLET, nonce=2).seq
    w2 = book.withdraw(BOB, "10.5", wallet=BOB_WALLET, nonce=1).seq
    # Withdrawn on the ledger (waiting in system:withdrawals), not yet paid out: the vault
    # still holds it, and the ledger still owes it.
    rec = reconcile(book, vault)
    assert rec.ok and rec.pending == 110_500_000
    commits = commit_blocks(book, vault, OPERATOR.l1_account)
    assert [h.number for h, _ in commits] == [1] and all(gas < 150_000 for _, gas in commits)
    paid = pay_withdrawals(book, vault, BOB_WALLET.l1_account)
    assert [seq for seq, _ in paid] == [w1, w2]
    assert vault.balance(ALICE) == 800 * USDC  # 1,000 minted - 300 deposited + 100 paid out
    assert vault.balance(BOB) == 1_000 * USDC - 250 * USDC + 10_500_000
    assert pay_withdrawals(book, vault, BOB_WALLET.l1_account) == []  # nothing twice
    # Paid on chain but not yet recorded: the difference shows until the watcher runs.
    assert reconcile(book, vault).difference == -110_500_000
    report = sync(book, vault)
    assert (report.deposits, report.payouts) == (0, 2)
    assert sync(book, vault).payouts == 0  # finalised once
    final = reconcile(book, vault)
    assert final.ok and final.pending == 0, final.describe()
    assert vault.balance() == 550 * USDC - 110_500_000 == -book.balance(BRIDGE).units
    assert book.audit().ok


def test_committing_needs_the_operator_key(book: Ledger, pyevm_vault: Vault) -> None:
    vault = pyevm_vault
    book.deposit(ALICE, "1")
    with pytest.raises(ChainError):
        commit_blocks(book, vault, ALICE_WALLET.l1_account)
    assert vault.committed_block() == 0


def test_confirmations_hold_back_recent_deposits(book: Ledger, pyevm_vault: Vault) -> None:
    vault = pyevm_vault
    vault.deposit(ALICE_WALLET.l1_account, 5 * USDC, ALICE)
    assert sync(book, vault, confirmations=3).deposits == 0
    for _ in range(3):
        vault.w3.provider.ethereum_tester.mine_blocks()  # type: ignore[attr-defined]
    assert sync(book, vault, confirmations=3).credited == 1
    assert book.balance(ALICE).units == 5 * USDC


def test_a_reorg_below_the_cursor_is_reported(book: Ledger, pyevm_vault: Vault) -> None:
    vault = pyevm_vault
    tester = vault.w3.provider.ethereum_tester  # type: ignore[attr-defined]
    snapshot = tester.take_snapshot()
    vault.deposit(ALICE_WALLET.l1_account, 7 * USDC, ALICE)
    sync(book, vault)
    assert book.balance(ALICE).units == 7 * USDC
    tester.revert_to_snapshot(snapshot)  # the deposit's blocks are gone ...
    tester.mine_blocks(4)  # ... and others take their heights
    with pytest.raises(ReorgDetected, match="changed"):
        sync(book, vault)
    assert book.balance(ALICE).units == 7 * USDC  # nothing double-counted meanwhile


def test_ledger_devnet_end_to_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`ledger devnet --keep --json` on the in-process chain: deposits in, trading, blocks
    committed, withdrawals paid out, reconciled and audited; the database is kept."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LEDGER_DB_URL", raising=False)
    assert main(["devnet", "--keep", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["reconciled"] is True and summary["audit_ok"] is True
    assert summary["deposits_ingested"] == summary["wallets"] == 10
    assert summary["fills"] > 0 and summary["liquidations"] >= 1
    assert summary["withdrawals_paid"] == 4 and summary["blocks_committed"] >= 1
    assert 0 < summary["gas_per_commit"] < 150_000 and 0 < summary["gas_per_claim"] < 120_000
    assert (tmp_path / "ledger-devnet.db").exists()
    assert main(["audit", "--db", "sqlite:///ledger-devnet.db"]) == 0
    assert "intact" in capsys.readouterr().out
    # Without --keep the database is removed; an explicit non-empty --db is refused.
    assert main(["devnet"]) == 0
    assert not (tmp_path / "ledger-devnet.db").exists()
    capsys.readouterr()
    with Ledger.init(f"sqlite:///{tmp_path}/used.db", operator=OPERATOR):
        pass
    assert main(["devnet", "--db", f"sqlite:///{tmp_path}/used.db"]) == 2
    assert "empty ledger" in capsys.readouterr().err


def test_ledger_devnet_on_anvil(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The same session against a real JSON-RPC node."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LEDGER_DB_URL", raising=False)
    with running_anvil() as url:
        assert main(["devnet", "--rpc-url", url, "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["chain_id"] == 31337
    assert summary["reconciled"] is True and summary["audit_ok"] is True
    assert summary["withdrawals_paid"] == 4
