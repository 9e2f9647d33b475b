"""The read-only part of the mirror suite against a real StarkNet Sepolia node (opt in).

Skipped unless ``STARKNET_RPC_URL`` is set. It must be a **Sepolia** node's JSON-RPC
**0.10** endpoint (starknet-py 0.30 speaks 0.10; providers serve each version on its own
path, e.g. ``.../rpc/v0_10``). Nothing is ever sent to the chain: every call is a read
(``starknet_specVersion``, ``chainId``, ``blockNumber``, ``getBlockWithTxHashes``,
``call`` of ``balance_of``, ``getEvents``).

``STARKNET_TOKEN`` is the ERC-20 to read. The default is Circle's native USDC on Sepolia,
``0x0512feac6339ff7889822cb5aa2a86c848e9d392bb0e3e237c008674feed8343``: the address
Circle's "Quickstart: Set up and transfer USDC on Starknet" gives for Starknet Sepolia
(looked up when this test was written; addresses do change, so check Circle's docs if this
fails on ``balance_of``). Sepolia also has the older bridged USDC.e,
``0x053b40a647cedfca6ca84f542a0fe36736031905a9639a7f19a3c1e66bfd5080``, which older code
often calls "Sepolia USDC"; either works here (``STARKNET_TOKEN=0x053b...``), both have 6
decimals, and the CLI takes ``--token`` because Sepolia has more than one.

ALICE's L2 account (the counterfactual address of the test key, never deployed) holds
none of the token, so she is opened at balance 0, no transfer touches her, and ``status``
finds no drift: what this checks is that a real node's answers (its chain id, spec
version, blocks, u256 ``balance_of`` and ``getEvents`` pages with continuation tokens)
pass the mirror's checks and parsers, on both stores.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pytest

from ledger import Ledger
from ledger.chain.mirror import check_chain, status, sync
from ledger.chain.starknet import SPEC_VERSION, StarknetNode
from ledger.core import snip12
from ledger.core.accounts import mirror_account
from ledger.core.amounts import MIRROR_ASSET
from ledger.core.mirror import Transfer
from tests.conftest import ALICE, ALICE_WALLET

CIRCLE_SEPOLIA_USDC = "0x0512feac6339ff7889822cb5aa2a86c848e9d392bb0e3e237c008674feed8343"
RPC_URL = os.environ.get("STARKNET_RPC_URL", "")
TOKEN = snip12.encode_felt(os.environ.get("STARKNET_TOKEN") or CIRCLE_SEPOLIA_USDC)
DEPTH = 50  # blocks below the head the mirror starts at
CONFIRMATIONS = 5
SN_SEPOLIA = "SN_SEPOLIA"

pytestmark = pytest.mark.skipif(
    not RPC_URL, reason="opt-in: set STARKNET_RPC_URL to a StarkNet Sepolia JSON-RPC 0.10 node"
)

_T = TypeVar("_T")


def _read(call: Callable[[StarknetNode], Awaitable[_T]]) -> _T:
    """``call(node)`` with a StarknetNode on ``STARKNET_RPC_URL`` (its retries included)."""

    async def run() -> _T:
        async with StarknetNode(RPC_URL) as node:
            return await call(node)

    return asyncio.run(run())


def test_the_node_is_a_sepolia_node_speaking_the_mirrors_spec(book: Ledger) -> None:
    assert book.domain.chain_id == SN_SEPOLIA  # the ledger's default L2 chain

    async def facts(node: StarknetNode) -> tuple[str, int, int]:
        version = await node.spec_version()
        await check_chain(book, node)  # raises MirrorError on another chain
        return version, await node.chain_id(), await node.head()

    version, chain_id, head = _read(facts)
    assert chain_id == snip12.encode_shortstring(SN_SEPOLIA)
    assert version.split(".")[:2] == SPEC_VERSION.split("."), (
        f"the node speaks JSON-RPC {version}; point STARKNET_RPC_URL at its {SPEC_VERSION} endpoint"
    )
    assert head > DEPTH


def test_transfer_event_pages_parse_and_paging_loses_nothing() -> None:
    """Every ``Transfer`` of the token in the last DEPTH confirmed blocks parses (Cairo 1
    or Cairo 0 layout, amounts within USDC's range), and small pages followed through
    their continuation tokens give exactly what large pages give."""

    async def read(node: StarknetNode) -> tuple[int, int, list[Transfer], list[Transfer], set[int]]:
        head = await node.head()
        first, last = head - DEPTH, head - CONFIRMATIONS
        paged = await node.transfers(TOKEN, first, last, chunk_size=10)
        whole = await node.transfers(TOKEN, first, last, chunk_size=1000)
        blocks = {t.block_number for t in whole}
        hashes = await asyncio.gather(*(node.block(n) for n in sorted(blocks)))
        canonical = {h for h, _ in hashes}
        unknown = {t.block_hash for t in whole} - canonical
        return first, last, paged, whole, unknown

    first, last, paged, whole, unknown = _read(read)
    assert paged == whole
    assert not unknown  # every event's block hash is the chain's block at that number
    numbers = [t.block_number for t in whole]
    assert numbers == sorted(numbers) and all(first <= n <= last for n in numbers)
    ids = [(t.tx_hash, t.event_index) for t in whole]
    assert len(ids) == len(set(ids))


def test_sync_opens_alice_at_zero_and_status_shows_no_drift(book: Ledger) -> None:
    book.submit_signed(ALICE_WALLET.mirror(TOKEN, book.domain, nonce=1))

    async def head(node: StarknetNode) -> int:
        return await node.head()

    start = _read(head) - DEPTH
    report = sync(book, RPC_URL, TOKEN, from_block=start, confirmations=CONFIRMATIONS)
    assert (report.chain, report.token) == (f"starknet:{SN_SEPOLIA}", f"{TOKEN:#x}")
    assert (report.from_block, report.opened, report.closed, report.reorg) == (start, 1, 0, None)
    assert report.to_block == report.head - CONFIRMATIONS >= start + DEPTH - CONFIRMATIONS
    # Alice's L2 account has none of the token: no transfer of hers in the range, and her
    # opening (balance_of at the start block) is the only entry, with nothing posted.
    assert (report.events, report.entries, report.warnings) == (0, 1, [])
    assert book.balance(mirror_account(ALICE), MIRROR_ASSET.code).units == 0
    [row] = status(book, RPC_URL, TOKEN)
    assert (row.owner, row.authorized, row.l2_address) == (
        ALICE,
        True,
        f"{ALICE_WALLET.stark_account:#x}",
    )
    assert (row.balance, row.as_of, row.fresh, row.drift) == (0, report.to_block, 0, 0)
    assert row.head is not None and row.behind is not None and row.behind >= CONFIRMATIONS
    # A second sync resumes from the cursor and still finds nothing of hers.
    again = sync(book, RPC_URL, TOKEN, confirmations=CONFIRMATIONS)
    assert (again.from_block, again.opened, again.events, again.entries) == (
        report.to_block,
        0,
        0,
        0,
    )
    assert book.audit().ok
