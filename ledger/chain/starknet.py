"""A StarkNet node, as the balance mirror uses it: starknet-py's ``FullNodeClient`` over
JSON-RPC, with every answer checked before the mirror trusts it and every failure retried
with backoff.

Only the methods a USDC mirror needs: ``starknet_specVersion``, ``starknet_chainId``,
``starknet_blockNumber``, ``starknet_getBlockWithTxHashes``, ``starknet_call``
(``balance_of``) and ``starknet_getEvents``. A timeout, an HTTP 5xx, a malformed answer
or a node behind the mirror is retried (``retries`` times, doubling the wait from
``backoff`` seconds) and each retry is reported through ``log``; what still fails raises
:class:`NodeFailure` naming the call and the last error. Answers that are wrong rather
than failed (another chain, a u256 with its high word set) raise :class:`MirrorError` at
once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from types import TracebackType
from typing import TypeVar

import aiohttp
from marshmallow import ValidationError
from starknet_py.net.client_errors import ClientError
from starknet_py.net.client_models import Call, EmittedEvent, StarknetBlockWithTxHashes
from starknet_py.net.full_node_client import FullNodeClient
from starknet_py.net.http_client import ServerError

from ledger.core.mirror import (
    BALANCE_OF_SELECTOR,
    TRANSFER_SELECTOR,
    Transfer,
    parse_transfer,
    parse_u256,
)
from ledger.errors import MirrorError

SPEC_VERSION = "0.10"  # the JSON-RPC spec line starknet-py 0.30 speaks
MAX_CONCURRENT_CALLS = 16
_T = TypeVar("_T")
_RETRYABLE = (
    aiohttp.ClientError,
    asyncio.TimeoutError,
    ServerError,
    ValidationError,
    KeyError,
    TypeError,
    ValueError,
)
# JSON-RPC errors a healthy node answers for a block it does not have yet: a node behind.
_BLOCK_NOT_FOUND = 24


class NodeFailure(MirrorError):
    """The node kept failing (timeouts, 5xx, malformed answers, behind) after retries."""


class _Behind(Exception):
    """The node does not have a block the mirror knows exists (retryable)."""


def _retryable(exc: BaseException) -> bool:
    if isinstance(exc, ClientError):
        # HTTP codes arrive as strings, JSON-RPC codes as ints: HTTP 5xx, 408 and 429, and
        # the JSON-RPC internal (-32603) and server (-32000..-32099) errors are transient.
        code = exc.code
        if isinstance(code, int):
            return code == _BLOCK_NOT_FOUND or code == -32603 or -32099 <= code <= -32000
        return str(code).startswith("5") or code in ("408", "429")
    return isinstance(exc, (*_RETRYABLE, _Behind))


def _felt(value: object, what: str) -> int:
    """A felt the node sent as a 0x-hex string."""
    if isinstance(value, str) and value.startswith("0x"):
        try:
            return int(value, 16)
        except ValueError:
            pass
    raise MirrorError(f"{what}: expected a 0x-hex felt, got {value!r}")


class StarknetNode:
    """One node at ``url``; use as ``async with StarknetNode(url) as node``."""

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 10.0,
        retries: int = 4,
        backoff: float = 0.25,
        log: Callable[[str], None] = lambda _: None,
    ) -> None:
        self.url = url
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.log = log
        self.calls = 0
        self._session: aiohttp.ClientSession | None = None
        self._client: FullNodeClient | None = None
        self._limit = asyncio.Semaphore(MAX_CONCURRENT_CALLS)

    async def __aenter__(self) -> StarknetNode:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))
        self._client = FullNodeClient(self.url, session=self._session)
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._session is not None:
            await self._session.close()

    @property
    def client(self) -> FullNodeClient:
        assert self._client is not None, "use StarknetNode as an async context manager"
        return self._client

    async def _call(self, what: str, call: Callable[[], Awaitable[_T]]) -> _T:
        """``call()``, retried with exponential backoff while it fails retryably."""
        for attempt in range(self.retries + 1):
            try:
                async with self._limit:
                    self.calls += 1
                    return await call()
            except Exception as exc:  # classified here: retried, refused, or not the node's
                if isinstance(exc, ClientError) and not _retryable(exc):
                    raise MirrorError(
                        f"{what}: the node refused it with code {exc.code}: {exc.message}"
                    ) from exc
                if not _retryable(exc):
                    raise
                problem = f"{type(exc).__name__}: {exc}".strip()[:300]
                if attempt == self.retries:
                    raise NodeFailure(
                        f"{what} failed {self.retries + 1} times at {self.url}; last: {problem}"
                    ) from exc
                wait = self.backoff * 2**attempt
                self.log(f"{what} failed ({problem}); retrying in {wait:.2f}s")
                await asyncio.sleep(wait)
        raise AssertionError("unreachable")

    # ------------------------------------------------------------------ chain facts
    async def spec_version(self) -> str:
        """The node's JSON-RPC spec version; another line than 0.10 is reported."""
        version = await self._call("starknet_specVersion", self.client.spec_version)
        if not isinstance(version, str):
            raise MirrorError(f"starknet_specVersion: expected a string, got {version!r}")
        if version.split(".")[:2] != SPEC_VERSION.split("."):
            self.log(
                f"warning: {self.url} speaks JSON-RPC {version}; the mirror is built for "
                f"{SPEC_VERSION}.x (starknet-py may misread its answers)"
            )
        return version

    async def chain_id(self) -> int:
        """The chain id felt (e.g. ``SN_SEPOLIA`` as a short string)."""
        value = await self._call("starknet_chainId", self.client.get_chain_id)
        return _felt(value, "starknet_chainId")

    async def head(self, at_least: int = 0) -> int:
        """The newest accepted block number; a node whose head is below ``at_least`` (a
        block the mirror already read) is behind, and asked again after a backoff."""

        async def fetch() -> int:
            number = await self.client.get_block_number()
            if type(number) is not int or number < 0:
                raise MirrorError(f"starknet_blockNumber: expected a block number, got {number!r}")
            if number < at_least:
                raise _Behind(
                    f"the node's head {number} is behind block {at_least}, which the mirror "
                    "already read: the node is still syncing, or the chain reorganised onto "
                    "a shorter fork (the mirror checks once the head passes that block)"
                )
            return number

        return await self._call("starknet_blockNumber", fetch)

    async def block(self, number: int) -> tuple[int, int]:
        """``(hash, parent hash)`` of block ``number`` (retried while the node lacks it)."""

        async def fetch() -> tuple[int, int]:
            block = await self.client.get_block_with_tx_hashes(block_number=number)
            if not isinstance(block, StarknetBlockWithTxHashes) or block.block_number != number:
                raise _Behind(f"block {number} is not an accepted block on this node yet")
            return block.block_hash, block.parent_hash

        return await self._call(f"starknet_getBlockWithTxHashes({number})", fetch)

    # ------------------------------------------------------------------ the token
    async def balance_of(
        self, token: int, address: int, block: int, block_hash: int | None = None
    ) -> int:
        """``token.balance_of(address)`` at ``block`` (by its hash when given: a block a
        reorg replaced is then not read by mistake)."""
        call = Call(to_addr=token, selector=BALANCE_OF_SELECTOR, calldata=[address])

        async def fetch() -> list[int]:
            if block_hash is not None:
                return await self.client.call_contract(call, block_hash=block_hash)
            return await self.client.call_contract(call, block_number=block)

        what = f"balance_of({address:#x}) at block {block}"
        words = await self._call(what, fetch)
        if not isinstance(words, list):
            raise MirrorError(f"{what}: expected a list of felts, got {words!r}")
        return parse_u256(words, what)

    async def balances(
        self, token: int, addresses: Sequence[int], block: int, block_hash: int | None = None
    ) -> list[int]:
        """``balance_of`` of each address at ``block``, the calls in flight together."""
        calls = (self.balance_of(token, a, block, block_hash) for a in addresses)
        return list(await asyncio.gather(*calls))

    async def transfers(
        self, token: int, from_block: int, to_block: int, chunk_size: int
    ) -> list[Transfer]:
        """Every ``Transfer`` event of ``token`` in blocks ``from_block..to_block``, page by
        page (``chunk_size`` events per call, following continuation tokens)."""
        found: list[Transfer] = []
        after: str | None = None
        what = f"starknet_getEvents({from_block}..{to_block})"
        while True:
            page = partial(self._events, token, from_block, to_block, chunk_size, after)
            events, after = await self._call(what, page)
            found += [t for t in map(_transfer, events) if t is not None]
            if after is None:
                return found

    async def _events(
        self, token: int, from_block: int, to_block: int, chunk_size: int, after: str | None
    ) -> tuple[list[EmittedEvent], str | None]:
        chunk = await self.client.get_events(
            address=token,
            keys=[[TRANSFER_SELECTOR]],
            from_block_number=from_block,
            to_block_number=to_block,
            continuation_token=after,
            chunk_size=chunk_size,
        )
        return chunk.events, chunk.continuation_token


def _transfer(event: EmittedEvent) -> Transfer | None:
    if event.block_number is None or event.block_hash is None:
        raise MirrorError(
            f"event {event.transaction_hash:#x}/{event.event_index} has no block: only "
            "accepted blocks are mirrored"
        )
    parsed = parse_transfer(event.keys, event.data)
    if parsed is None:
        return None
    sender, recipient, amount = parsed
    return Transfer(
        event.block_number,
        event.block_hash,
        event.transaction_hash,
        event.event_index,
        sender,
        recipient,
        amount,
    )
