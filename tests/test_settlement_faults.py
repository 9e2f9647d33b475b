"""Faults of settlement on a real EVM (the in-process py-evm, and anvil where a real node is
needed): the watcher killed mid-sync and restarted (in process, and the `ledger watch`
process SIGKILLed), deposits reorged out before they were confirmed, a reorg below the
watcher's cursor, bad withdrawal claims made from the ledger's own proofs, and one deposit
event delivered twice in one answer.

After each fault: every deposit on chain is credited exactly once, every withdrawal the
vault paid is finalised exactly once, balances are exact, the vault reconciles with the
ledger and the audit replays the journal from genesis intact.
"""

from __future__ import annotations

import ast
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from web3 import EthereumTesterProvider, Web3
from web3.types import RPCEndpoint

from ledger import Ledger
from ledger.chain import watcher
from ledger.chain.settlement import commit_blocks, pay_withdrawals, reconcile
from ledger.chain.vault import ChainError, Deposit, Vault, hex_hash
from ledger.chain.watcher import ReorgDetected, credit, sync
from ledger.cli import main
from ledger.core.accounts import BRIDGE, WITHDRAWALS
from ledger.core.journal import TxKind, TxRequest
from ledger.core.withdrawals import Withdrawal, WithdrawalProof
from ledger.errors import NotFound
from ledger.store.sql import Receipt
from tests.anvil import running_anvil
from tests.conftest import ALICE, ALICE_WALLET, BOB, BOB_WALLET, CAROL, OPERATOR, deployed_vault
from tests.test_cli import PASSWORD, write_keystore

USDC = 10**6
MINTED = 1_000 * USDC  # each of ALICE's and BOB's L1 accounts
ROOT = Path(__file__).resolve().parent.parent
ACCOUNTS = (ALICE, BOB, CAROL)


# ---------------------------------------------------------------------- chains


@pytest.fixture
def anvil_vault() -> Iterator[Vault]:
    with running_anvil() as url:
        yield deployed_vault(url)


def in_process(vault: Vault) -> bool:
    return isinstance(vault.w3.provider, EthereumTesterProvider)


def rpc(vault: Vault, method: str, *params: Any) -> Any:
    """Call a node's own JSON-RPC method (anvil's ``evm_*``/``anvil_*``); its result."""
    answer = vault.w3.provider.make_request(RPCEndpoint(method), list(params))
    assert "error" not in answer, answer
    return answer["result"]


def snapshot(vault: Vault) -> Any:
    """The chain's current state, to revert to (a reorg's fork point)."""
    if in_process(vault):
        return vault.w3.provider.ethereum_tester.take_snapshot()  # type: ignore[attr-defined]
    return rpc(vault, "evm_snapshot")


def revert(vault: Vault, snapshot_id: Any) -> None:
    """Drop every block after the snapshot: whatever they held is off the chain."""
    if in_process(vault):
        vault.w3.provider.ethereum_tester.revert_to_snapshot(snapshot_id)  # type: ignore[attr-defined]
    else:
        assert rpc(vault, "evm_revert", snapshot_id) is True


def mine(vault: Vault, blocks: int) -> None:
    if in_process(vault):
        vault.w3.provider.ethereum_tester.mine_blocks(blocks)  # type: ignore[attr-defined]
    else:
        rpc(vault, "anvil_mine", hex(blocks))


def head(vault: Vault) -> int:
    return int(vault.w3.eth.block_number)


def chain_deposits(vault: Vault) -> list[Deposit]:
    return vault.deposits(0, head(vault))


def cursor(book: Ledger, vault: Vault) -> tuple[int, str] | None:
    return book.store.chain_cursor(vault.chain, vault.vault.address)


# ---------------------------------------------------------------------- ledger state


def units(book: Ledger, account: str) -> int:
    """USDC of ``account`` (0 for a user account that never received any)."""
    try:
        return book.balance(account).units
    except NotFound:
        return 0


def users(book: Ledger) -> dict[str, int]:
    return {a: units(book, a) for a in ACCOUNTS}


def balances(book: Ledger) -> dict[str, int]:
    return {a: units(book, a) for a in (*ACCOUNTS, WITHDRAWALS, BRIDGE)}


def kinds(book: Ledger) -> Counter[str]:
    return Counter(tx.kind for tx in book.store.iter_transactions())


def assert_settled(book: Ledger, vault: Vault, expected: dict[str, int]) -> None:
    """No loss, no duplicate: each deposit event on chain is one journal deposit (by its
    key and by the vault's deposit id), each ``WithdrawalPaid`` one payout; the user
    balances are ``expected``; nothing is left unrecorded; reconciled and audited."""
    on_chain = chain_deposits(vault)
    credited = [
        (tx.key, json.loads(tx.metadata)["deposit_id"])
        for tx in book.store.iter_transactions()
        if tx.kind == TxKind.DEPOSIT.value and tx.key.startswith("l1/")
    ]
    assert sorted(credited) == sorted((d.key, d.deposit_id) for d in on_chain)
    assert len({deposit_id for _, deposit_id in credited}) == len(credited)
    paid = sorted(
        int(json.loads(tx.metadata)["withdrawal"])
        for tx in book.store.iter_transactions()
        if tx.kind == TxKind.PAYOUT.value
    )
    assert paid == sorted(p.seq for p in vault.payouts())
    assert users(book) == expected
    assert book.balance(WITHDRAWALS).units == 0  # every withdrawal is paid and finalised
    rec = reconcile(book, vault)
    assert rec.ok and rec.pending == 0, rec.describe()
    assert vault.balance() == sum(d.amount for d in on_chain) - sum(
        p.amount for p in vault.payouts()
    )
    report = book.audit()
    assert report.ok, report.divergence
    again = sync(book, vault)
    assert (again.deposits, again.credited, again.payouts) == (0, 0, 0)


# ---------------------------------------------------------------------- claims


def revert_selector(error: ChainError) -> bytes:
    """The first four bytes of a refused transaction's revert data (its custom error):
    web3 gives them as hex from a node, eth-tester as a bytes literal in its message."""
    cause = error.__cause__
    data = getattr(cause, "data", None)
    if isinstance(data, str):
        return bytes.fromhex(data.removeprefix("0x"))[:4]
    message = str(cause.args[0]) if cause is not None and cause.args else ""
    prefix = "execution reverted: "
    assert message.startswith(prefix), f"not a revert: {error!r}"
    raw = ast.literal_eval(message.removeprefix(prefix))
    assert isinstance(raw, bytes)
    return raw[:4]


def selector(signature: str) -> bytes:
    return bytes(Web3.keccak(text=signature)[:4])


def proof_from_cli(db_url: str, seq: int, capsys: pytest.CaptureFixture[str]) -> WithdrawalProof:
    """What `ledger withdrawal-proof SEQ` prints, read back into a proof."""
    capsys.readouterr()
    assert main(["withdrawal-proof", str(seq), "--db", db_url]) == 0
    data = json.loads(capsys.readouterr().out)
    return WithdrawalProof(
        int(data["block"]),
        Withdrawal(int(data["seq"]), str(data["recipient"]), int(data["amount"])),
        int(data["index"]),
        int(data["count"]),
        tuple(bytes.fromhex(s.removeprefix("0x")) for s in data["siblings"]),
        bytes.fromhex(data["withdrawal_root"].removeprefix("0x")),
    )


def with_withdrawal(proof: WithdrawalProof, **changes: Any) -> WithdrawalProof:
    return dataclasses.replace(proof, withdrawal=dataclasses.replace(proof.withdrawal, **changes))


# ---------------------------------------------------------------------- keystore


@pytest.fixture
def operator_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The operator's keystore for the chain commands, set here and returned as the
    environment of a `ledger` subprocess."""
    env = {
        "LEDGER_KEYSTORE_PASSWORD": PASSWORD,
        "LEDGER_OPERATOR_KEYSTORE": write_keystore(tmp_path / "operator.json", "operator"),
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("LEDGER_DB_URL", raising=False)
    monkeypatch.delenv("LEDGER_OPERATOR_PASSWORD", raising=False)
    return {**os.environ, **env}


# ====================================================================== 1. killed mid-sync


class Killed(Exception):
    """The watcher's process dies here."""


def _paid_out_then_more_deposits(book: Ledger, vault: Vault) -> tuple[list[int], dict[str, int]]:
    """Deposits credited, two withdrawals committed and paid on chain but not yet recorded,
    then five more deposits not yet read; the withdrawals and the final user balances."""
    vault.deposit(ALICE_WALLET.l1_account, 300 * USDC, ALICE)
    vault.deposit(BOB_WALLET.l1_account, 200 * USDC, BOB)
    assert sync(book, vault).credited == 2
    withdrawals = [
        book.withdraw(ALICE, "40", wallet=ALICE_WALLET, nonce=1).seq,
        book.withdraw(BOB, "15.5", wallet=BOB_WALLET, nonce=1).seq,
    ]
    assert [h.number for h, _ in commit_blocks(book, vault, OPERATOR.l1_account)] == [1]
    assert [seq for seq, _ in pay_withdrawals(book, vault, BOB_WALLET.l1_account)] == withdrawals
    expected = {ALICE: 260 * USDC, BOB: 184_500_000, CAROL: 0}
    for wallet, account, amount in (
        (ALICE_WALLET, ALICE, 11_000_001),
        (BOB_WALLET, BOB, 22_000_002),
        (ALICE_WALLET, CAROL, 33_000_003),
        (BOB_WALLET, ALICE, 44_000_004),
        (BOB_WALLET, CAROL, 55_000_005),
    ):
        vault.deposit(wallet.l1_account, amount, account)
        expected[account] += amount
    return withdrawals, expected


@pytest.mark.parametrize(
    ("dies", "written", "credited", "finalised"),
    [
        # submit calls: deposit batches of 2 (three of them), then the payouts
        pytest.param("submit 2", 2, 3, 2, id="after-the-first-deposit-batch"),
        pytest.param("submit 4", 5, 0, 2, id="after-the-deposits-before-the-payouts"),
        pytest.param("cursor", 7, 0, 0, id="after-the-payouts-before-the-cursor"),
    ],
)
def test_a_sync_killed_midway_resumes_without_loss_or_duplicate(
    book: Ledger,
    pyevm_vault: Vault,
    monkeypatch: pytest.MonkeyPatch,
    dies: str,
    written: int,
    credited: int,
    finalised: int,
) -> None:
    vault = pyevm_vault
    withdrawals, expected = _paid_out_then_more_deposits(book, vault)
    before, seq, kept = cursor(book, vault), book.store.head().seq, balances(book)
    assert before is not None and book.balance(WITHDRAWALS).units == 55_500_000

    monkeypatch.setattr(watcher, "MAX_BATCH", 2)
    submit, calls = book.submit, 0

    def dying_submit(requests: Sequence[TxRequest]) -> list[Receipt]:
        nonlocal calls
        calls += 1
        if dies == f"submit {calls}":
            raise Killed(dies)
        return submit(requests)

    def dying_cursor(*_: object) -> None:
        raise Killed(dies)

    monkeypatch.setattr(book, "submit", dying_submit)
    if dies == "cursor":
        monkeypatch.setattr(book.store, "set_chain_cursor", dying_cursor)
    with pytest.raises(Killed):
        sync(book, vault)
    # What the dead sync left: whole batches, in chain order, and no cursor move.
    assert book.store.head().seq == seq + written
    unread = chain_deposits(vault)[2:]
    stored = [d.key for d in unread if book.store.transaction_by_key(d.key) is not None]
    assert stored == [d.key for d in unread[: min(written, len(unread))]]
    assert cursor(book, vault) == before
    assert kinds(book)[TxKind.PAYOUT.value] == (2 if dies == "cursor" else 0)
    assert book.balance(WITHDRAWALS).units == (0 if dies == "cursor" else kept[WITHDRAWALS])

    monkeypatch.undo()  # restarted: the watcher as shipped
    report = sync(book, vault)
    assert (report.from_block, report.to_block) == (before[0] + 1, head(vault))
    assert (report.deposits, report.credited, report.payouts) == (5, credited, finalised)
    end = head(vault)
    assert cursor(book, vault) == (end, hex_hash(vault.w3.eth.get_block(end)["hash"]))
    assert kinds(book)[TxKind.DEPOSIT.value] == 7 and kinds(book)[TxKind.PAYOUT.value] == 2
    assert sorted(p.seq for p in vault.payouts()) == withdrawals
    assert_settled(book, vault, expected)


def _many_deposits(vault: Vault, count: int) -> dict[str, int]:
    """``count`` deposits from an account the node unlocks, to ALICE, BOB and CAROL in
    turn (1 USDC plus ``i`` base units), 25 a block, sent straight to anvil's RPC (a few
    hundred take about a second); the USDC each account is owed."""
    w3 = vault.w3
    payer = list(w3.eth.accounts)[1]  # anvil unlocks it
    amounts = [USDC + i for i in range(count)]
    for call in (
        vault.usdc.functions.mint(payer, sum(amounts)),
        vault.usdc.functions.approve(vault.vault.address, sum(amounts)),
    ):
        w3.eth.wait_for_transaction_receipt(call.transact({"from": payer}))
    nonce = w3.eth.get_transaction_count(payer)
    owed = dict.fromkeys(ACCOUNTS, 0)
    rpc(vault, "evm_setAutomine", False)
    try:
        for i, amount in enumerate(amounts):
            account = ACCOUNTS[i % len(ACCOUNTS)]
            owed[account] += amount
            data = vault.vault.encode_abi("deposit", [amount, w3.to_checksum_address(account)])
            tx = {"from": payer, "to": vault.vault.address, "data": data}
            rpc(vault, "eth_sendTransaction", {**tx, "gas": hex(150_000), "nonce": hex(nonce + i)})
            if i % 25 == 24 or i == count - 1:
                rpc(vault, "evm_mine")
    finally:
        rpc(vault, "evm_setAutomine", True)
    return owed


def _watch_worker(batch: int, argv: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    """`ledger watch` in a new process (tests/watch_worker.py), held after its imports
    until :func:`_go`; ``batch`` > 0 credits deposits that many at a time."""
    return subprocess.Popen(
        [sys.executable, "-m", "tests.watch_worker", str(batch), *argv],
        cwd=ROOT,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _go(worker: subprocess.Popen[str]) -> None:
    assert worker.stdin is not None and worker.stdout is not None
    ready = worker.stdout.readline()
    assert ready == "ready\n", (ready, worker.communicate(timeout=60))
    worker.stdin.write("go\n")
    worker.stdin.flush()


def test_ledger_watch_sigkilled_midway_then_rerun(
    book: Ledger, db_url: str, operator_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """`ledger watch` (300 deposits, credited 10 a batch) is SIGKILLed as soon as its first
    batch is in the database; `ledger watch` run again (as shipped) credits the rest and
    finalises the payout, once; a third run finds nothing new."""
    deposits, batch = 300, 10
    with running_anvil() as url:
        vault = deployed_vault(url)
        watch = ["watch", "--rpc-url", url, "--vault", vault.vault.address, "--db", db_url]
        # Both processes start now and import while the chain is prepared.
        killed, rerun = (
            _watch_worker(batch, watch, operator_env),
            _watch_worker(0, watch, operator_env),
        )
        try:
            vault.deposit(ALICE_WALLET.l1_account, 100 * USDC, ALICE)
            sync(book, vault)
            paid = book.withdraw(ALICE, "30", wallet=ALICE_WALLET, nonce=1).seq
            commit_blocks(book, vault, OPERATOR.l1_account)
            assert [s for s, _ in pay_withdrawals(book, vault, BOB_WALLET.l1_account)] == [paid]
            owed = _many_deposits(vault, deposits)
            assert len(chain_deposits(vault)) == deposits + 1
            before, seq = cursor(book, vault), book.store.head().seq
            assert before is not None

            _go(killed)
            deadline = time.monotonic() + 60
            while book.store.head().seq == seq:
                assert killed.poll() is None, killed.communicate()
                assert time.monotonic() < deadline, "the watcher wrote nothing in 60 s"
                time.sleep(0.002)
            killed.send_signal(signal.SIGKILL)
            killed.communicate(timeout=60)
            assert killed.returncode == -signal.SIGKILL
            written = book.store.head().seq - seq
            # Killed between two atomic batches of deposits: before the payout and the cursor.
            assert 0 < written < deposits and written % batch == 0, written
            assert cursor(book, vault) == before
            assert kinds(book)[TxKind.PAYOUT.value] == 0

            _go(rerun)
            out, err = rerun.communicate(timeout=120)
            assert (rerun.returncode, err) == (0, ""), err
        finally:
            for worker in (killed, rerun):
                if worker.poll() is None:
                    worker.kill()
                    worker.communicate()
        end = head(vault)
        assert out == (
            f"blocks {before[0] + 1}..{end}: {deposits} deposits, "
            f"{deposits - written} newly credited; 1 withdrawals finalised\n"
        )
        capsys.readouterr()
        assert main(watch) == 0
        assert capsys.readouterr().out == (
            f"blocks {end + 1}..{end}: 0 deposits, 0 newly credited; 0 withdrawals finalised\n"
        )
        assert kinds(book)[TxKind.DEPOSIT.value] == deposits + 1
        assert_settled(book, vault, {**owed, ALICE: owed[ALICE] + 70 * USDC})


# ====================================================================== 2. reorgs


def test_a_deposit_reorged_out_before_confirmation_is_never_credited(
    book: Ledger, vault: Vault
) -> None:
    confirmations = 3
    fork = snapshot(vault)
    vault.deposit(ALICE_WALLET.l1_account, 7 * USDC, ALICE)  # approve, deposit: 2 blocks
    mine(vault, 1)  # the deposit is 1 block deep: not confirmed
    assert len(chain_deposits(vault)) == 1
    report = sync(book, vault, confirmations)
    assert (report.deposits, report.credited) == (0, 0)
    assert units(book, ALICE) == 0
    held = cursor(book, vault)
    assert held is not None and held[0] == head(vault) - confirmations

    revert(vault, fork)  # the deposit's blocks are replaced ...
    assert chain_deposits(vault) == []
    mine(vault, 4)  # ... by others, and the chain grows past where it was
    vault.deposit(BOB_WALLET.l1_account, 3 * USDC, BOB)  # after the reorg
    (late,) = chain_deposits(vault)
    assert sync(book, vault, confirmations).deposits == 0  # BOB's is not deep enough yet
    mine(vault, confirmations)
    report = sync(book, vault, confirmations)
    assert (report.deposits, report.credited) == (1, 1)
    assert balances(book) == {
        ALICE: 0,
        BOB: 3 * USDC,
        CAROL: 0,
        WITHDRAWALS: 0,
        BRIDGE: -late.amount,
    }
    assert book.store.transaction_by_key(late.key) is not None
    assert vault.balance(ALICE) == MINTED  # the reorg undid her deposit on L1 too
    assert_settled(book, vault, {ALICE: 0, BOB: 3 * USDC, CAROL: 0})


def test_a_reorg_below_the_cursor_is_reported_and_writes_nothing(
    book: Ledger,
    vault: Vault,
    db_url: str,
    operator_env: dict[str, str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    confirmations = 2
    fork = snapshot(vault)
    vault.deposit(ALICE_WALLET.l1_account, 7 * USDC, ALICE)
    deposit_block = head(vault)
    mine(vault, confirmations)
    assert sync(book, vault, confirmations).credited == 1
    held = cursor(book, vault)
    assert held is not None and held[0] == deposit_block
    seq, kept = book.store.head().seq, balances(book)

    revert(vault, fork)  # deeper than the confirmations: the cursor's block is replaced
    vault.deposit(BOB_WALLET.l1_account, 3 * USDC, BOB)  # the new chain has its own deposit
    mine(vault, confirmations + 4)  # and is longer than the old one
    assert [d.account for d in chain_deposits(vault)] == [BOB.lower()]
    for _ in range(2):  # reported every time, until an operator reviews it
        with pytest.raises(ReorgDetected, match=f"block {deposit_block} changed"):
            sync(book, vault, confirmations)
        assert book.store.head().seq == seq
        assert balances(book) == kept  # BOB's deposit is not credited behind the report
        assert cursor(book, vault) == held
    if not in_process(vault):  # `ledger watch` reports it and exits 2
        capsys.readouterr()
        argv = ["watch", "--rpc-url", vault.w3.provider.endpoint_uri, "--vault"]  # type: ignore[attr-defined]
        argv += [vault.vault.address, "--db", db_url, "--confirmations", str(confirmations)]
        assert main(argv) == 2
        assert f"block {deposit_block} changed" in capsys.readouterr().err
        assert book.store.head().seq == seq


def test_a_reorg_to_a_shorter_chain_is_reported(book: Ledger, vault: Vault) -> None:
    """The cursor's block is reorged out and the new chain is not yet as high: reported
    like any other reorg below the cursor, and nothing is written."""
    fork = snapshot(vault)
    vault.deposit(ALICE_WALLET.l1_account, 7 * USDC, ALICE)
    mine(vault, 3)
    assert sync(book, vault).credited == 1
    held = cursor(book, vault)
    assert held is not None
    revert(vault, fork)
    mine(vault, 1)
    assert head(vault) < held[0]  # the cursor's block is gone, and its height too
    seq = book.store.head().seq
    try:
        with pytest.raises(ReorgDetected):
            sync(book, vault)
    finally:
        assert book.store.head().seq == seq and cursor(book, vault) == held


def test_a_reorg_during_a_sync_is_reported(
    book: Ledger, pyevm_vault: Vault, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reorg that replaces blocks the watcher has just read is reported (by this sync or
    the next), like one found at the cursor. It is timed to land between the watcher's
    reading of the deposits and of the payouts: a real reorg of the chain, at a chosen
    moment (the hook then reads the payouts as shipped)."""
    vault = pyevm_vault
    fork = snapshot(vault)
    vault.deposit(ALICE_WALLET.l1_account, 7 * USDC, ALICE)
    read_payouts = vault.payouts

    def reorg_then_read(from_block: int = 0, to_block: int | None = None) -> Any:
        monkeypatch.undo()  # once
        revert(vault, fork)
        mine(vault, 5)
        return read_payouts(from_block, to_block)

    monkeypatch.setattr(vault, "payouts", reorg_then_read)
    with pytest.raises(ReorgDetected):
        sync(book, vault)  # this sync, in which the deposit's block was replaced ...
        sync(book, vault)  # ... or at the latest the next, reports it


# ====================================================================== 3. bad claims


def test_bad_claims_from_ledger_proofs_revert_and_change_nothing(
    book: Ledger, vault: Vault, db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    claimer = BOB_WALLET.l1_account
    vault.deposit(ALICE_WALLET.l1_account, 300 * USDC, ALICE)
    vault.deposit(BOB_WALLET.l1_account, 200 * USDC, BOB)
    sync(book, vault)
    w1 = book.withdraw(ALICE, "100", wallet=ALICE_WALLET, nonce=1).seq
    w2 = book.withdraw(BOB, "10.5", wallet=BOB_WALLET, nonce=1).seq
    assert [h.number for h, _ in commit_blocks(book, vault, OPERATOR.l1_account)] == [1]
    w3 = book.withdraw(ALICE, "5", wallet=ALICE_WALLET, nonce=2).seq
    assert [h.number for h, _ in commit_blocks(book, vault, OPERATOR.l1_account)] == [2]
    p1, p2, p3 = (proof_from_cli(db_url, seq, capsys) for seq in (w1, w2, w3))
    for proof, seq in ((p1, w1), (p2, w2), (p3, w3)):
        assert proof == book.withdrawal_proof(seq) and proof.verify()
    assert (p1.block, p2.block, p3.block) == (1, 1, 2)
    assert sync(book, vault).payouts == 0

    invalid, unknown = selector("InvalidProof()"), selector("UnknownBlock(uint64)")
    claimed = selector("AlreadyClaimed(bytes32)")
    malformed = selector("MalformedProof()")
    bad = {
        "a larger amount": (with_withdrawal(p1, amount=p1.withdrawal.amount + 1), invalid),
        "a smaller amount": (with_withdrawal(p1, amount=p1.withdrawal.amount - 1), invalid),
        "another recipient": (with_withdrawal(p1, recipient=CAROL), invalid),
        "the claimer as recipient": (
            with_withdrawal(p1, recipient=claimer.address.lower()),
            invalid,
        ),
        "another withdrawal's seq": (with_withdrawal(p1, seq=w2), invalid),
        "BOB's leaf, ALICE's amount": (with_withdrawal(p2, amount=p1.withdrawal.amount), invalid),
        "another index": (dataclasses.replace(p1, index=1), invalid),
        "block 1's proof at block 2": (dataclasses.replace(p1, block=2), invalid),
        "block 2's proof at block 1": (dataclasses.replace(p3, block=1), invalid),
        "a forged sibling": (dataclasses.replace(p1, siblings=(bytes(32),)), invalid),
        "no siblings (block 2's)": (dataclasses.replace(p1, siblings=p3.siblings), malformed),
        "a block not committed": (dataclasses.replace(p1, block=3), unknown),
    }
    on_l1 = {a: vault.balance(a) for a in (ALICE, BOB, CAROL, claimer.address)}
    vault_usdc, seq, kept = vault.balance(), book.store.head().seq, balances(book)
    assert kept[WITHDRAWALS] == 115_500_000

    def unchanged() -> None:
        assert vault.payouts() == []
        assert {a: vault.balance(a) for a in on_l1} == on_l1 and vault.balance() == vault_usdc
        report = sync(book, vault)
        assert (report.deposits, report.payouts) == (0, 0)  # nothing to finalise
        assert book.store.head().seq == seq and balances(book) == kept
        rec = reconcile(book, vault)
        assert rec.ok and rec.pending == kept[WITHDRAWALS], rec.describe()

    for name, (proof, error) in bad.items():
        with pytest.raises(ChainError) as refused:
            vault.claim(claimer, proof)
        assert revert_selector(refused.value) == error, name
    unchanged()

    vault.claim(claimer, p1)  # the ledger's own proof: paid, once
    assert vault.balance(ALICE) == on_l1[ALICE] + 100 * USDC
    for replay, error in ((p1, claimed), (dataclasses.replace(p1, block=2), claimed)):
        with pytest.raises(ChainError) as refused:
            vault.claim(claimer, replay)
        assert revert_selector(refused.value) == error
    assert vault.balance(ALICE) == on_l1[ALICE] + 100 * USDC
    assert [p.seq for p in vault.payouts()] == [w1]
    assert sync(book, vault).payouts == 1
    assert sync(book, vault).payouts == 0  # finalised once
    assert book.balance(WITHDRAWALS).units == 15_500_000
    assert book.balance(BRIDGE).units == kept[BRIDGE] + 100 * USDC
    assert users(book) == {a: kept[a] for a in ACCOUNTS}
    rec = reconcile(book, vault)
    assert rec.ok and rec.pending == 15_500_000, rec.describe()
    # The rest through the ledger's path: the paid one is not claimed again.
    assert [s for s, _ in pay_withdrawals(book, vault, claimer)] == [w2, w3]
    assert sync(book, vault).payouts == 2
    assert_settled(book, vault, {ALICE: 195 * USDC, BOB: 189_500_000, CAROL: 0})


# ====================================================================== 4. delivered twice


def test_one_deposit_event_delivered_twice_in_one_answer(book: Ledger, pyevm_vault: Vault) -> None:
    """A node whose answer repeats a log (overlapping ranges): credited once. (Delivered
    again by a later sync: tests/test_chain_settlement.py.)"""
    vault = pyevm_vault
    vault.deposit(ALICE_WALLET.l1_account, 12 * USDC, ALICE)
    vault.deposit(BOB_WALLET.l1_account, 8 * USDC, BOB)
    events = chain_deposits(vault)
    receipts = credit(book, [*events, *events[::-1]])
    assert [r.duplicate for r in receipts] == [False, False, True, True]
    assert receipts[0].seq == receipts[3].seq and receipts[1].seq == receipts[2].seq
    report = sync(book, vault)
    assert (report.deposits, report.credited) == (2, 0)
    assert_settled(book, vault, {ALICE: 12 * USDC, BOB: 8 * USDC, CAROL: 0})
