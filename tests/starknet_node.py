"""A local StarkNet JSON-RPC test node for the USDC-balance mirror's tests.

It is a scripted, in-process stand-in for a StarkNet full node: a
``http.server.ThreadingHTTPServer`` on a free 127.0.0.1 port, in a daemon thread, that
the real ``starknet_py.net.full_node_client.FullNodeClient`` (starknet-py 0.30, JSON-RPC
spec 0.10.2) talks to over HTTP. It serves exactly the methods the mirror uses, in spec
0.10 shapes that pass starknet-py's own marshmallow schemas:

``starknet_specVersion``, ``starknet_chainId``, ``starknet_blockNumber``,
``starknet_blockHashAndNumber``, ``starknet_getBlockWithTxHashes``, ``starknet_call``
(ERC-20 views of the token contracts) and ``starknet_getEvents`` (Cairo-1 ERC-20
``Transfer`` events). Any other method answers -32601 "Method not found". A JSON array
body is a JSON-RPC batch and is answered with an array.

Chain model
-----------
Block 0 (empty) exists at start. ``mint``/``transfer`` queue a ``Transfer`` (one
transaction, one event) for the next block; queued transfers form the ``pre_confirmed``
block (number ``head + 1``; its events carry ``block_number`` but no ``block_hash``, as
on a real node). ``mine(n)`` seals them. A token contract exists (at every block, as if
deployed before genesis) once ``deploy_token`` named it or a ``mint`` first used it;
calls to any other address answer 20 "Contract not found". Block hashes are
sha256-truncated-to-251-bits of (fork counter, number, parent hash, timestamp, tx hashes);
``reorg`` bumps the fork counter, so a rebuilt block at the same height gets a different
hash. Tx hashes are unique per queued transfer (``reorg(..., requeue=True)`` re-includes
the dropped transfers with their original tx hashes). Timestamps grow by
``block_time`` seconds per block.

Block ids: ``{"block_number": n}`` (n above the head: 24 "Block not found"),
``{"block_hash": h}`` (an orphaned hash: 24), ``"latest"``, ``"pre_confirmed"`` and
``"l1_accepted"`` (resolves to ``node.l1_accepted``; while that is ``None`` the tag
answers 24). Blocks at or below ``l1_accepted`` have status ``ACCEPTED_ON_L1`` (and
cannot be reorged), the others ``ACCEPTED_ON_L2``. Old tags (``"pending"``) answer
-32602 "Invalid params".

``starknet_getEvents``: ``from_block`` defaults to 0, ``to_block`` to ``"latest"``; a
numeric ``to_block`` above the head is clamped to the head, a numeric ``from_block`` above
it gives no events. Pages hold at most ``chunk_size`` events (above ``max_chunk_size``:
31 "Requested page size is too big"); a ``continuation_token`` is returned only when
another matching event exists. The token (``"<block>-<offset>-<block hash or p>"``) is
the position of that next event; if the block at that height has since been reorged
away, the token answers 33 "The supplied continuation token is invalid or unknown".
``event_index`` is the index of the event *within its transaction* (spec 0.10), so here it
is always 0 and ``(block_number, transaction_index)`` identifies a transfer.

``behind = k`` makes ``starknet_blockNumber``, ``starknet_blockHashAndNumber`` and the
``"latest"`` tag report the block k below the real head (like a lagging node behind a
load balancer); explicit numbers and hashes of the newer blocks are still served.

Faults
------
``node.fail_next(method, kind, times=1, ...)`` (or ``node.faults.fail_next``) makes the
next ``times`` requests for ``method`` (``"*"`` = any method, including the
``starknet_specVersion`` preflight that every new FullNodeClient sends before its first
call) fail. What starknet-py 0.30's FullNodeClient raises (observed in
tests/test_starknet_node.py):

| kind         | method(s)             | what the node sends         | FullNodeClient raises       |
|--------------|-----------------------|-----------------------------|-----------------------------|
| http_500     | any                   | HTTP 500, text body         | ClientError, .code "500" (a |
|              |                       |                             | str)                        |
| rpc_error    | any                   | {"error": {code, message}}, | ClientError, .code the int  |
|              |                       | default -32603 "Internal    | code (typed str | None!)    |
|              |                       | error"                      |                             |
| timeout      | any                   | sleeps `delay` (default     | TimeoutError (see below)    |
|              |                       | node.timeout_delay = 2 s),  |                             |
|              |                       | then answers normally       |                             |
| no_result    | any                   | envelope without result or  | http_client.ServerError     |
|              |                       | error                       |                             |
| invalid_json | any                   | HTTP 200, HTML body         | json.JSONDecodeError (a     |
|              |                       |                             | ValueError)                 |
| malformed    | blockHashAndNumber    | no block_hash               | marshmallow ValidationError |
| malformed    | getBlockWithTxHashes  | no parent_hash              | marshmallow ValidationError |
|              |                       | (pre_confirmed block: no    |                             |
|              |                       | timestamp)                  |                             |
| malformed    | getEvents             | no event_index in each      | marshmallow ValidationError |
|              |                       | event                       |                             |
| malformed    | getEvents, empty page | no "events" key             | KeyError                    |
| malformed    | blockNumber, chainId, | envelope without result     | ServerError (the            |
|              | specVersion           |                             | specVersion preflight:      |
|              |                       |                             | KeyError)                   |
| malformed    | call                  | only the low word: [low]    | nothing: a 1-element list   |
| wrong_type   | blockHashAndNumber,   | block_number as a hex       | marshmallow ValidationError |
|              | getBlockWithTxHashes, | string (pre_confirmed       |                             |
|              | getEvents             | block: timestamp)           |                             |
| wrong_type   | getEvents, empty page | "events": null              | TypeError                   |
| wrong_type   | call                  | felts as JSON ints          | TypeError (int(x, 16))      |
| wrong_type   | blockNumber           | "0x<n>" string              | nothing: returns the str    |
| wrong_type   | chainId               | a JSON int                  | nothing: returns the int    |
| wrong_type   | specVersion           | the JSON int 10             | nothing (the preflight      |
|              |                       |                             | warns)                      |
| u256_high    | call                  | high word of a 2-felt       | nothing: [low, high]        |
|              |                       | result = `high` (default 1) |                             |
| (stopped)    | any                   | connection refused          | aiohttp                     |
|              |                       |                             | ClientConnectorError        |

Timeouts need an ``aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(...))`` passed as
``FullNodeClient(node_url, session=...)`` (without one, each call makes a session with
aiohttp's 300 s default). ``ClientTimeout(total=...)`` raises the builtin
``TimeoutError``; ``ClientTimeout(sock_read=...)`` raises ``aiohttp.SocketTimeoutError``
(a ``ServerTimeoutError``, an ``aiohttp.ClientError`` and a ``TimeoutError``), so
``except TimeoutError`` catches both.

Schema notes (starknet-py 0.30): responses are loaded with ``unknown=RAISE``, so any
extra field fails validation; felts must match ``^0x(0|[a-fA-F1-9][a-fA-F0-9]{0,62})$``
(no leading zeros); the 0.10 block header additionally requires ``event_commitment``,
``transaction_commitment``, ``receipt_commitment``, ``state_diff_commitment``,
``event_count``, ``transaction_count`` and ``state_diff_length``; emitted events require
``transaction_index`` and ``event_index``. marshmallow's Integer accepts decimal strings
(``"5"``), so "wrong type" faults use hex strings. ``get_events`` validates only once,
after collecting every page; ``get_block_number``/``get_chain_id``/``call_contract`` are
not schema-validated at all.

Tests: ``with StarknetTestNode() as node: client = FullNodeClient(node_url=node.url)``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import socket
import threading
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Final, Literal, get_args

from starknet_py.hash.selector import get_selector_from_name

SN_SEPOLIA: Final = 0x534E5F5345504F4C4941  # encode_shortstring("SN_SEPOLIA")
SN_MAIN: Final = 0x534E5F4D41494E  # encode_shortstring("SN_MAIN")
SPEC_VERSION: Final = "0.10.2"
FIELD_PRIME: Final = 2**251 + 17 * 2**192 + 1
U128: Final = 2**128

TRANSFER_SELECTOR: Final = get_selector_from_name("Transfer")
BALANCE_OF_SELECTORS: Final = frozenset(
    {get_selector_from_name("balance_of"), get_selector_from_name("balanceOf")}
)
TOTAL_SUPPLY_SELECTORS: Final = frozenset(
    {get_selector_from_name("total_supply"), get_selector_from_name("totalSupply")}
)
DECIMALS_SELECTOR: Final = get_selector_from_name("decimals")
SYMBOL_SELECTOR: Final = get_selector_from_name("symbol")

METHODS: Final = (
    "starknet_specVersion",
    "starknet_chainId",
    "starknet_blockNumber",
    "starknet_blockHashAndNumber",
    "starknet_getBlockWithTxHashes",
    "starknet_call",
    "starknet_getEvents",
)

FaultKind = Literal[
    "http_500",
    "timeout",
    "malformed",
    "wrong_type",
    "u256_high",
    "rpc_error",
    "no_result",
    "invalid_json",
]
FAULT_KINDS: Final[frozenset[str]] = frozenset(get_args(FaultKind))
_HTTP_FAULTS: Final = frozenset({"http_500", "timeout", "invalid_json"})

_GENESIS_TIMESTAMP: Final = 1_750_000_000
_SEQUENCER: Final = 0x1176A1BD84444C89232EC27754698E5D2E7E1A7F1539F12027F28B23EC9F3D8
_STARKNET_VERSION: Final = "0.14.0"
_FELT_RE: Final = re.compile(r"^0x[0-9a-fA-F]{1,64}$")


def _felt_hash(*parts: int | str) -> int:
    """sha256 of the parts, truncated to 251 bits (so always a valid felt)."""
    digest = hashlib.sha256("|".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest, "big") >> 5


def _hex(value: int) -> str:
    """A felt the way a node writes it: 0x-prefixed, lowercase, no leading zeros."""
    return hex(value)


def _u256(value: int) -> list[str]:
    return [_hex(value % U128), _hex(value // U128)]


def _byte_array(text: str) -> list[str]:
    """Cairo ByteArray serialisation of a short (< 31 bytes) string."""
    raw = text.encode()
    if len(raw) >= 31:
        raise ValueError("only short strings are supported")
    return [_hex(0), _hex(int.from_bytes(raw, "big")), _hex(len(raw))]


def _as_felt(value: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < FIELD_PRIME:
        raise ValueError(f"{what} must be a felt (0 <= int < P), got {value!r}")
    return value


def _parse_chain_id(value: int | str) -> int:
    if isinstance(value, str):
        if value.startswith("0x"):
            return int(value, 16)
        return int.from_bytes(value.encode("ascii"), "big")
    return _as_felt(value, "chain_id")


class RpcError(Exception):
    """A JSON-RPC error object the node answers with."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.data = data

    def to_json(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data is not None:
            error["data"] = self.data
        return error


def _invalid_params(detail: str) -> RpcError:
    return RpcError(-32602, "Invalid params", detail)


BLOCK_NOT_FOUND: Final = (24, "Block not found")
CONTRACT_NOT_FOUND: Final = (20, "Contract not found")


@dataclass(frozen=True)
class Transfer:
    """One ERC-20 transfer: one transaction emitting one ``Transfer`` event."""

    token: int
    sender: int  # 0 for a mint
    recipient: int
    amount: int
    tx_hash: int


@dataclass(frozen=True)
class BlockInfo:
    """A sealed block of the current chain."""

    number: int
    block_hash: int
    parent_hash: int
    timestamp: int
    fork: int
    new_root: int
    transfers: tuple[Transfer, ...]

    @property
    def tx_hashes(self) -> tuple[int, ...]:
        return tuple(t.tx_hash for t in self.transfers)


@dataclass(frozen=True)
class Token:
    address: int
    decimals: int
    symbol: str


@dataclass
class Fault:
    method: str
    kind: FaultKind
    remaining: int
    code: int
    message: str
    delay: float | None
    high: int


class Faults:
    """Scripted failures, consumed in order by the next matching requests."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queue: list[Fault] = []

    def fail_next(
        self,
        method: str,
        kind: FaultKind,
        *,
        times: int = 1,
        code: int = -32603,
        message: str = "Internal error",
        delay: float | None = None,
        high: int = 1,
    ) -> None:
        """Make the next ``times`` requests for ``method`` (``"*"``: any) fail as ``kind``."""
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; one of {sorted(FAULT_KINDS)}")
        if method != "*" and method not in METHODS:
            raise ValueError(f"the test node does not serve {method!r}")
        if kind == "u256_high" and method not in ("*", "starknet_call"):
            raise ValueError("u256_high only applies to starknet_call")
        if times < 1:
            raise ValueError("times must be >= 1")
        with self._lock:
            self._queue.append(Fault(method, kind, times, code, message, delay, high))

    def clear(self) -> None:
        with self._lock:
            self._queue.clear()

    @property
    def pending(self) -> list[tuple[str, str, int]]:
        """(method, kind, remaining) of the faults not yet consumed."""
        with self._lock:
            return [(f.method, f.kind, f.remaining) for f in self._queue]

    def take(self, method: str) -> Fault | None:
        """Consume one use of the first fault matching ``method``."""
        with self._lock:
            for i, fault in enumerate(self._queue):
                if fault.method in ("*", method):
                    fault.remaining -= 1
                    if fault.remaining == 0:
                        del self._queue[i]
                    return fault
        return None


@dataclass
class _HttpReply:
    status: int
    body: bytes
    content_type: str = "application/json"
    delay: float = 0.0


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # a burst of parallel connections is not refused
    node: StarknetTestNode

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Clients that gave up (timeouts) are expected; keep test output quiet."""

    def drop_connections(self) -> None:
        """Close kept-alive connections too, so a stopped node really refuses requests."""
        with self.connections_lock:
            for connection in self.connections:
                with contextlib.suppress(OSError):
                    connection.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in two writes

    def setup(self) -> None:
        super().setup()
        with self.server.connections_lock:
            self.server.connections.add(self.connection)

    def finish(self) -> None:
        with self.server.connections_lock:
            self.server.connections.discard(self.connection)
        with contextlib.suppress(OSError):
            super().finish()

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        node = self.server.node
        reply = node._handle_http(body)
        if reply.delay > 0 and node._stopping.wait(reply.delay):
            self.close_connection = True
            return
        try:
            self.send_response(reply.status)
            self.send_header("Content-Type", reply.content_type)
            self.send_header("Content-Length", str(len(reply.body)))
            self.end_headers()
            self.wfile.write(reply.body)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:
        pass


class StarknetTestNode:
    """A scripted StarkNet JSON-RPC test node (see the module docstring)."""

    def __init__(
        self,
        chain_id: int | str = SN_SEPOLIA,
        spec_version: str = SPEC_VERSION,
        *,
        block_time: int = 2,
        max_chunk_size: int = 1024,
        max_keys_in_filter: int = 256,
        timeout_delay: float = 2.0,
    ) -> None:
        self._lock = threading.RLock()
        self._chain_id = _parse_chain_id(chain_id)
        self.spec_version = spec_version
        self.block_time = block_time
        self.max_chunk_size = max_chunk_size
        self.max_keys_in_filter = max_keys_in_filter
        self.timeout_delay = timeout_delay
        self.behind = 0
        self.l1_accepted: int | None = None
        self.faults = Faults()
        self.calls: list[str] = []  # method names received, in order (batch items too)
        self.batch_sizes: list[int] = []  # one entry per batch request
        self.http_requests = 0

        self._tokens: dict[int, Token] = {}
        self._fork = 0
        self._tx_nonce = 0
        self._pending: list[Transfer] = []
        genesis = self._seal(parent=None, transfers=())
        self._blocks: list[BlockInfo] = [genesis]
        self._states: list[dict[tuple[int, int], int]] = [{}]
        self._by_hash: dict[int, int] = {genesis.block_hash: 0}

        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> StarknetTestNode:
        if self._server is not None:
            raise RuntimeError("the test node is already running")
        self._stopping.clear()
        server = _Server()
        server.node = self
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="starknet-test-node",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, thread = self._server, self._thread
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        server.server_close()
        server.drop_connections()
        if thread is not None:
            thread.join(timeout=5)
        self._server = None
        self._thread = None

    def __enter__(self) -> StarknetTestNode:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the test node is not running")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    # ------------------------------------------------------------------ settings

    @property
    def chain_id(self) -> int:
        return self._chain_id

    @chain_id.setter
    def chain_id(self, value: int | str) -> None:
        """An int, a 0x-hex string or a short string such as ``"SN_MAIN"``."""
        self._chain_id = _parse_chain_id(value)

    def fail_next(self, method: str, kind: FaultKind, **options: Any) -> None:
        """Shorthand for ``node.faults.fail_next``."""
        self.faults.fail_next(method, kind, **options)

    @property
    def call_counts(self) -> Counter[str]:
        return Counter(self.calls)

    def reset_calls(self) -> None:
        with self._lock:
            self.calls.clear()
            self.batch_sizes.clear()
            self.http_requests = 0

    # ------------------------------------------------------------------ chain scripting

    def deploy_token(self, address: int, *, decimals: int = 6, symbol: str = "USDC") -> None:
        """Make ``address`` an ERC-20 token contract (present at every block)."""
        with self._lock:
            _as_felt(address, "token")
            if address == 0:
                raise ValueError("0x0 cannot be a token")
            self._tokens[address] = Token(address, decimals, symbol)

    @property
    def tokens(self) -> frozenset[int]:
        with self._lock:
            return frozenset(self._tokens)

    def mint(self, token: int, to: int, amount: int) -> int:
        """Queue a ``Transfer`` from 0x0 for the next block (deploys ``token`` on first use).

        Returns the transaction hash."""
        with self._lock:
            if token not in self._tokens:
                self.deploy_token(token)
            return self._queue(token, 0, to, amount)

    def transfer(self, token: int, frm: int, to: int, amount: int) -> int:
        """Queue a ``Transfer`` for the next block; refuses an overdraft. Returns the tx hash."""
        with self._lock:
            if token not in self._tokens:
                raise ValueError(f"no token contract at {_hex(token)}")
            if frm == 0:
                raise ValueError("use mint for transfers from 0x0")
            return self._queue(token, frm, to, amount)

    def mine(self, n: int = 1) -> int:
        """Seal ``n`` blocks (queued transfers go in the first); returns the head number."""
        if n < 0:
            raise ValueError("n must be >= 0")
        with self._lock:
            for i in range(n):
                transfers = tuple(self._pending) if i == 0 else ()
                if i == 0:
                    self._pending = []
                self._append(transfers)
            return self.head

    def reorg(
        self, depth: int, replacement_blocks: int | None = None, *, requeue: bool = False
    ) -> int:
        """Drop the last ``depth`` blocks and mine ``replacement_blocks`` (default ``depth``)
        new ones with different hashes. The dropped transfers are gone unless ``requeue``,
        which puts them (same tx hashes) ahead of the queued ones, into the first new block.
        Returns the new head number."""
        with self._lock:
            head = self.head
            if not 1 <= depth <= head:
                raise ValueError(f"depth must be in 1..{head} (block 0 cannot be dropped)")
            if self.l1_accepted is not None and head - depth < self.l1_accepted:
                raise ValueError("cannot reorg blocks accepted on L1")
            if replacement_blocks is None:
                replacement_blocks = depth
            if replacement_blocks < 0:
                raise ValueError("replacement_blocks must be >= 0")
            keep = head - depth + 1
            dropped = [t for block in self._blocks[keep:] for t in block.transfers]
            pending = (dropped if requeue else []) + self._pending
            state = dict(self._states[keep - 1])
            for t in pending:
                self._apply(state, t, check=True)  # raises before anything changes
            if replacement_blocks == 0 and pending:
                raise ValueError("queued transfers need at least one replacement block")
            for block in self._blocks[keep:]:
                del self._by_hash[block.block_hash]
            del self._blocks[keep:]
            del self._states[keep:]
            self._fork += 1
            self._pending = pending
            return self.mine(replacement_blocks)

    @property
    def head(self) -> int:
        """The real latest block number (``behind`` does not apply)."""
        with self._lock:
            return len(self._blocks) - 1

    @property
    def fork(self) -> int:
        return self._fork

    def block(self, number: int) -> BlockInfo:
        with self._lock:
            if not 0 <= number < len(self._blocks):
                raise KeyError(number)
            return self._blocks[number]

    def block_hash(self, number: int) -> int:
        return self.block(number).block_hash

    @property
    def pending_transfers(self) -> tuple[Transfer, ...]:
        with self._lock:
            return tuple(self._pending)

    def transfers(self, token: int | None = None) -> list[tuple[int, Transfer]]:
        """(block number, transfer) of every sealed transfer on the current chain, in order."""
        with self._lock:
            return [
                (block.number, t)
                for block in self._blocks
                for t in block.transfers
                if token is None or t.token == token
            ]

    def balance_of(self, token: int, address: int, block: int | None = None) -> int:
        """Balance after all transfers up to and including ``block`` (default: the head)."""
        with self._lock:
            number = self.head if block is None else block
            if not 0 <= number <= self.head:
                raise KeyError(number)
            return self._states[number].get((token, address), 0)

    def total_supply(self, token: int, block: int | None = None) -> int:
        with self._lock:
            number = self.head if block is None else block
            if not 0 <= number <= self.head:
                raise KeyError(number)
            return sum(v for (t, _), v in self._states[number].items() if t == token)

    # ------------------------------------------------------------------ internals: chain

    def _queue(self, token: int, frm: int, to: int, amount: int) -> int:
        _as_felt(frm, "from")
        _as_felt(to, "to")
        if isinstance(amount, bool) or not isinstance(amount, int) or not 0 <= amount < 2**256:
            raise ValueError(f"amount must be a u256, got {amount!r}")
        self._tx_nonce += 1
        tx_hash = _felt_hash("tx", self._tx_nonce, token, frm, to, amount)
        transfer = Transfer(token, frm, to, amount, tx_hash)
        state = self._pending_state()
        self._apply(state, transfer, check=True)
        self._pending.append(transfer)
        return tx_hash

    @staticmethod
    def _apply(state: dict[tuple[int, int], int], t: Transfer, *, check: bool) -> None:
        if t.sender != 0:
            balance = state.get((t.token, t.sender), 0)
            if check and balance < t.amount:
                raise ValueError(
                    f"{_hex(t.sender)} holds {balance} of {_hex(t.token)}, cannot send {t.amount}"
                )
            state[(t.token, t.sender)] = balance - t.amount
        key = (t.token, t.recipient)
        state[key] = state.get(key, 0) + t.amount

    def _pending_state(self) -> dict[tuple[int, int], int]:
        state = dict(self._states[-1])
        for t in self._pending:
            self._apply(state, t, check=False)
        return state

    def _seal(self, parent: BlockInfo | None, transfers: tuple[Transfer, ...]) -> BlockInfo:
        number = 0 if parent is None else parent.number + 1
        parent_hash = 0 if parent is None else parent.block_hash
        timestamp = _GENESIS_TIMESTAMP if parent is None else parent.timestamp + self.block_time
        tx_hashes = [t.tx_hash for t in transfers]
        parent_root = 0 if parent is None else parent.new_root
        new_root = _felt_hash(
            "root",
            parent_root,
            *(f"{t.token}:{t.sender}:{t.recipient}:{t.amount}" for t in transfers),
        )
        block_hash = _felt_hash("block", self._fork, number, parent_hash, timestamp, *tx_hashes)
        return BlockInfo(
            number, block_hash, parent_hash, timestamp, self._fork, new_root, transfers
        )

    def _append(self, transfers: tuple[Transfer, ...]) -> None:
        block = self._seal(self._blocks[-1], transfers)
        state = dict(self._states[-1])
        for t in transfers:
            self._apply(state, t, check=False)
        self._blocks.append(block)
        self._states.append(state)
        self._by_hash[block.block_hash] = block.number

    # ------------------------------------------------------------------ internals: HTTP

    def _handle_http(self, body: bytes) -> _HttpReply:
        with self._lock:
            self.http_requests += 1
            try:
                request = json.loads(body)
            except ValueError:
                return self._json_reply(_error_envelope(None, RpcError(-32700, "Parse error")))
            if isinstance(request, list):
                if not request:
                    return self._json_reply(
                        _error_envelope(None, RpcError(-32600, "Invalid Request"))
                    )
                self.batch_sizes.append(len(request))
                items = request
            else:
                items = [request]
            http_fault: Fault | None = None
            responses: list[dict[str, Any]] = []
            for item in items:
                try:
                    response, fault = self._handle_item(item)
                except Exception as error:  # a bug in the test node: say so, loudly
                    detail = f"test node bug: {error!r}"
                    response, fault = _error_envelope(None, RpcError(-32603, detail)), None
                if fault is not None and fault.kind in _HTTP_FAULTS and http_fault is None:
                    http_fault = fault
                responses.append(response)
            payload: Any = responses if isinstance(request, list) else responses[0]
        if http_fault is None:
            return self._json_reply(payload)
        if http_fault.kind == "http_500":
            return _HttpReply(500, b"Internal Server Error", "text/plain")
        if http_fault.kind == "invalid_json":
            return _HttpReply(200, b"<html>502 Bad Gateway</html>", "text/html")
        delay = self.timeout_delay if http_fault.delay is None else http_fault.delay
        reply = self._json_reply(payload)
        reply.delay = delay
        return reply

    @staticmethod
    def _json_reply(payload: Any) -> _HttpReply:
        return _HttpReply(200, json.dumps(payload).encode())

    def _handle_item(self, item: Any) -> tuple[dict[str, Any], Fault | None]:
        if not isinstance(item, dict) or not isinstance(item.get("method"), str):
            return _error_envelope(None, RpcError(-32600, "Invalid Request")), None
        request_id = item.get("id")
        method: str = item["method"]
        self.calls.append(method)
        fault = self.faults.take(method)
        if fault is not None and fault.kind == "rpc_error":
            return _error_envelope(request_id, RpcError(fault.code, fault.message)), fault
        if fault is not None and fault.kind == "no_result":
            return {"jsonrpc": "2.0", "id": request_id}, fault
        try:
            result = self._dispatch(method, item.get("params", []))
        except RpcError as error:
            return _error_envelope(request_id, error), fault
        envelope: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "result": result}
        if fault is not None and fault.kind in ("malformed", "wrong_type", "u256_high"):
            _corrupt(method, fault, envelope)
        return envelope, fault

    # ------------------------------------------------------------------ internals: RPC

    def _dispatch(self, method: str, params: Any) -> Any:
        if method == "starknet_specVersion":
            return self.spec_version
        if method == "starknet_chainId":
            return _hex(self._chain_id)
        if method == "starknet_blockNumber":
            return self._reported_head()
        if method == "starknet_blockHashAndNumber":
            block = self._blocks[self._reported_head()]
            return {"block_hash": _hex(block.block_hash), "block_number": block.number}
        if method == "starknet_getBlockWithTxHashes":
            number = self._resolve(_param(params, 0, "block_id"))
            return self._block_json(number)
        if method == "starknet_call":
            request = _param(params, 0, "request")
            number = self._resolve(_param(params, 1, "block_id"))
            return self._call(request, number)
        if method == "starknet_getEvents":
            return self._get_events(_param(params, 0, "filter"))
        raise RpcError(-32601, "Method not found", method)

    def _reported_head(self) -> int:
        return max(0, self.head - self.behind)

    def _resolve(self, block_id: Any, *, clamp: bool = False) -> int:
        """The number of a block id; ``head + 1`` means the pre_confirmed block."""
        if block_id == "latest":
            return self._reported_head()
        if block_id == "pre_confirmed":
            return self.head + 1
        if block_id == "l1_accepted":
            if self.l1_accepted is None or self.l1_accepted > self.head:
                raise RpcError(*BLOCK_NOT_FOUND)
            return self.l1_accepted
        if isinstance(block_id, dict) and len(block_id) == 1:
            if "block_number" in block_id:
                number = block_id["block_number"]
                if isinstance(number, bool) or not isinstance(number, int) or number < 0:
                    raise _invalid_params(f"bad block_number {number!r}")
                if number > self.head:
                    if clamp:
                        return self.head
                    raise RpcError(*BLOCK_NOT_FOUND)
                return number
            if "block_hash" in block_id:
                found = self._by_hash.get(_felt(block_id["block_hash"]))
                if found is None:
                    raise RpcError(*BLOCK_NOT_FOUND)
                return found
        raise _invalid_params(f"bad block_id {block_id!r}")

    def _transfers_of(self, number: int) -> tuple[Transfer, ...]:
        if number == self.head + 1:
            return tuple(self._pending)
        return self._blocks[number].transfers

    def _block_json(self, number: int) -> dict[str, Any]:
        prices = {
            "l1_gas_price": {"price_in_fri": _hex(10**13), "price_in_wei": _hex(10**9)},
            "l2_gas_price": {"price_in_fri": _hex(10**9), "price_in_wei": _hex(10**5)},
            "l1_data_gas_price": {"price_in_fri": _hex(10**4), "price_in_wei": _hex(10**2)},
        }
        if number == self.head + 1:
            transfers = tuple(self._pending)
            return {
                "block_number": number,
                "timestamp": self._blocks[-1].timestamp + self.block_time,
                "sequencer_address": _hex(_SEQUENCER),
                **prices,
                "l1_da_mode": "BLOB",
                "starknet_version": _STARKNET_VERSION,
                "transactions": [_hex(t.tx_hash) for t in transfers],
            }
        block = self._blocks[number]
        tx_hashes = block.tx_hashes
        touched = {(t.token, a) for t in block.transfers for a in (t.sender, t.recipient) if a}
        status = (
            "ACCEPTED_ON_L1"
            if self.l1_accepted is not None and number <= self.l1_accepted
            else "ACCEPTED_ON_L2"
        )

        def commitment(kind: str) -> str:
            return _hex(_felt_hash(kind, block.block_hash, *tx_hashes) if tx_hashes else 0)

        return {
            "status": status,
            "block_hash": _hex(block.block_hash),
            "parent_hash": _hex(block.parent_hash),
            "block_number": block.number,
            "new_root": _hex(block.new_root),
            "timestamp": block.timestamp,
            "sequencer_address": _hex(_SEQUENCER),
            **prices,
            "l1_da_mode": "BLOB",
            "starknet_version": _STARKNET_VERSION,
            "event_commitment": commitment("events"),
            "transaction_commitment": commitment("transactions"),
            "receipt_commitment": commitment("receipts"),
            "state_diff_commitment": commitment("state_diff"),
            "event_count": len(block.transfers),
            "transaction_count": len(block.transfers),
            "state_diff_length": len(touched),
            "transactions": [_hex(h) for h in tx_hashes],
        }

    def _call(self, request: Any, number: int) -> list[str]:
        if not isinstance(request, dict):
            raise _invalid_params("request must be an object")
        try:
            address = _felt(request["contract_address"])
            selector = _felt(request["entry_point_selector"])
            calldata = [_felt(x) for x in request["calldata"]]
        except (KeyError, TypeError) as error:
            raise _invalid_params(f"bad request: {error!r}") from None
        token = self._tokens.get(address)
        if token is None:
            raise RpcError(*CONTRACT_NOT_FOUND)
        state = self._pending_state() if number == self.head + 1 else self._states[number]
        if selector in BALANCE_OF_SELECTORS:
            if len(calldata) != 1:
                raise RpcError(
                    40, "Contract error", {"revert_error": "Failed to deserialize param #1"}
                )
            return _u256(state.get((address, calldata[0]), 0))
        if selector in TOTAL_SUPPLY_SELECTORS:
            return _u256(sum(v for (t, _), v in state.items() if t == address))
        if selector == DECIMALS_SELECTOR:
            return [_hex(token.decimals)]
        if selector == SYMBOL_SELECTOR:
            return _byte_array(token.symbol)
        raise RpcError(21, "Requested entry point does not exist in the contract")

    def _get_events(self, flt: Any) -> dict[str, Any]:
        if not isinstance(flt, dict):
            raise _invalid_params("filter must be an object")
        chunk_size = flt.get("chunk_size")
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
            raise _invalid_params(f"bad chunk_size {chunk_size!r}")
        if chunk_size > self.max_chunk_size:
            raise RpcError(31, "Requested page size is too big")
        keys = flt.get("keys") or []
        if not isinstance(keys, list) or not all(isinstance(k, list) for k in keys):
            raise _invalid_params("keys must be a list of lists")
        key_sets = [frozenset(_felt(k) for k in position) for position in keys]
        if sum(len(s) for s in key_sets) > self.max_keys_in_filter:
            raise RpcError(34, "Too many keys provided in a filter")
        address = flt.get("address")
        addresses: frozenset[int] | None
        if address is None:
            addresses = None
        elif isinstance(address, list):
            addresses = frozenset(_felt(a) for a in address)
        else:
            addresses = frozenset({_felt(address)})
        from_block = flt.get("from_block", {"block_number": 0})
        to_n = self._resolve(flt.get("to_block", "latest"), clamp=True)
        if isinstance(from_block, dict) and from_block.get("block_number", 0) > self.head:
            return {"events": []}  # a range that starts above the head is empty
        from_n = self._resolve(from_block)

        start_block, start_offset = from_n, 0
        token = flt.get("continuation_token")
        if token is not None:
            start_block, start_offset = self._parse_token(token, from_n)

        events: list[dict[str, Any]] = []
        for number in range(start_block, to_n + 1):
            transfers = self._transfers_of(number)
            for offset in range(start_offset if number == start_block else 0, len(transfers)):
                t = transfers[offset]
                event_keys = (TRANSFER_SELECTOR, t.sender, t.recipient)
                if addresses is not None and t.token not in addresses:
                    continue
                if not _keys_match(key_sets, event_keys):
                    continue
                if len(events) == chunk_size:
                    tag = "p" if number == self.head + 1 else _hex(self._blocks[number].block_hash)
                    return {"events": events, "continuation_token": f"{number}-{offset}-{tag}"}
                events.append(self._event_json(number, offset, t, event_keys))
        return {"events": events}

    def _parse_token(self, token: Any, from_n: int) -> tuple[int, int]:
        invalid = RpcError(33, "The supplied continuation token is invalid or unknown")
        if not isinstance(token, str):
            raise invalid
        match = re.fullmatch(r"(\d+)-(\d+)-(p|0x[0-9a-f]+)", token)
        if match is None:
            raise invalid
        number, offset, tag = int(match[1]), int(match[2]), match[3]
        if number < from_n or number > self.head + 1:
            raise invalid
        if tag == "p":
            if offset > len(self._transfers_of(number)):
                raise invalid
        elif number > self.head or self._blocks[number].block_hash != int(tag, 16):
            raise invalid  # the block it points into was reorged away
        return number, offset

    def _event_json(
        self, number: int, offset: int, t: Transfer, keys: tuple[int, ...]
    ) -> dict[str, Any]:
        event: dict[str, Any] = {
            "from_address": _hex(t.token),
            "keys": [_hex(k) for k in keys],
            "data": _u256(t.amount),
        }
        if number <= self.head:
            event["block_hash"] = _hex(self._blocks[number].block_hash)
        event["block_number"] = number
        event["transaction_hash"] = _hex(t.tx_hash)
        event["transaction_index"] = offset
        event["event_index"] = 0  # index within its transaction: one event per transfer
        return event


def _keys_match(key_sets: list[frozenset[int]], keys: tuple[int, ...]) -> bool:
    for position, allowed in enumerate(key_sets):
        if not allowed:
            continue
        if position >= len(keys) or keys[position] not in allowed:
            return False
    return True


def _felt(value: Any) -> int:
    if not isinstance(value, str) or _FELT_RE.fullmatch(value) is None:
        raise _invalid_params(f"not a felt: {value!r}")
    number = int(value, 16)
    if number >= FIELD_PRIME:
        raise _invalid_params(f"not a felt: {value!r}")
    return number


def _param(params: Any, index: int, name: str) -> Any:
    if isinstance(params, Mapping):
        if name in params:
            return params[name]
    elif isinstance(params, list) and index < len(params):
        return params[index]
    raise _invalid_params(f"missing parameter {name!r}")


def _error_envelope(request_id: Any, error: RpcError) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "error": error.to_json()}


def _corrupt(method: str, fault: Fault, envelope: dict[str, Any]) -> None:
    """Apply a malformed / wrong_type / u256_high fault to a successful response."""
    result = envelope["result"]
    if fault.kind == "u256_high":
        if isinstance(result, list) and len(result) == 2:
            result[1] = _hex(fault.high)
        return
    malformed = fault.kind == "malformed"
    if method in ("starknet_blockNumber", "starknet_chainId", "starknet_specVersion"):
        if malformed:
            del envelope["result"]
        elif method == "starknet_blockNumber":
            envelope["result"] = _hex(result)
        elif method == "starknet_chainId":
            envelope["result"] = int(result, 16)
        else:
            envelope["result"] = 10
    elif method == "starknet_blockHashAndNumber":
        if malformed:
            del result["block_hash"]
        else:
            result["block_number"] = _hex(result["block_number"])
    elif method == "starknet_getBlockWithTxHashes":
        pre_confirmed = "block_hash" not in result
        if malformed:
            del result["timestamp" if pre_confirmed else "parent_hash"]
        elif pre_confirmed:
            result["timestamp"] = _hex(result["timestamp"])
        else:
            result["block_number"] = _hex(result["block_number"])
    elif method == "starknet_call":
        if malformed:
            del result[1:]
        else:
            envelope["result"] = [int(x, 16) for x in result]
    elif method == "starknet_getEvents":
        if not result["events"]:
            if malformed:
                del result["events"]
            else:
                result["events"] = None
            return
        for event in result["events"]:
            if malformed:
                del event["event_index"]
            else:
                event["block_number"] = _hex(event["block_number"])


__all__ = [
    "BLOCK_NOT_FOUND",
    "CONTRACT_NOT_FOUND",
    "FAULT_KINDS",
    "SN_MAIN",
    "SN_SEPOLIA",
    "SPEC_VERSION",
    "TRANSFER_SELECTOR",
    "BlockInfo",
    "FaultKind",
    "Faults",
    "RpcError",
    "StarknetTestNode",
    "Transfer",
]
