"""The StarkNet balance mirror's journal entries, and the state they imply. Pure.

An onboarded owner opts in with a signed ``mirror_authorize`` action (SNIP-12, by its L2
key) naming its own L2 account and the token; ``mirror_revoke`` opts out. The mirror then
records, as operator-signed ``mirror`` transactions in the journal:

* ``open``: the account's ``balance_of`` read at a pinned L2 block (the sync's cursor);
* ``events``: the ERC-20 ``Transfer`` events of one L2 block that touch mirrored accounts,
  netted per account (a block with many events is split in parts to respect the journal's
  limits);
* ``close``: the mirrored balance returned when an authorisation is revoked or replaced;
* ``rollback``: the exact opposite of an entry read from an L2 block that a reorg removed
  (the journal stays append-only).

Every entry names the L2 block number and hash it was read at, and each event its
transaction hash and index, so an account's history shows where each mirrored unit came
from. Mirrored value is its own asset (``L2USDC``) on its own accounts (``mirror:OWNER``),
against ``system:starknet``: evidence of L2 holdings, never spendable collateral (no other
transaction may post to it: ``ledger.core.journal.check_mirror_postings``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from ledger.core.accounts import MIRROR_PREFIX, STARKNET, mirror_account
from ledger.core.amounts import MAX_AMOUNT, MIRROR_ASSET
from ledger.core.journal import Posting, TxKind, TxRecord, TxRequest, make_request
from ledger.core.snip12 import FIELD_PRIME
from ledger.errors import MirrorError, UnbalancedTransaction

MIRROR_ACTIONS = ("mirror_authorize", "mirror_revoke")

# Selector of ``Transfer`` (starknet_keccak("Transfer")), the first key of every ERC-20
# transfer event, Cairo 0 and Cairo 1 alike.
TRANSFER_SELECTOR = 0x99CD8BDE557814842A3121E8DDFD433A539B8C9F14BF31EBF108D12E6196E9
# starknet_keccak("balance_of"): the Cairo 1 ERC-20 entry point the opening snapshot calls.
BALANCE_OF_SELECTOR = 0x35A73CD311A05D46DEDA634C5EE045DB92F811B4E74BCA4437FCB5302B7AF33
# One entry stays well inside MAX_POSTINGS_PER_TX (two accounts per event, plus the
# counterparty) and MAX_METADATA_BYTES (about 300 bytes per event).
EVENTS_PER_ENTRY = 30


class Transfer(NamedTuple):
    """One ERC-20 ``Transfer`` event, as read from an L2 block."""

    block_number: int
    block_hash: int
    tx_hash: int
    event_index: int
    sender: int
    recipient: int
    amount: int

    def to_json(self) -> dict[str, str | int]:
        return {
            "tx": f"{self.tx_hash:#x}",
            "event": self.event_index,
            "from": f"{self.sender:#x}",
            "to": f"{self.recipient:#x}",
            "amount": str(self.amount),
        }


class Authorization(NamedTuple):
    """An owner's standing consent to mirror ``l2_address``'s ``token`` balance, given
    by the signed action recorded at ``seq``."""

    owner: str
    l2_address: int
    token: int
    seq: int

    @property
    def account(self) -> str:
        return mirror_account(self.owner)


class Opened(NamedTuple):
    """A mirrored account: under which authorisation, and since which L2 block."""

    authorization: int
    l2_address: int
    block: int


@dataclass(slots=True)
class MirrorState:
    """What the journal says about the mirror: standing authorisations, opened accounts,
    and the L2 blocks it recorded (the hashes a reorg check compares against)."""

    authorizations: dict[str, Authorization] = field(default_factory=dict)  # by owner
    opened: dict[str, Opened] = field(default_factory=dict)  # by mirror account
    blocks: dict[int, int] = field(default_factory=dict)  # L2 number -> hash, recorded
    entries: dict[int, int] = field(default_factory=dict)  # seq -> L2 block, in force
    token: int | None = None
    # How many entries reorgs rolled back: part of every key, so that a block read again
    # after a rollback (the chain returned to an earlier fork) is a new entry, not a replay.
    epoch: int = 0

    @property
    def last_block(self) -> tuple[int, int] | None:
        """The newest L2 block an entry was read at, with its hash."""
        if not self.blocks:
            return None
        number = max(self.blocks)
        return number, self.blocks[number]

    def wanted(self, token: int) -> dict[str, Authorization]:
        """The authorisations for ``token``, by mirror account; an L2 account two owners
        authorised (one party holding both L1 keys) is mirrored once, for the first."""
        claimed: set[int] = set()
        wanted: dict[str, Authorization] = {}
        for auth in sorted(self.authorizations.values(), key=lambda a: a.seq):
            if auth.token == token and auth.l2_address not in claimed:
                claimed.add(auth.l2_address)
                wanted[auth.account] = auth
        return wanted


def fold(records: Iterable[TxRecord]) -> MirrorState:
    """The mirror state of a journal, from its account settings and mirror entries (in
    sequence order); an entry a rollback undid counts for nothing but the epoch."""
    records = list(records)
    metadata = {r.seq: json.loads(r.metadata) for r in records}
    rolled_back = {
        int(meta["reverts"]) for meta in metadata.values() if meta.get("mirror") == "rollback"
    }
    state = MirrorState(epoch=len(rolled_back))
    for record in records:
        meta = metadata[record.seq]
        if record.kind == TxKind.ACCOUNT_SETTING.value:
            _fold_setting(state, meta["auth"], record.seq)
        elif meta["mirror"] != "rollback" and record.seq not in rolled_back:
            _fold_entry(state, meta, record.seq)
    return state


def _fold_setting(state: MirrorState, envelope: Mapping[str, Any], seq: int) -> None:
    action = envelope["action"]
    if action not in MIRROR_ACTIONS:
        return
    message = envelope["message"]
    owner = str(envelope["signer"]["account"])
    if action == "mirror_authorize":
        l2_address, token = int(message["l2_address"], 16), int(message["token"], 16)
        state.authorizations[owner] = Authorization(owner, l2_address, token, seq)
    else:
        state.authorizations.pop(owner, None)


def _fold_entry(state: MirrorState, meta: Mapping[str, Any], seq: int) -> None:
    block, block_hash = int(meta["block"]), int(meta["block_hash"], 16)
    state.token = int(meta["token"], 16)
    state.blocks[block] = block_hash
    state.entries[seq] = block
    entry = meta["mirror"]
    if entry == "open":
        state.opened[meta["account"]] = Opened(
            int(meta["authorization"]), int(meta["l2_address"], 16), block
        )
    elif entry == "close":
        state.opened.pop(meta["account"], None)


def parse_address(value: int | str, what: str = "token") -> int:
    """A StarkNet contract address: an int or a 0x-hex string below the field prime (a
    typo must not become some other felt, such as a short string)."""
    if isinstance(value, str):
        try:
            if not value.startswith("0x"):
                raise ValueError(value)
            value = int(value, 16)
        except ValueError:
            raise MirrorError(
                f"{what} {value!r} is not a StarkNet address: expected 0x and hex digits"
            ) from None
    if not 0 < value < FIELD_PRIME:
        raise MirrorError(f"{what} {value:#x} is not a StarkNet address (0 < address < P)")
    return value


def parse_u256(words: Sequence[object], what: str, bounded: bool = True) -> int:
    """A ``[low, high]`` u256; ``bounded``: one that must be a USDC amount the ledger can
    hold (an unrelated transfer of the token may be larger: it is not bounded here)."""
    if len(words) != 2 or not all(type(w) is int and 0 <= w < 2**128 for w in words):
        raise MirrorError(
            f"{what}: expected a u256 as two 128-bit felts [low, high], got {list(words)}"
        )
    low, high = words
    assert isinstance(low, int) and isinstance(high, int)
    if not bounded:
        return high << 128 | low
    if high or low > MAX_AMOUNT:
        raise MirrorError(
            f"{what}: u256 {high:#x}:{low:#x} is beyond any USDC amount the ledger holds "
            f"(at most {MAX_AMOUNT}); the node or the token address is wrong"
        )
    return low


def parse_transfer(keys: Sequence[int], data: Sequence[int]) -> tuple[int, int, int] | None:
    """``(from, to, amount)`` of a ``Transfer`` event: Cairo 1 (keys [selector, from, to],
    data [low, high]) or Cairo 0 (keys [selector], data [from, to, low, high]); None for
    other events of the token."""
    if not keys or keys[0] != TRANSFER_SELECTOR:
        return None
    if len(keys) == 3 and len(data) == 2:
        sender, recipient, words = keys[1], keys[2], data
    elif len(keys) == 1 and len(data) == 4:
        sender, recipient, words = data[0], data[1], data[2:]
    else:
        raise MirrorError(
            f"a Transfer event with {len(keys)} keys and {len(data)} data words is neither "
            "the Cairo 1 nor the Cairo 0 ERC-20 layout"
        )
    return sender, recipient, parse_u256(words, "Transfer amount", bounded=False)


def _metadata(entry: str, chain: str, token: int, block: int, block_hash: int) -> dict[str, Any]:
    return {
        "mirror": entry,
        "chain": chain,
        "token": f"{token:#x}",
        "block": block,
        "block_hash": f"{block_hash:#x}",
    }


def _move(account: str, amount: int) -> tuple[Posting, ...]:
    if amount == 0:
        return ()
    return tuple(
        sorted(
            (
                Posting(STARKNET, MIRROR_ASSET.code, -amount),
                Posting(account, MIRROR_ASSET.code, amount),
            )
        )
    )


def opening(
    chain: str, auth: Authorization, block: int, block_hash: int, balance: int, epoch: int = 0
) -> TxRequest:
    """Start mirroring ``auth``'s account with its ``balance_of`` at ``block``."""
    meta = _metadata("open", chain, auth.token, block, block_hash)
    meta |= {
        "account": auth.account,
        "l2_address": f"{auth.l2_address:#x}",
        "authorization": auth.seq,
        "balance": str(balance),
    }
    key = f"l2open/{epoch}/{auth.seq}/{block}/{block_hash:#x}"
    return make_request(TxKind.MIRROR.value, key, _move(auth.account, balance), meta)


def closing(
    chain: str,
    account: str,
    opened: Opened,
    token: int,
    block: int,
    block_hash: int,
    balance: int,
    reason: str,
    epoch: int = 0,
) -> TxRequest:
    """Stop mirroring ``account``: its mirrored ``balance`` returns to ``system:starknet``."""
    meta = _metadata("close", chain, token, block, block_hash)
    meta |= {
        "account": account,
        "authorization": opened.authorization,
        "balance": str(balance),
        "reason": reason,
    }
    key = f"l2close/{epoch}/{opened.authorization}/{block}/{block_hash:#x}"
    return make_request(TxKind.MIRROR.value, key, _move(account, -balance), meta)


def block_entries(
    chain: str,
    token: int,
    block: int,
    block_hash: int,
    transfers: Sequence[Transfer],
    accounts: Mapping[int, str],
    epoch: int = 0,
) -> list[TxRequest]:
    """The entries of one L2 block: its transfers touching a mirrored address (``accounts``
    maps L2 address to mirror account), netted per account, in parts of at most
    ``EVENTS_PER_ENTRY`` events. Deterministic for a given block, so re-reading it after a
    crash yields the same keys."""
    relevant = [t for t in transfers if t.sender in accounts or t.recipient in accounts]
    for t in relevant:
        if t.amount > MAX_AMOUNT:
            raise MirrorError(
                f"transfer {t.tx_hash:#x}/{t.event_index} in L2 block {block} moves {t.amount}, "
                f"beyond any USDC amount the ledger holds (at most {MAX_AMOUNT}): is the "
                "token address right?"
            )
    requests = []
    for part, start in enumerate(range(0, len(relevant), EVENTS_PER_ENTRY)):
        chunk = relevant[start : start + EVENTS_PER_ENTRY]
        touched = {a for t in chunk for a in (t.sender, t.recipient) if a in accounts}
        meta = _metadata("events", chain, token, block, block_hash)
        meta["accounts"] = {f"{a:#x}": accounts[a] for a in sorted(touched)}
        meta["events"] = [t.to_json() for t in chunk]
        key = f"l2/{epoch}/{block}/{block_hash:#x}/{part}"
        requests.append(make_request(TxKind.MIRROR.value, key, _net(meta), meta))
    return requests


def check_evidence(request: TxRequest) -> None:
    """Refuse a mirror entry whose postings are not exactly what the L2 reads it records
    imply (checked on submission and again on replay)."""
    try:
        expected = evidence_postings(json.loads(request.metadata))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise UnbalancedTransaction(
            f"mirror entry {request.key!r}: bad metadata ({exc!r})"
        ) from exc
    stored = tuple(sorted(request.postings))
    if expected is not None and stored != expected:
        raise UnbalancedTransaction(
            f"mirror entry {request.key!r} posts {list(stored)}, but the L2 reads it records "
            f"imply {list(expected)}"
        )


def evidence_postings(meta: Mapping[str, Any]) -> tuple[Posting, ...] | None:
    """The postings an open, close or events entry's metadata implies (audit recomputes
    them); None for a rollback, which is the opposite of the entry it names."""
    entry = meta["mirror"]
    if entry == "open":
        return _move(str(meta["account"]), int(meta["balance"]))
    if entry == "close":
        return _move(str(meta["account"]), -int(meta["balance"]))
    return _net(meta) if entry == "events" else None


def _net(meta: Mapping[str, Any]) -> tuple[Posting, ...]:
    """An events entry's postings: its transfers netted per mirror account, the rest of
    each transfer against ``system:starknet``."""
    accounts = {int(address, 16): str(a) for address, a in meta["accounts"].items()}
    net: dict[str, int] = {}
    for event in meta["events"]:
        amount = int(event["amount"])
        for address, sign in ((event["from"], -1), (event["to"], 1)):
            account = accounts.get(int(address, 16), STARKNET)
            net[account] = net.get(account, 0) + sign * amount
    code = MIRROR_ASSET.code
    return tuple(sorted(Posting(a, code, amount) for a, amount in net.items() if amount))


def rollback(chain: str, entry: TxRecord, fork_block: int, fork_hash: int) -> TxRequest:
    """Undo ``entry``, read from an L2 block that is no longer on the chain: the chain
    forked after ``fork_block`` (which it still has, with hash ``fork_hash``)."""
    meta = json.loads(entry.metadata)
    undo = _metadata("rollback", chain, int(meta["token"], 16), fork_block, fork_hash)
    undo |= {
        "reverts": entry.seq,
        "orphaned_block": meta["block"],
        "orphaned_hash": meta["block_hash"],
    }
    postings = tuple(Posting(p.account, p.asset, -p.amount) for p in entry.postings)
    return make_request(TxKind.MIRROR.value, f"l2rollback/{entry.seq}", postings, undo)


@dataclass(slots=True)
class ProvenanceAudit:
    """Replay's check of where mirrored value came from, one transaction at a time: an
    ``open`` names the owner's standing authorisation (same L2 account and token), and a
    ``rollback`` undoes exactly one entry still in force."""

    state: MirrorState = field(default_factory=MirrorState)
    postings: dict[int, tuple[Posting, ...]] = field(default_factory=dict)  # in force

    def observe(self, record: TxRecord) -> list[str]:
        """The problems ``record`` has (it is then taken into account)."""
        if record.kind == TxKind.ACCOUNT_SETTING.value:
            _fold_setting(self.state, json.loads(record.metadata)["auth"], record.seq)
            return []
        if record.kind != TxKind.MIRROR.value:
            return []
        try:
            return self._entry(record, json.loads(record.metadata))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            return [f"mirror entry {record.seq} has malformed metadata ({exc!r})"]

    def _entry(self, record: TxRecord, meta: Mapping[str, Any]) -> list[str]:
        postings = tuple(sorted(Posting(p.account, p.asset, p.amount) for p in record.postings))
        if meta["mirror"] == "rollback":
            undone = self.postings.pop(int(meta["reverts"]), None)
            if undone is None:
                return [f"rollback {record.seq} undoes {meta['reverts']}: no mirror entry in force"]
            if postings != tuple(sorted(Posting(p.account, p.asset, -p.amount) for p in undone)):
                return [f"rollback {record.seq} is not the exact opposite of {meta['reverts']}"]
            return []
        self.postings[record.seq] = postings
        if meta["mirror"] != "open":
            return []
        account = str(meta["account"])
        owner = account.removeprefix(MIRROR_PREFIX)
        auth = self.state.authorizations.get(owner)
        named = (int(meta["authorization"]), int(meta["l2_address"], 16), int(meta["token"], 16))
        if (
            auth is None
            or auth.account != account
            or (auth.seq, auth.l2_address, auth.token) != named
        ):
            return [f"mirror entry {record.seq} opens {account} without its standing authorisation"]
        return []
