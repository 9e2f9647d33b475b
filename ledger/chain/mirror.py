"""The StarkNet balance mirror: follows authorised accounts' USDC on L2 into the journal.

One sync, against a node (``ledger.chain.starknet``):

1. checks the node's chain is the ledger's L2 chain (recorded at genesis) and, if the
   mirror has a cursor, that the block after it still has the cursor's hash as its parent
   (a reorg otherwise: every entry read from a block the chain lost is rolled back, back to
   the newest recorded block the chain still has);
2. closes the accounts whose authorisation was revoked or replaced, and opens the newly
   authorised ones with their ``balance_of`` at the cursor block (calls batched);
3. reads the token's ``Transfer`` events from the cursor to ``confirmations`` below the
   head, ``range_size`` blocks at a time, writes one entry per block (and part) touching a
   mirrored account, and moves the cursor after each range.

The cursor is stored after the entries it covers, and each entry's key names its block
hash, so a sync killed anywhere resumes without loss or duplicates: on restart the mirror
continues from the newer of the stored cursor and its last recorded block.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from ledger.chain.starknet import NodeFailure, StarknetNode
from ledger.core import mirror, snip12
from ledger.core.amounts import MIRROR_ASSET
from ledger.core.journal import MAX_BATCH, TxKind, TxRequest
from ledger.core.mirror import MirrorState, Transfer
from ledger.errors import MirrorError
from ledger.ledger import Ledger

DEFAULT_CONFIRMATIONS = 10
DEFAULT_CHUNK_SIZE = 1000  # events per starknet_getEvents page
DEFAULT_RANGE_SIZE = 5000  # blocks read before the cursor moves


@dataclass(slots=True)
class Reorg:
    """A reorg the mirror rolled back: the cursor block's hash changed."""

    detected_at: int
    fork_block: int
    rolled_back: int  # entries undone


@dataclass(slots=True)
class MirrorReport:
    """What one sync read and wrote."""

    chain: str
    token: str
    from_block: int
    to_block: int
    head: int
    opened: int = 0
    closed: int = 0
    events: int = 0  # Transfer events touching mirrored accounts
    entries: int = 0  # journal entries written (new)
    reorg: Reorg | None = None
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class AccountStatus:
    """One mirrored (or authorised) account, as ``ledger mirror status`` shows it."""

    owner: str
    account: str
    l2_address: str
    authorized: bool
    balance: int  # mirrored, L2USDC base units
    as_of: int | None  # the L2 block the mirror is at
    head: int | None = None
    fresh: int | None = None  # balance_of at ``as_of``, read now

    @property
    def behind(self) -> int | None:
        return None if self.head is None or self.as_of is None else self.head - self.as_of

    @property
    def drift(self) -> int | None:
        return None if self.fresh is None else self.fresh - self.balance


def chain_name(book: Ledger) -> str:
    """The mirror's chain key: ``starknet:`` and the ledger's L2 chain id."""
    return f"starknet:{book.domain.chain_id}"


def mirror_cursor(book: Ledger, state: MirrorState, token: int) -> tuple[int, int] | None:
    """The L2 block (number, hash) the mirror of ``token`` has read up to: the stored
    cursor, or the newest block an entry was read at if that is later (a sync died after
    writing entries, before moving the cursor)."""
    stored = book.store.chain_cursor(chain_name(book), f"{token:#x}")
    cursor = None if stored is None else (stored[0], int(stored[1], 16))
    last = state.last_block
    if last is not None and (cursor is None or last[0] > cursor[0]):
        return last
    return cursor


def load_state(book: Ledger) -> MirrorState:
    """The mirror's state, folded from the journal."""
    kinds = (TxKind.ACCOUNT_SETTING.value, TxKind.MIRROR.value)
    return mirror.fold(book.store.transactions_of_kind(kinds))


def sync(
    book: Ledger,
    url: str,
    token: int | str,
    *,
    from_block: int | None = None,
    confirmations: int = DEFAULT_CONFIRMATIONS,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    range_size: int = DEFAULT_RANGE_SIZE,
    log: Callable[[str], None] = lambda _: None,
    timeout: float = 10.0,
    retries: int = 4,
) -> MirrorReport:
    """Run one sync of ``token``'s balances from the node at ``url`` (see module doc);
    each node call times out after ``timeout`` seconds and is retried ``retries`` times."""
    if confirmations < 0 or chunk_size < 1 or range_size < 1:
        raise MirrorError("confirmations must be >= 0, chunk and range sizes >= 1")
    address = mirror.parse_address(token)
    if not url.startswith(("http://", "https://")):
        raise MirrorError(f"--rpc-url {url!r} is not an http(s) URL")

    async def run() -> MirrorReport:
        async with StarknetNode(url, timeout=timeout, retries=retries, log=log) as node:
            syncer = _Sync(book, node, address, log)
            return await syncer.run(from_block, confirmations, chunk_size, range_size)

    return asyncio.run(run())


class _Sync:
    def __init__(self, book: Ledger, node: StarknetNode, token: int, log: Callable[[str], None]):
        self.book, self.node, self.token, self.log = book, node, token, log
        self.chain = chain_name(book)
        self.token_hex = f"{token:#x}"

    async def run(
        self, from_block: int | None, confirmations: int, chunk_size: int, range_size: int
    ) -> MirrorReport:
        await self.node.spec_version()
        await check_chain(self.book, self.node)
        state = load_state(self.book)
        if state.token is not None and state.token != self.token:
            raise MirrorError(
                f"this ledger mirrors token {state.token:#x}; a second token would mix "
                f"balances in {MIRROR_ASSET.code}"
            )
        cursor = mirror_cursor(self.book, state, self.token)
        head = await self.node.head(at_least=0 if cursor is None else cursor[0])
        target = head - confirmations
        if cursor is None:
            start = target if from_block is None else from_block
            if start > target or start < 0:
                raise MirrorError(
                    f"cannot start at block {start}: the node's head is {head} and the mirror "
                    f"reads {confirmations} confirmations deep (at most block {target})"
                )
            cursor = (start, (await self.node.block(start))[0])
        elif from_block is not None and from_block != cursor[0]:
            raise MirrorError(
                f"the mirror is at L2 block {cursor[0]}: --from-block applies to the first "
                "sync only"
            )
        report = MirrorReport(self.chain, self.token_hex, cursor[0], cursor[0], head)
        cursor, state = await self._check_reorg(cursor, state, head, report)
        accounts = await self._authorisations(state, cursor, report)
        self._move_cursor(*cursor)  # where the openings were read: the first sync's start
        await self._follow(accounts, cursor, target, chunk_size, range_size, report, state.epoch)
        return report

    def _move_cursor(self, number: int, block_hash: int) -> None:
        self.book.store.set_chain_cursor(self.chain, self.token_hex, number, f"{block_hash:#x}")

    async def _check_reorg(
        self, cursor: tuple[int, int], state: MirrorState, head: int, report: MirrorReport
    ) -> tuple[tuple[int, int], MirrorState]:
        """Compare the cursor with the chain through the next block's parent hash; on a
        mismatch roll back to the newest recorded block the chain still has."""
        number, known = cursor
        if number < head:
            now = (await self.node.block(number + 1))[1]
        else:
            now = (await self.node.block(number))[0]
        if now == known:
            return cursor, state
        recorded = dict(state.blocks) | {number: known}
        fork: tuple[int, int] | None = None
        for n in sorted(recorded, reverse=True):
            if n <= head and (await self.node.block(n))[0] == recorded[n]:
                fork = (n, recorded[n])
                break
        if fork is None:
            # Every block the mirror recorded is gone: undo everything and start again at
            # the lowest of them, on the chain as it is now.
            lowest = min(recorded)
            fork = (lowest, (await self.node.block(lowest))[0])
            orphaned = sorted(state.entries)
        else:
            orphaned = sorted(seq for seq, block in state.entries.items() if block > fork[0])
        records = [self.book.store.transaction(seq) for seq in reversed(orphaned)]
        requests = [mirror.rollback(self.chain, r, *fork) for r in records]
        self._submit([[r] for r in requests])
        self._move_cursor(*fork)
        report.reorg = Reorg(number, fork[0], len(requests))
        report.warnings.append(
            f"reorg: L2 block {number} changed; rolled back {len(requests)} mirror entries "
            f"to block {fork[0]}"
        )
        self.log(report.warnings[-1])
        report.from_block = report.to_block = fork[0]
        return fork, load_state(self.book)

    async def _authorisations(
        self, state: MirrorState, cursor: tuple[int, int], report: MirrorReport
    ) -> dict[int, str]:
        """Close what is no longer authorised, open what newly is; the L2 addresses to
        follow, with their mirror accounts."""
        wanted = state.wanted(self.token)
        number, block_hash = cursor
        kept = {
            account: opened
            for account, opened in state.opened.items()
            if account in wanted and wanted[account].seq == opened.authorization
        }
        requests: list[TxRequest] = []
        for account, opened in sorted(state.opened.items()):
            if account in kept:
                continue
            balance = self.book.balance(account, MIRROR_ASSET.code).units
            reason = "revoked" if account not in wanted else "re-authorised"
            requests.append(
                mirror.closing(
                    self.chain,
                    account,
                    opened,
                    self.token,
                    number,
                    block_hash,
                    balance,
                    reason,
                    state.epoch,
                )
            )
            report.closed += 1
        new = [auth for account, auth in sorted(wanted.items()) if account not in kept]
        addresses = [a.l2_address for a in new]
        balances = await self.node.balances(self.token, addresses, number, block_hash)
        for auth, balance in zip(new, balances, strict=True):
            requests.append(
                mirror.opening(self.chain, auth, number, block_hash, balance, state.epoch)
            )
        report.opened += len(new)
        report.entries += self._submit([[r] for r in requests])
        for auth in state.authorizations.values():
            if auth.token == self.token and wanted.get(auth.account) != auth:
                report.warnings.append(
                    f"{auth.account} authorised L2 account {auth.l2_address:#x}, which is "
                    "mirrored for another owner already: not mirrored twice"
                )
        follow = {opened.l2_address: account for account, opened in kept.items()}
        return follow | {a.l2_address: a.account for a in new}

    async def _follow(
        self,
        accounts: dict[int, str],
        cursor: tuple[int, int],
        target: int,
        chunk_size: int,
        range_size: int,
        report: MirrorReport,
        epoch: int,
    ) -> None:
        """Ingest the transfers of blocks after the cursor up to ``target``."""
        number, previous = cursor
        start = number + 1
        while start <= target:
            end = min(target, start + range_size - 1)
            end_hash, _ = await self.node.block(end)  # before the events: see _canonical
            transfers = (
                await self.node.transfers(self.token, start, end, chunk_size) if accounts else []
            )
            blocks = await self._canonical(transfers, (start, previous), (end, end_hash))
            groups = []
            for (number, block_hash), found in sorted(blocks.items()):
                groups.append(
                    mirror.block_entries(
                        self.chain, self.token, number, block_hash, found, accounts, epoch
                    )
                )
                report.events += sum(t.sender in accounts or t.recipient in accounts for t in found)
            report.entries += self._submit(groups)
            self._move_cursor(end, end_hash)
            report.to_block = end
            start, previous = end + 1, end_hash

    async def _canonical(
        self,
        transfers: Sequence[Transfer],
        start: tuple[int, int],
        end: tuple[int, int],
    ) -> dict[tuple[int, int], list[Transfer]]:
        """Group ``transfers`` (of blocks ``start[0]..end[0]``) by block and check they are
        one chain's: the first block's parent is the block before (hash ``start[1]``), the
        last block still has the hash read before the events (``end[1]``), and each block
        with events has the hash its events named. A reorg during the read fails the sync
        before anything of the range is written; the next sync sees it at the cursor."""
        blocks: dict[tuple[int, int], list[Transfer]] = {}
        for t in transfers:
            blocks.setdefault((t.block_number, t.block_hash), []).append(t)
        numbers = [n for n, _ in blocks]
        if len(set(numbers)) != len(numbers):
            raise NodeFailure("the node returned one block under two hashes: it is mid-reorg")
        hashes = await asyncio.gather(*(self.node.block(n) for n in numbers))
        for (number, block_hash), (now, _) in zip(blocks, hashes, strict=True):
            if now != block_hash:
                raise NodeFailure(
                    f"block {number} changed while it was read ({block_hash:#x} -> {now:#x}): "
                    "the chain reorganised mid-sync; nothing was written for it, sync again"
                )
        parent = (await self.node.block(start[0]))[1]
        if parent != start[1] or (await self.node.block(end[0]))[0] != end[1]:
            raise NodeFailure(
                f"the chain reorganised while blocks {start[0]}..{end[0]} were read: nothing "
                "was written for them; sync again"
            )
        return blocks

    def _submit(self, groups: Sequence[Sequence[TxRequest]]) -> int:
        """Operator-sign and commit ``groups`` of requests in batches that never split a
        group (a block's parts land together, so a crash leaves whole blocks); how many
        requests were new."""
        batches: list[list[TxRequest]] = [[]]
        for group in groups:
            assert len(group) <= MAX_BATCH, "one L2 block's entries exceed a batch"
            if len(batches[-1]) + len(group) > MAX_BATCH:
                batches.append([])
            batches[-1] += group
        written = 0
        for batch in filter(None, batches):
            receipts = self.book.submit([self.book.operator_signed(r) for r in batch])
            written += sum(not r.duplicate for r in receipts)
        return written


async def check_chain(book: Ledger, node: StarknetNode) -> None:
    """Refuse a node on another chain than the ledger's L2 chain."""
    expected = snip12.encode_shortstring(book.domain.chain_id)
    found = await node.chain_id()
    if found != expected:
        raise MirrorError(
            f"the node is on chain {_chain_text(found)}, but this ledger's L2 chain is "
            f"{book.domain.chain_id}: use a node of that chain"
        )


def _chain_text(chain_id: int) -> str:
    raw = chain_id.to_bytes((chain_id.bit_length() + 7) // 8 or 1, "big")
    text = raw.decode("ascii", errors="replace")
    return text if text.isprintable() and text.isascii() else f"{chain_id:#x}"


def status(
    book: Ledger, url: str | None = None, token: int | str | None = None
) -> list[AccountStatus]:
    """Every authorised or mirrored account: its mirrored balance and block; with a node,
    how far behind the head that is and the drift from a fresh ``balance_of`` there."""
    state = load_state(book)
    mirrored = state.token if token is None else mirror.parse_address(token)
    rows: dict[str, tuple[str, int, bool]] = {}
    for account, opened in state.opened.items():
        rows[account] = (account.removeprefix("mirror:"), opened.l2_address, False)
    for auth in state.authorizations.values():
        if mirrored is None or auth.token == mirrored:
            rows[auth.account] = (auth.owner, auth.l2_address, True)
    at = None if mirrored is None else mirror_cursor(book, state, mirrored)
    cursor = None if at is None else at[0]
    statuses = [
        AccountStatus(
            owner,
            account,
            f"{l2:#x}",
            authorized,
            book.balance(account, MIRROR_ASSET.code).units,
            cursor if account in state.opened else None,
        )
        for account, (owner, l2, authorized) in sorted(rows.items())
    ]
    if url is None or mirrored is None or cursor is None:
        return statuses
    return asyncio.run(_fresh(book, url, mirrored, cursor, statuses))


async def _fresh(
    book: Ledger, url: str, token: int, block: int, statuses: list[AccountStatus]
) -> list[AccountStatus]:
    async with StarknetNode(url) as node:
        await check_chain(book, node)
        head = await node.head()
        opened = [s for s in statuses if s.as_of is not None]
        fresh = await node.balances(token, [int(s.l2_address, 16) for s in opened], block)
    by_account = {s.account: f for s, f in zip(opened, fresh, strict=True)}
    return [replace(s, head=head, fresh=by_account.get(s.account)) for s in statuses]
