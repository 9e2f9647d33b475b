"""The StarkNet mirror end to end: starknet-py's real FullNodeClient against the local
JSON-RPC test node (tests/starknet_node.py), on both stores. Synced balances equal
``balance_of`` at the same block; reorgs above and below the confirmation depth;
authorisations, revocations and strangers; malformed and failing nodes write nothing; a
sync killed anywhere resumes without loss or duplicates.

``STARKNET_RPC_URL`` (and optionally ``STARKNET_TOKEN``) runs the read-only part against a
real node as well.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ledger import Ledger
from ledger.chain import mirror as mirror_sync
from ledger.chain.mirror import load_state, status, sync
from ledger.chain.starknet import NodeFailure, StarknetNode
from ledger.cli import main
from ledger.core import mirror
from ledger.core.accounts import STARKNET, mirror_account
from ledger.core.amounts import MIRROR_ASSET
from ledger.core.journal import TxKind
from ledger.errors import MirrorError
from ledger.wallet.signer import Wallet
from tests.conftest import ALICE, ALICE_WALLET, BOB, BOB_WALLET, CAROL, CAROL_WALLET, open_book
from tests.starknet_node import StarknetTestNode
from tests.test_cli import PASSWORD, write_keystore

TOKEN = 0x053C91253BC9682C04929CA02ED00B3E423F6710D2EE7E0D5EBB06F3ECF368A8
STRANGER = 0x5757
ALICE_L2, BOB_L2, CAROL_L2 = (w.stark_account for w in (ALICE_WALLET, BOB_WALLET, CAROL_WALLET))
FAST = {"timeout": 1.0, "retries": 1}


@pytest.fixture
def node() -> Iterator[StarknetTestNode]:
    with StarknetTestNode(timeout_delay=2.0) as running:
        running.deploy_token(TOKEN)
        yield running


def _authorise(book: Ledger, wallet: Wallet, nonce: int, revoke: bool = False) -> None:
    book.submit_signed(wallet.mirror(TOKEN, book.domain, revoke=revoke, nonce=nonce))


def _mirrored(book: Ledger, owner: str) -> int:
    return book.balance(mirror_account(owner), MIRROR_ASSET.code).units


def _activity(node: StarknetTestNode, blocks: int, seed: int = 0) -> None:
    """Mints and transfers among Alice, Bob, Carol and a stranger over ``blocks`` blocks,
    several per block."""
    holders = [ALICE_L2, BOB_L2, CAROL_L2, STRANGER]
    for i in range(blocks):
        for j, holder in enumerate(holders):
            node.mint(TOKEN, holder, 1_000_000 * (1 + (i + j + seed) % 3))
        for j in range(3):
            sender = holders[(i + j + seed) % 4]
            recipient = holders[(i + 2 * j + 1 + seed) % 4]
            if sender != recipient:
                node.transfer(TOKEN, sender, recipient, 250_000 + j)
        node.mine()


def _assert_exact(book: Ledger, node: StarknetTestNode, owners: dict[str, int]) -> int:
    """Each mirrored balance equals balance_of at the mirror's block; returns that block."""
    rows = {row.owner: row for row in status(book)}
    block = next(row.as_of for row in rows.values() if row.as_of is not None)
    assert block is not None
    for owner, l2 in owners.items():
        assert _mirrored(book, owner) == node.balance_of(TOKEN, l2, block), owner
    return block


def _mirror_keys(book: Ledger) -> list[str]:
    return [tx.key for tx in book.store.transactions_of_kind([TxKind.MIRROR.value])]


def test_sync_from_genesis_then_incrementally(book: Ledger, node: StarknetTestNode) -> None:
    _authorise(book, ALICE_WALLET, 1)
    _authorise(book, BOB_WALLET, 1)
    _activity(node, 30)
    report = sync(book, node.url, TOKEN, from_block=0, confirmations=0, chunk_size=7, range_size=8)
    assert (report.from_block, report.to_block, report.opened) == (0, 30, 2)
    assert report.events > 100 and node.call_counts["starknet_getEvents"] > 10  # paginated
    assert _assert_exact(book, node, {ALICE: ALICE_L2, BOB: BOB_L2}) == 30
    _activity(node, 12, seed=1)
    again = sync(book, node.url, TOKEN, confirmations=2, chunk_size=50)
    assert (again.from_block, again.to_block, again.opened) == (30, 40, 0)
    assert _assert_exact(book, node, {ALICE: ALICE_L2, BOB: BOB_L2}) == 40
    # Nothing new: a sync writes nothing; the audit replays every entry.
    assert sync(book, node.url, TOKEN, confirmations=2).entries == 0
    assert book.balance(STARKNET, MIRROR_ASSET.code).units == -(
        _mirrored(book, ALICE) + _mirrored(book, BOB)
    )
    assert book.audit().ok


def test_every_entry_says_where_it_came_from(book: Ledger, node: StarknetTestNode) -> None:
    node.mint(TOKEN, ALICE_L2, 7_000_000)
    node.mine(3)
    _authorise(book, ALICE_WALLET, 1)
    sync(book, node.url, TOKEN, confirmations=0)  # opens at the head: balance_of there
    node.transfer(TOKEN, ALICE_L2, STRANGER, 2_000_000)
    node.mine()
    sync(book, node.url, TOKEN, confirmations=0)
    lines = book.history(mirror_account(ALICE), MIRROR_ASSET.code)
    assert [line.amount for line in lines] == [7_000_000, -2_000_000]
    opened, moved = (json.loads(book.store.transaction(line.seq).metadata) for line in lines)
    assert (opened["mirror"], opened["block"], opened["balance"]) == ("open", 3, "7000000")
    assert opened["block_hash"] == hex(node.block_hash(3))
    assert (moved["block"], moved["block_hash"]) == (4, hex(node.block_hash(4)))
    [event] = moved["events"]
    assert (event["from"], event["to"], event["amount"]) == (
        hex(ALICE_L2),
        hex(STRANGER),
        "2000000",
    )


def test_only_authorised_accounts_are_mirrored(book: Ledger, node: StarknetTestNode) -> None:
    _authorise(book, ALICE_WALLET, 1)
    _activity(node, 10)
    sync(book, node.url, TOKEN, from_block=0, confirmations=0)
    assert _mirrored(book, BOB) == _mirrored(book, CAROL) == 0
    assert node.balance_of(TOKEN, BOB_L2) > 0 and node.balance_of(TOKEN, CAROL_L2) > 0
    assert {row.owner for row in status(book)} == {ALICE}
    for key in _mirror_keys(book):  # no entry names an unauthorised account
        meta = json.loads(book.store.transaction_by_key(key).metadata)  # type: ignore[union-attr]
        assert meta.get("account", mirror_account(ALICE)) == mirror_account(ALICE)


def test_revocation_stops_mirroring_and_reauthorising_reopens(
    book: Ledger, node: StarknetTestNode
) -> None:
    _authorise(book, ALICE_WALLET, 1)
    _authorise(book, BOB_WALLET, 1)
    _activity(node, 5)
    sync(book, node.url, TOKEN, from_block=0, confirmations=0)
    assert _mirrored(book, BOB) > 0
    _authorise(book, BOB_WALLET, 2, revoke=True)
    report = sync(book, node.url, TOKEN, confirmations=0)
    assert (report.closed, _mirrored(book, BOB)) == (1, 0)
    _activity(node, 5, seed=2)
    sync(book, node.url, TOKEN, confirmations=0)
    assert _mirrored(book, BOB) == 0  # transfers to Bob are no longer followed
    assert [row.authorized for row in status(book)] == [True]
    _authorise(book, BOB_WALLET, 3)
    assert sync(book, node.url, TOKEN, confirmations=0).opened == 1
    _assert_exact(book, node, {ALICE: ALICE_L2, BOB: BOB_L2})
    assert book.audit().ok


def test_a_reorg_within_the_confirmation_depth_is_never_seen(
    book: Ledger, node: StarknetTestNode
) -> None:
    _authorise(book, ALICE_WALLET, 1)
    _activity(node, 10)
    sync(book, node.url, TOKEN, from_block=0, confirmations=3)
    keys = _mirror_keys(book)
    node.reorg(2)  # blocks 9 and 10 replaced; the mirror read up to 7
    node.transfer(TOKEN, STRANGER, ALICE_L2, 5)
    node.mine(4)
    report = sync(book, node.url, TOKEN, confirmations=3)
    assert report.reorg is None and _mirror_keys(book)[: len(keys)] == keys
    _assert_exact(book, node, {ALICE: ALICE_L2})
    assert book.audit().ok


def test_a_reorg_below_the_confirmation_depth_is_rolled_back(
    book: Ledger, node: StarknetTestNode
) -> None:
    _authorise(book, ALICE_WALLET, 1)
    _authorise(book, BOB_WALLET, 1)
    _activity(node, 12)
    sync(book, node.url, TOKEN, from_block=0, confirmations=1)  # up to block 11
    node.reorg(6, replacement_blocks=0)  # blocks 7..12 gone: the mirror read 7..11
    node.transfer(TOKEN, ALICE_L2, BOB_L2, 123)
    node.mine(8)
    report = sync(book, node.url, TOKEN, confirmations=1)
    assert report.reorg is not None and report.reorg.fork_block == 6
    assert report.reorg.rolled_back == 5 and "reorg" in report.warnings[0]
    assert _assert_exact(book, node, {ALICE: ALICE_L2, BOB: BOB_L2}) == 13
    state = load_state(book)
    assert all(state.blocks[n] == node.block_hash(n) for n in state.blocks)
    assert state.blocks[6] == node.block_hash(6)
    assert book.audit().ok


@pytest.mark.parametrize(
    ("method", "kind", "message"),
    [
        ("starknet_getEvents", "malformed", "starknet_getEvents"),
        ("starknet_getBlockWithTxHashes", "malformed", "starknet_getBlockWithTxHashes"),
        ("starknet_blockNumber", "wrong_type", "expected a block number"),
        ("starknet_call", "u256_high", "beyond any USDC amount"),
        ("starknet_call", "malformed", "two 128-bit felts"),
        ("starknet_chainId", "wrong_type", "0x-hex felt"),
        ("starknet_getEvents", "http_500", "failed 2 times"),
        ("starknet_call", "rpc_error", "failed 2 times"),
    ],
)
def test_a_bad_node_answer_is_a_clear_error_and_writes_nothing(
    book: Ledger, node: StarknetTestNode, method: str, kind: str, message: str
) -> None:
    _authorise(book, ALICE_WALLET, 1)
    _activity(node, 4)
    head = book.store.head().seq
    node.fail_next(method, kind, times=10)
    with pytest.raises(MirrorError, match=message):
        sync(book, node.url, TOKEN, from_block=0, confirmations=0, **FAST)
    if method != "starknet_getEvents":  # the opening is written before events are read
        assert book.store.head().seq == head
    cursor = book.store.chain_cursor(mirror_sync.chain_name(book), hex(TOKEN))
    assert cursor is None or cursor[0] == 0  # at most where the openings were read
    node.faults.clear()
    sync(book, node.url, TOKEN, from_block=0, confirmations=0)
    _assert_exact(book, node, {ALICE: ALICE_L2})


def test_a_node_on_another_chain_is_refused(book: Ledger, node: StarknetTestNode) -> None:
    _authorise(book, ALICE_WALLET, 1)
    head = book.store.head().seq
    node.chain_id = "SN_MAIN"
    with pytest.raises(
        MirrorError, match="chain SN_MAIN, but this ledger's L2 chain is SN_SEPOLIA"
    ):
        sync(book, node.url, TOKEN, confirmations=0)
    assert book.store.head().seq == head


def test_transient_failures_are_retried_and_reported(book: Ledger, node: StarknetTestNode) -> None:
    _authorise(book, ALICE_WALLET, 1)
    _activity(node, 6)
    node.fail_next("starknet_getEvents", "http_500")
    node.fail_next("starknet_call", "rpc_error")
    node.fail_next("starknet_getBlockWithTxHashes", "timeout", delay=1.5)
    node.fail_next("starknet_blockNumber", "invalid_json")
    lines: list[str] = []
    sync(book, node.url, TOKEN, from_block=0, confirmations=0, log=lines.append, timeout=0.5)
    assert len([line for line in lines if "retrying" in line]) == 4
    _assert_exact(book, node, {ALICE: ALICE_L2})


def test_a_node_behind_the_mirror_is_retried_then_refused(
    book: Ledger, node: StarknetTestNode
) -> None:
    _authorise(book, ALICE_WALLET, 1)
    _activity(node, 6)
    sync(book, node.url, TOKEN, from_block=0, confirmations=0)
    head = book.store.head().seq
    node.behind = 3
    with pytest.raises(NodeFailure, match="behind block 6"):
        sync(book, node.url, TOKEN, confirmations=0, **FAST)
    assert book.store.head().seq == head
    node.behind = 0
    _activity(node, 2)
    assert sync(book, node.url, TOKEN, confirmations=0).to_block == 8


def test_another_spec_version_is_warned_about(book: Ledger, node: StarknetTestNode) -> None:
    node.spec_version = "0.8.1"
    lines: list[str] = []
    with pytest.warns(Warning):  # starknet-py's own IncompatibleRPCVersionWarning
        sync(book, node.url, TOKEN, confirmations=0, log=lines.append)
    assert any("0.8.1" in line and "0.10" in line for line in lines)


def test_a_sync_killed_anywhere_resumes_without_loss_or_duplicates(
    book: Ledger, node: StarknetTestNode, monkeypatch: pytest.MonkeyPatch
) -> None:
    _authorise(book, ALICE_WALLET, 1)
    _authorise(book, BOB_WALLET, 1)
    _activity(node, 20)

    class Killed(Exception):
        pass

    # Dies after the entries of a range are written, before the cursor moves ...
    moves = {"left": 1}
    real_move = mirror_sync._Sync._move_cursor

    def move(self: mirror_sync._Sync, number: int, block_hash: int) -> None:
        if moves["left"] == 0:
            raise Killed
        moves["left"] -= 1
        real_move(self, number, block_hash)

    monkeypatch.setattr(mirror_sync._Sync, "_move_cursor", move)
    with pytest.raises(Killed):
        sync(book, node.url, TOKEN, from_block=0, confirmations=0, range_size=5)
    monkeypatch.undo()
    # ... and once more while a batch of entries is being written.
    _authorise(book, CAROL_WALLET, 1)  # authorised between the crash and the restart
    real_submit = Ledger.submit
    calls = {"n": 0}

    def submit(self: Ledger, requests: list[object]) -> object:
        calls["n"] += 1
        if calls["n"] == 3:
            raise Killed
        return real_submit(self, requests)  # type: ignore[arg-type]

    monkeypatch.setattr(Ledger, "submit", submit)
    with pytest.raises(Killed):
        sync(book, node.url, TOKEN, confirmations=0, range_size=5)
    monkeypatch.undo()
    report = sync(book, node.url, TOKEN, confirmations=0, range_size=5)
    assert report.to_block == 20
    keys = _mirror_keys(book)
    assert len(keys) == len(set(keys))
    _assert_exact(book, node, {ALICE: ALICE_L2, BOB: BOB_L2, CAROL: CAROL_L2})
    assert book.audit().ok


def test_a_killed_sync_process_resumes(
    db_url: str, node: StarknetTestNode, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``ledger mirror sync`` SIGKILLed while it waits on the node, then run again."""
    with open_book(db_url) as book:
        _authorise(book, ALICE_WALLET, 1)
    _activity(node, 12)
    operator_env = {
        "LEDGER_KEYSTORE_PASSWORD": PASSWORD,
        "LEDGER_OPERATOR_KEYSTORE": write_keystore(tmp_path / "op.json", "operator"),
        "LEDGER_DB_URL": db_url,
    }
    env = {**os.environ, **operator_env}
    node.fail_next("starknet_getEvents", "timeout", times=1, delay=30)
    args = ["mirror", "sync", "--rpc-url", node.url, "--token", hex(TOKEN), "--from-block", "0"]
    process = subprocess.Popen(
        [sys.executable, "-m", "ledger.cli", *args, "--confirmations", "0"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 30
    while node.call_counts["starknet_getEvents"] == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=10)
    node.faults.clear()
    for name, value in operator_env.items():
        monkeypatch.setenv(name, value)
    assert main([*args[:6], "--confirmations", "0"]) == 0
    with Ledger(db_url) as book:
        _assert_exact(book, node, {ALICE: ALICE_L2})
        keys = _mirror_keys(book)
        assert len(keys) == len(set(keys)) and book.audit().ok


def test_status_reports_drift_loudly_and_never_corrects_it(
    book: Ledger, node: StarknetTestNode, capsys: pytest.CaptureFixture[str]
) -> None:
    _authorise(book, ALICE_WALLET, 1)
    _activity(node, 5)
    sync(book, node.url, TOKEN, from_block=0, confirmations=0)
    node.mine(4)
    [row] = status(book, node.url, TOKEN)
    assert (row.as_of, row.head, row.behind, row.drift) == (5, 9, 4, 0)
    # An entry the chain does not back (written by hand): status shows the drift.
    auth = load_state(book).authorizations[ALICE]
    forged = mirror.block_entries(
        "starknet:SN_SEPOLIA",
        TOKEN,
        5,
        node.block_hash(5),
        [mirror.Transfer(5, node.block_hash(5), 0xF00, 9, STRANGER, auth.l2_address, 42)],
        {auth.l2_address: auth.account},
    )
    before = _mirrored(book, ALICE)
    book.submit([book.operator_signed(r._replace(key="l2/by-hand")) for r in forged])
    [row] = status(book, node.url, TOKEN)
    assert row.drift == -42 and _mirrored(book, ALICE) == before + 42


def test_a_reorg_during_a_sync_writes_nothing_then_rolls_back(
    book: Ledger, node: StarknetTestNode, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The chain replaces the cursor's block while a sync reads the blocks after it: that
    sync fails having written nothing of the range; the next rolls the old block back."""
    _authorise(book, ALICE_WALLET, 1)
    node.mint(TOKEN, ALICE_L2, 1000)
    node.mine(2)
    sync(book, node.url, TOKEN, from_block=2, confirmations=0)
    node.mint(TOKEN, ALICE_L2, 50)
    node.mine()
    sync(book, node.url, TOKEN, confirmations=0)  # block 3's +50 recorded
    node.mine(3)
    read = StarknetNode.transfers

    async def reorg_then_read(self: StarknetNode, *args: Any) -> Any:
        monkeypatch.undo()
        node.reorg(4)  # blocks 3..6 replaced: the +50 is gone
        return await read(self, *args)

    monkeypatch.setattr(StarknetNode, "transfers", reorg_then_read)
    keys = _mirror_keys(book)
    with pytest.raises(NodeFailure, match=r"reorganised while blocks 4\.\.6 were read"):
        sync(book, node.url, TOKEN, confirmations=0, **FAST)
    assert _mirror_keys(book) == keys
    report = sync(book, node.url, TOKEN, confirmations=0)
    assert report.reorg is not None and report.reorg.fork_block == 2
    assert _assert_exact(book, node, {ALICE: ALICE_L2}) == 6
    assert book.audit().ok


def test_a_chain_back_on_an_earlier_fork_is_read_again(
    book: Ledger, node: StarknetTestNode
) -> None:
    """Fork A, then B (A's blocks rolled back), then A again (a load-balanced endpoint):
    A's blocks are new entries, not replays of the rolled-back ones."""
    with StarknetTestNode() as other:
        for chain in (node, other):
            chain.deploy_token(TOKEN)
            chain.mint(TOKEN, ALICE_L2, 1_000_000)
            chain.mine(2)
            chain.mint(TOKEN, ALICE_L2, 777)
            chain.transfer(TOKEN, ALICE_L2, BOB_L2, 100)
            chain.mine(3)
        assert node.block_hash(5) == other.block_hash(5)
        other.reorg(3)
        other.mine()
        node.mine()
        _authorise(book, ALICE_WALLET, 1)
        sync(book, node.url, TOKEN, from_block=1, confirmations=0)
        assert _mirrored(book, ALICE) == node.balance_of(TOKEN, ALICE_L2, 6)
        assert sync(book, other.url, TOKEN, confirmations=0).reorg is not None
        assert _mirrored(book, ALICE) == other.balance_of(TOKEN, ALICE_L2, 6)
        _authorise(book, BOB_WALLET, 1)  # and a new account in between
        assert sync(book, node.url, TOKEN, confirmations=0).reorg is not None
        assert _mirrored(book, ALICE) == node.balance_of(TOKEN, ALICE_L2, 6)
        assert _mirrored(book, BOB) == node.balance_of(TOKEN, BOB_L2, 6)
    assert book.audit().ok


def test_a_reorg_below_every_recorded_block_starts_again(
    book: Ledger, node: StarknetTestNode
) -> None:
    node.mine(20)
    sync(book, node.url, TOKEN, confirmations=5)  # nobody authorised: only a cursor at 15
    node.reorg(8)  # 13..20 replaced
    node.mint(TOKEN, ALICE_L2, 40)
    node.mine(30)
    _authorise(book, ALICE_WALLET, 1)
    report = sync(book, node.url, TOKEN, confirmations=5)
    assert report.reorg is not None and report.reorg.fork_block == 15
    assert _assert_exact(book, node, {ALICE: ALICE_L2}) == 45
    # The same when the only recorded block is an opening a deeper reorg removes.
    node.reorg(40)
    node.mint(TOKEN, ALICE_L2, 2)
    node.mine(45)
    report = sync(book, node.url, TOKEN, confirmations=5)
    assert report.reorg is not None and report.reorg.rolled_back >= 1
    _assert_exact(book, node, {ALICE: ALICE_L2})
    assert book.audit().ok


def test_a_crash_between_batches_never_splits_a_block(
    book: Ledger, node: StarknetTestNode, monkeypatch: pytest.MonkeyPatch
) -> None:
    _authorise(book, ALICE_WALLET, 1)
    node.mine()
    sync(book, node.url, TOKEN, from_block=1, confirmations=0)
    node.mint(TOKEN, ALICE_L2, 5)
    node.mine()
    for i in range(45):  # one block, two parts
        node.mint(TOKEN, ALICE_L2, 1000 + i)
    node.mine()
    monkeypatch.setattr(mirror_sync, "MAX_BATCH", 2)
    submit, calls = Ledger.submit, []

    def dying(self: Ledger, requests: Any) -> Any:
        calls.append(len(requests))
        if len(calls) == 2:
            raise RuntimeError("killed")
        return submit(self, requests)

    monkeypatch.setattr(Ledger, "submit", dying)
    with pytest.raises(RuntimeError, match="killed"):
        sync(book, node.url, TOKEN, confirmations=0)
    assert calls == [1, 2]  # block 2 alone, then block 3's two parts together
    monkeypatch.undo()
    sync(book, node.url, TOKEN, confirmations=0)
    assert _assert_exact(book, node, {ALICE: ALICE_L2}) == 3


def test_one_l2_account_is_mirrored_once(book: Ledger, node: StarknetTestNode) -> None:
    """Two owners onboarded with the same L2 key (one party holding both L1 keys) both
    authorise it: the first mirrors it, the second is reported, never counted twice."""

    class SameL2Key(Wallet):
        @property
        def stark_private_key(self) -> int:
            return ALICE_WALLET.stark_private_key

    dave = SameL2Key(b"\x0d" * 32)
    book.onboard(dave)
    node.mint(TOKEN, ALICE_L2, 1000)
    node.mine(2)
    _authorise(book, ALICE_WALLET, 1)
    _authorise(book, dave, 1)
    report = sync(book, node.url, TOKEN, from_block=2, confirmations=0)
    assert report.opened == 1 and "not mirrored twice" in report.warnings[0]
    node.transfer(TOKEN, ALICE_L2, STRANGER, 400)
    node.mine()
    sync(book, node.url, TOKEN, confirmations=0)
    assert (_mirrored(book, ALICE), _mirrored(book, dave.address)) == (600, 0)


def test_an_unrelated_huge_transfer_does_not_stop_the_mirror(
    book: Ledger, node: StarknetTestNode
) -> None:
    _authorise(book, ALICE_WALLET, 1)
    node.mint(TOKEN, ALICE_L2, 10)
    node.mine()
    sync(book, node.url, TOKEN, from_block=1, confirmations=0)
    node.mint(TOKEN, STRANGER, 2**64)  # another token's scale, not a mirrored account
    node.mint(TOKEN, ALICE_L2, 5)
    node.mine()
    sync(book, node.url, TOKEN, confirmations=0)
    _assert_exact(book, node, {ALICE: ALICE_L2})
    node.transfer(TOKEN, STRANGER, ALICE_L2, 2**64)
    node.mine()
    with pytest.raises(MirrorError, match="beyond any USDC amount"):
        sync(book, node.url, TOKEN, confirmations=0)


def test_a_second_token_or_a_bad_url_is_refused_and_writes_nothing(
    book: Ledger, node: StarknetTestNode
) -> None:
    _authorise(book, ALICE_WALLET, 1)
    node.mint(TOKEN, ALICE_L2, 10)
    node.mine()
    sync(book, node.url, TOKEN, from_block=1, confirmations=0)
    head = book.store.head().seq
    other = TOKEN + 1
    node.deploy_token(other)
    with pytest.raises(MirrorError, match=f"this ledger mirrors token {TOKEN:#x}"):
        sync(book, node.url, other, confirmations=0)
    for url in ("127.0.0.1:5050", "ftp://node"):
        with pytest.raises(MirrorError, match="is not an http"):
            sync(book, url, TOKEN, confirmations=0)
    for token in ("USDC", "0xzz", 0):
        with pytest.raises(MirrorError, match="not a StarkNet address"):
            sync(book, node.url, token, confirmations=0)
    assert book.store.head().seq == head
