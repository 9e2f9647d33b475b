"""The StarkNet JSON-RPC test node, driven through starknet-py's real FullNodeClient."""

from __future__ import annotations

import asyncio
import itertools
import json
import urllib.request
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from typing import Any, TypeVar

import aiohttp
import pytest
from marshmallow import ValidationError
from starknet_py.hash.selector import get_selector_from_name
from starknet_py.net.client_errors import ClientError
from starknet_py.net.client_models import (
    BlockStatus,
    Call,
    EmittedEvent,
    PreConfirmedStarknetBlockWithTxHashes,
    StarknetBlockWithTxHashes,
)
from starknet_py.net.full_node_client import FullNodeClient
from starknet_py.net.http_client import IncompatibleRPCVersionWarning, ServerError

from tests.starknet_node import SN_MAIN, SN_SEPOLIA, TRANSFER_SELECTOR, StarknetTestNode

T = TypeVar("T")

USDC = 0x053C91253BC9682C04929CA02ED00B3E423F6710D2EE7E0D5EBB06F3ECF368A8
OTHER_TOKEN = 0x4718F5A0FC34CC1AF16A1CDEE98FFB20C31F5CD61D6AB07201858F4287C938D
ALICE = 0xA11CE
BOB = 0xB0B
CAROL = 0xCA201
BALANCE_OF = get_selector_from_name("balance_of")


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def code_of(info: pytest.ExceptionInfo[ClientError]) -> object:
    """``ClientError.code`` is typed ``str | None`` but holds the JSON-RPC code (an int)."""
    return info.value.code


def client(node: StarknetTestNode) -> FullNodeClient:
    return FullNodeClient(node_url=node.url)


def balance_call(holder: int, token: int = USDC, selector: int = BALANCE_OF) -> Call:
    return Call(to_addr=token, selector=selector, calldata=[holder])


@pytest.fixture
def node() -> Iterator[StarknetTestNode]:
    """Blocks: 1 mints Alice 100 and Bob 50, 2 moves 30 Alice -> Bob, 3 mints Carol 5 of
    another token, 4 moves 10 Bob -> Carol."""
    with StarknetTestNode() as n:
        n.mint(USDC, ALICE, 100)
        n.mint(USDC, BOB, 50)
        n.mine()
        n.transfer(USDC, ALICE, BOB, 30)
        n.mine()
        n.mint(OTHER_TOKEN, CAROL, 5)
        n.mine()
        n.transfer(USDC, BOB, CAROL, 10)
        n.mine()
        yield n


def test_spec_version_and_chain_id(node: StarknetTestNode) -> None:
    c = client(node)
    assert run(c.spec_version()) == "0.10.2"
    assert run(c.get_chain_id()) == hex(SN_SEPOLIA)
    node.chain_id = "SN_MAIN"  # wrong-chain scenario, switched at runtime
    assert run(c.get_chain_id()) == hex(SN_MAIN)


def test_old_spec_version_warns() -> None:
    with (
        StarknetTestNode(spec_version="0.8.1", chain_id=SN_MAIN) as n,
        pytest.warns(IncompatibleRPCVersionWarning),
    ):
        assert run(client(n).get_chain_id()) == hex(SN_MAIN)
        assert run(client(n).spec_version()) == "0.8.1"


def test_block_number_and_hash(node: StarknetTestNode) -> None:
    c = client(node)
    assert run(c.get_block_number()) == 4
    head = run(c.get_block_hash_and_number())
    assert (head.block_number, head.block_hash) == (4, node.block_hash(4))
    node.behind = 2
    assert run(c.get_block_number()) == 2
    assert run(c.get_block_hash_and_number()).block_hash == node.block_hash(2)
    latest = run(c.get_block_with_tx_hashes(block_number="latest"))
    assert isinstance(latest, StarknetBlockWithTxHashes) and latest.block_number == 2
    # the newer blocks are still served by number
    assert run(c.get_block_with_tx_hashes(block_number=4)).block_number == 4


def test_blocks_by_number_and_hash(node: StarknetTestNode) -> None:
    c = client(node)
    blocks = [run(c.get_block_with_tx_hashes(block_number=n)) for n in range(5)]
    for block in blocks:
        assert isinstance(block, StarknetBlockWithTxHashes)
    genesis = blocks[0]
    assert isinstance(genesis, StarknetBlockWithTxHashes)
    assert genesis.parent_hash == 0 and genesis.transactions == []
    for parent, child in itertools.pairwise(blocks):
        assert isinstance(parent, StarknetBlockWithTxHashes)
        assert isinstance(child, StarknetBlockWithTxHashes)
        assert child.parent_hash == parent.block_hash
        assert child.timestamp > parent.timestamp
    b1 = blocks[1]
    assert isinstance(b1, StarknetBlockWithTxHashes)
    assert b1.status == BlockStatus.ACCEPTED_ON_L2
    assert b1.transactions == list(node.block(1).tx_hashes) and b1.transaction_count == 2
    by_hash = run(c.get_block_with_tx_hashes(block_hash=b1.block_hash))
    assert by_hash == b1
    with pytest.raises(ClientError) as missing:
        run(c.get_block_with_tx_hashes(block_number=5))
    assert code_of(missing) == 24
    with pytest.raises(ClientError) as missing:
        run(c.get_block_with_tx_hashes(block_hash=0x1234))
    assert code_of(missing) == 24


def test_block_tags(node: StarknetTestNode) -> None:
    c = client(node)
    node.mint(USDC, ALICE, 1)
    pre = run(c.get_block_with_tx_hashes())  # no block id: starknet-py sends "pre_confirmed"
    assert isinstance(pre, PreConfirmedStarknetBlockWithTxHashes)
    assert pre.block_number == 5 and pre.transactions == [node.pending_transfers[0].tx_hash]
    with pytest.raises(ClientError) as no_l1:
        run(c.get_block_with_tx_hashes(block_number="l1_accepted"))
    assert code_of(no_l1) == 24
    node.l1_accepted = 2
    l1 = run(c.get_block_with_tx_hashes(block_number="l1_accepted"))
    assert isinstance(l1, StarknetBlockWithTxHashes)
    assert (l1.block_number, l1.status) == (2, BlockStatus.ACCEPTED_ON_L1)


def test_balance_of_at_past_blocks(node: StarknetTestNode) -> None:
    c = client(node)
    expected = {0: (0, 0, 0), 1: (100, 50, 0), 2: (70, 80, 0), 3: (70, 80, 0), 4: (70, 70, 10)}
    for block, balances in expected.items():
        got = tuple(
            run(c.call_contract(balance_call(h), block_number=block))[0]
            for h in (ALICE, BOB, CAROL)
        )
        assert got == balances
        assert balances == tuple(node.balance_of(USDC, h, block) for h in (ALICE, BOB, CAROL))
    camel = balance_call(BOB, selector=get_selector_from_name("balanceOf"))
    assert run(c.call_contract(camel, block_number="latest")) == [70, 0]
    b2 = node.block_hash(2)
    assert run(c.call_contract(balance_call(ALICE), block_hash=b2)) == [70, 0]
    assert run(c.call_contract(balance_call(CAROL, OTHER_TOKEN), block_number=3)) == [5, 0]
    total = Call(to_addr=USDC, selector=get_selector_from_name("total_supply"), calldata=[])
    assert run(c.call_contract(total, block_number=4)) == [150, 0]
    decimals = Call(to_addr=USDC, selector=get_selector_from_name("decimals"), calldata=[])
    assert run(c.call_contract(decimals, block_number=4)) == [6]
    # starknet-py's default block id is "pre_confirmed": queued transfers count there
    node.mint(USDC, ALICE, 1)
    assert run(c.call_contract(balance_call(ALICE))) == [71, 0]
    assert run(c.call_contract(balance_call(ALICE), block_number="latest")) == [70, 0]


def test_call_errors(node: StarknetTestNode) -> None:
    c = client(node)
    with pytest.raises(ClientError) as unknown:
        run(c.call_contract(balance_call(ALICE, token=0xDEAD), block_number="latest"))
    assert code_of(unknown) == 20
    with pytest.raises(ClientError) as no_block:
        run(c.call_contract(balance_call(ALICE), block_number=99))
    assert code_of(no_block) == 24
    with pytest.raises(ClientError) as no_entry:
        run(c.call_contract(balance_call(ALICE, selector=0x1234), block_number="latest"))
    assert code_of(no_entry) == 21


def test_transfer_refuses_overdraft(node: StarknetTestNode) -> None:
    with pytest.raises(ValueError, match="cannot send"):
        node.transfer(USDC, CAROL, ALICE, 11)
    node.transfer(USDC, CAROL, ALICE, 6)
    with pytest.raises(ValueError, match="cannot send"):
        node.transfer(USDC, CAROL, ALICE, 5)  # queued transfers count


def test_events_pages(node: StarknetTestNode) -> None:
    c = client(node)
    pages: list[list[EmittedEvent]] = []
    token: str | None = None
    while True:
        chunk = run(
            c.get_events(
                address=USDC,
                keys=[[TRANSFER_SELECTOR]],
                from_block_number=0,
                to_block_number="latest",
                chunk_size=2,
                continuation_token=token,
            )
        )
        pages.append(chunk.events)
        token = chunk.continuation_token
        if token is None:
            break
    assert [len(p) for p in pages] == [2, 2]
    assert node.call_counts["starknet_getEvents"] == 2
    events = [e for p in pages for e in p]
    assert [(e.block_number, e.transaction_index, e.event_index) for e in events] == [
        (1, 0, 0),
        (1, 1, 0),
        (2, 0, 0),
        (4, 0, 0),
    ]
    assert [(e.keys[1:], e.data) for e in events] == [
        ([0, ALICE], [100, 0]),
        ([0, BOB], [50, 0]),
        ([ALICE, BOB], [30, 0]),
        ([BOB, CAROL], [10, 0]),
    ]
    assert all(e.from_address == USDC and e.keys[0] == TRANSFER_SELECTOR for e in events)
    assert events[0].block_hash == node.block_hash(1)
    assert events[0].transaction_hash == node.block(1).tx_hashes[0]

    followed = run(
        c.get_events(
            address=USDC,
            from_block_number=2,
            to_block_number=4,
            chunk_size=1,
            follow_continuation_token=True,
        )
    )
    assert [e.block_number for e in followed.events] == [2, 4]
    assert followed.continuation_token is None


def test_events_filters(node: StarknetTestNode) -> None:
    c = client(node)

    def fetch(**kwargs: Any) -> list[EmittedEvent]:
        chunk = run(c.get_events(to_block_number="latest", chunk_size=100, **kwargs))
        return chunk.events

    assert len(fetch()) == 5  # both tokens
    assert [e.from_address for e in fetch(address=[OTHER_TOKEN])] == [OTHER_TOKEN]
    to_bob = fetch(address=USDC, keys=[[TRANSFER_SELECTOR], [], [BOB]])
    assert [e.data[0] for e in to_bob] == [50, 30]
    from_alice_or_bob = fetch(address=USDC, keys=[[], [ALICE, BOB]])
    assert [e.data[0] for e in from_alice_or_bob] == [30, 10]
    assert fetch(keys=[[get_selector_from_name("Approval")]]) == []
    assert [e.block_number for e in fetch(address=USDC, from_block_number=3)] == [4]
    assert fetch(address=USDC, from_block_number=9) == []
    # pre_confirmed events (starknet-py's default to_block) have a number but no hash
    node.mint(USDC, BOB, 3)
    pre = run(c.get_events(address=USDC, from_block_number=4, chunk_size=10)).events
    assert [(e.block_number, e.block_hash) for e in pre] == [(4, node.block_hash(4)), (5, None)]


def test_events_chunk_limits(node: StarknetTestNode) -> None:
    c = client(node)
    node.max_chunk_size = 3
    with pytest.raises(ClientError) as too_big:
        run(c.get_events(chunk_size=4, to_block_number="latest"))
    assert code_of(too_big) == 31
    with pytest.raises(ClientError) as bad_token:
        run(c.get_events(chunk_size=1, continuation_token="nonsense"))
    assert code_of(bad_token) == 33


def test_reorg(node: StarknetTestNode) -> None:
    c = client(node)
    old = {n: node.block_hash(n) for n in range(5)}
    page = run(c.get_events(address=USDC, to_block_number="latest", chunk_size=3))
    assert page.continuation_token is not None  # points into block 4

    assert node.reorg(2) == 4  # drops blocks 3 and 4, mines two empty ones
    assert node.fork == 1
    assert {n: node.block_hash(n) for n in range(3)} == {n: old[n] for n in range(3)}
    for n in (3, 4):
        block = run(c.get_block_with_tx_hashes(block_number=n))
        assert isinstance(block, StarknetBlockWithTxHashes)
        assert block.block_hash != old[n] and block.transactions == []
    assert run(c.get_block_with_tx_hashes(block_number=3)).parent_hash == old[2]  # type: ignore[union-attr]
    with pytest.raises(ClientError) as orphan:
        run(c.get_block_with_tx_hashes(block_hash=old[4]))
    assert code_of(orphan) == 24
    assert run(c.call_contract(balance_call(CAROL), block_number=4)) == [0, 0]
    with pytest.raises(ClientError) as stale:
        run(
            c.get_events(
                address=USDC,
                to_block_number="latest",
                chunk_size=3,
                continuation_token=page.continuation_token,
            )
        )
    assert code_of(stale) == 33

    dropped = node.block(2).tx_hashes
    assert node.reorg(3, requeue=True) == 4  # block 2's transfer goes into the new block 2
    assert node.block(2).tx_hashes == dropped and node.block_hash(2) != old[2]
    assert node.balance_of(USDC, BOB) == 80

    node.l1_accepted = 3
    with pytest.raises(ValueError, match="L1"):
        node.reorg(3)


def test_batch_request(node: StarknetTestNode) -> None:
    def request(i: int, holder: int) -> dict[str, Any]:
        call = {
            "contract_address": hex(USDC),
            "entry_point_selector": hex(BALANCE_OF),
            "calldata": [hex(holder)],
        }
        params = {"request": call, "block_id": {"block_number": 4}}
        return {"jsonrpc": "2.0", "id": i, "method": "starknet_call", "params": params}

    batch = [request(i, h) for i, h in enumerate((ALICE, BOB, CAROL))]
    batch.append({"jsonrpc": "2.0", "id": 3, "method": "starknet_nope", "params": {}})
    http = urllib.request.Request(
        node.url, data=json.dumps(batch).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(http, timeout=5) as response:
        answer = json.loads(response.read())
    assert [r["id"] for r in answer] == [0, 1, 2, 3]
    assert [r["result"] for r in answer[:3]] == [["0x46", "0x0"], ["0x46", "0x0"], ["0xa", "0x0"]]
    assert answer[3]["error"]["code"] == -32601
    assert node.batch_sizes == [4] and node.http_requests == 1
    assert node.call_counts["starknet_call"] == 3


async def _with_timeout(node: StarknetTestNode, timeout: aiohttp.ClientTimeout) -> int:
    async with aiohttp.ClientSession(timeout=timeout) as session:
        return await FullNodeClient(node_url=node.url, session=session).get_block_number()


def events_call(c: FullNodeClient) -> Awaitable[Any]:
    return c.get_events(address=USDC, to_block_number="latest", chunk_size=10)


def empty_events_call(c: FullNodeClient) -> Awaitable[Any]:
    return c.get_events(address=USDC, from_block_number=9, chunk_size=10)


FAULT_CASES: list[
    tuple[str, str, Callable[[FullNodeClient], Awaitable[Any]], type[BaseException]]
] = [
    ("starknet_getEvents", "http_500", events_call, ClientError),
    ("starknet_getEvents", "rpc_error", events_call, ClientError),
    ("starknet_getEvents", "malformed", events_call, ValidationError),
    ("starknet_getEvents", "wrong_type", events_call, ValidationError),
    ("starknet_getEvents", "no_result", events_call, ServerError),
    ("starknet_getEvents", "invalid_json", events_call, json.JSONDecodeError),
    ("starknet_getEvents", "malformed", empty_events_call, KeyError),
    ("starknet_getEvents", "wrong_type", empty_events_call, TypeError),
    (
        "starknet_blockHashAndNumber",
        "malformed",
        lambda c: c.get_block_hash_and_number(),
        ValidationError,
    ),
    (
        "starknet_blockHashAndNumber",
        "wrong_type",
        lambda c: c.get_block_hash_and_number(),
        ValidationError,
    ),
    (
        "starknet_getBlockWithTxHashes",
        "malformed",
        lambda c: c.get_block_with_tx_hashes(block_number=1),
        ValidationError,
    ),
    (
        "starknet_getBlockWithTxHashes",
        "wrong_type",
        lambda c: c.get_block_with_tx_hashes(block_number=1),
        ValidationError,
    ),
    (
        "starknet_getBlockWithTxHashes",
        "wrong_type",
        lambda c: c.get_block_with_tx_hashes(),
        ValidationError,
    ),
    ("starknet_blockNumber", "malformed", lambda c: c.get_block_number(), ServerError),
    (
        "starknet_call",
        "wrong_type",
        lambda c: c.call_contract(balance_call(ALICE), block_number=1),
        TypeError,
    ),
    (
        "starknet_call",
        "http_500",
        lambda c: c.call_contract(balance_call(ALICE), block_number=1),
        ClientError,
    ),
]


@pytest.mark.parametrize(("method", "kind", "action", "exc"), FAULT_CASES)
def test_fault_raises(
    node: StarknetTestNode,
    method: str,
    kind: Any,
    action: Callable[[FullNodeClient], Awaitable[Any]],
    exc: type[BaseException],
) -> None:
    c = client(node)
    node.fail_next(method, kind)

    async def go() -> Any:
        return await action(c)

    with pytest.raises(exc):
        run(go())
    run(go())  # the fault is consumed; the next call succeeds
    assert node.faults.pending == []


def test_fault_error_details(node: StarknetTestNode) -> None:
    c = client(node)
    node.fail_next("starknet_blockNumber", "http_500")
    with pytest.raises(ClientError) as http:
        run(c.get_block_number())
    assert http.value.code == "500"  # a str for HTTP errors
    node.fail_next("starknet_blockNumber", "rpc_error", code=-32005, message="rate limited")
    with pytest.raises(ClientError) as rpc:
        run(c.get_block_number())
    assert code_of(rpc) == -32005 and "rate limited" in rpc.value.message  # an int here


def test_faults_starknet_py_does_not_notice(node: StarknetTestNode) -> None:
    c = client(node)
    node.fail_next("starknet_call", "u256_high", high=7)
    assert run(c.call_contract(balance_call(ALICE), block_number=4)) == [70, 7]
    node.fail_next("starknet_call", "malformed")
    assert run(c.call_contract(balance_call(ALICE), block_number=4)) == [70]
    node.fail_next("starknet_blockNumber", "wrong_type")
    assert run(c.get_block_number()) == "0x4"  # type: ignore[comparison-overlap]
    node.fail_next("starknet_chainId", "wrong_type")
    assert run(c.get_chain_id()) == SN_SEPOLIA  # type: ignore[comparison-overlap]


def test_timeouts(node: StarknetTestNode) -> None:
    node.fail_next("starknet_blockNumber", "timeout", delay=0.6)
    with pytest.raises(TimeoutError):  # the builtin one, for a total timeout
        run(_with_timeout(node, aiohttp.ClientTimeout(total=0.2)))
    node.fail_next("starknet_blockNumber", "timeout", delay=0.6)
    with pytest.raises(aiohttp.ServerTimeoutError):  # also a TimeoutError
        run(_with_timeout(node, aiohttp.ClientTimeout(sock_read=0.2)))
    node.fail_next("starknet_blockNumber", "timeout", delay=0.1)  # slow but in time
    assert run(_with_timeout(node, aiohttp.ClientTimeout(total=2))) == 4


def test_wildcard_fault_hits_the_preflight(node: StarknetTestNode) -> None:
    node.fail_next("*", "rpc_error")
    with pytest.raises(KeyError):  # the specVersion preflight reads res["result"] blindly
        run(client(node).get_block_number())
    assert node.calls == ["starknet_specVersion"]


def test_stopped_node_refuses_connections() -> None:
    with StarknetTestNode() as n:
        c = client(n)
        assert run(c.get_block_number()) == 0
    with pytest.raises(aiohttp.ClientConnectorError):
        run(c.get_block_number())


def test_stop_drops_kept_alive_connections() -> None:
    async def go(n: StarknetTestNode) -> None:
        async with aiohttp.ClientSession() as session:
            c = FullNodeClient(node_url=n.url, session=session)
            assert await c.get_block_number() == 0  # the session keeps the connection open
            n.stop()
            with pytest.raises(aiohttp.ClientError):
                await c.get_block_number()

    with StarknetTestNode() as n:
        run(go(n))
