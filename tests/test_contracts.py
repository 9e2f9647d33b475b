"""The settlement contracts (contracts/*.sol) on an in-process EVM (py-evm through
eth-tester), loaded from the committed artifacts in contracts_abi/ (no compiler needed;
`bash scripts/build_contracts.sh --check` proves the artifacts match the sources).

The block headers are the ledger's own (`BlockHeader.encode()`), and the withdrawal trees
are built with `ledger.core.merkle`, so these tests pin the Solidity side to the Python one.
"""

from __future__ import annotations

import ast
import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from eth_abi import encode as abi_encode
from eth_tester import EthereumTester, PyEVMBackend
from eth_tester.exceptions import TransactionFailed
from eth_utils import keccak
from web3 import EthereumTesterProvider, Web3
from web3.contract import Contract
from web3.logs import DISCARD

from ledger.core.blocks import BlockHeader
from ledger.core.encoding import ZERO_HASH
from ledger.core.merkle import merkle_levels, merkle_proof, root_from_proof, verify_proof

ARTIFACTS = Path(__file__).resolve().parent.parent / "contracts_abi"
USDC_UNIT = 10**6
COMMIT_GAS_LIMIT = 150_000
CLAIM_GAS_LIMIT = 120_000


def artifact(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((ARTIFACTS / f"{name}.json").read_text())
    return data


USDC_ARTIFACT = artifact("DevUSDC")
VAULT_ARTIFACT = artifact("SettlementVault")


# --------------------------------------------------------------------------- helpers


def revert_data(error: TransactionFailed) -> bytes:
    """The raw revert data: web3's eth-tester provider reports it as the ``repr`` of bytes
    after ``execution reverted: ``."""
    message = str(error.args[0])
    prefix = "execution reverted: "
    assert message.startswith(prefix), message
    data = ast.literal_eval(message[len(prefix) :])
    assert isinstance(data, bytes), message
    return data


def error_data(abi: Sequence[dict[str, Any]], name: str, *args: Any) -> bytes:
    """ABI encoding of custom error ``name(args)`` as declared in ``abi``."""
    (entry,) = [e for e in abi if e["type"] == "error" and e["name"] == name]
    types = [i["type"] for i in entry["inputs"]]
    selector = keccak(text=f"{name}({','.join(types)})")[:4]
    return selector + abi_encode(types, list(args))


def expect_revert(
    call: Callable[[], Any], abi: Sequence[dict[str, Any]], name: str, *args: Any
) -> None:
    """``call()`` (a transaction or an eth_call) reverts with custom error ``name(args)``
    as ``abi`` declares it."""
    with pytest.raises(TransactionFailed) as caught:
        call()
    assert revert_data(caught.value) == error_data(abi, name, *args)


def withdrawal_leaf(seq: int, recipient: str, amount: int) -> bytes:
    """The contract's leaf, by hand: sha256(0x02 ‖ uint64 seq ‖ address ‖ uint128 amount)."""
    return hashlib.sha256(
        b"\x02" + seq.to_bytes(8, "big") + bytes.fromhex(recipient[2:]) + amount.to_bytes(16, "big")
    ).digest()


def header(
    number: int, prev: bytes, withdrawal_root: bytes = ZERO_HASH, **fields: Any
) -> BlockHeader:
    """A plausible ledger header; the vault reads only number, prev hash and the roots."""
    base = BlockHeader(
        number=number,
        first_seq=10 * number + 1,
        last_seq=10 * number + 10,
        sealed_at=1_764_300_000_000_000 + number,
        leaf_count=7 + number,
        prev_block_hash=prev,
        tx_head_hash=hashlib.sha256(b"head %d" % number).digest(),
        state_root=hashlib.sha256(b"state %d" % number).digest(),
        withdrawal_root=withdrawal_root,
    )
    return replace(base, **fields)


@dataclass
class Withdrawal:
    seq: int
    recipient: str
    amount: int

    @property
    def leaf(self) -> bytes:
        return withdrawal_leaf(self.seq, self.recipient, self.amount)


@dataclass
class Tree:
    """A withdrawal tree as the ledger side would build it: leaves in order of seq."""

    withdrawals: list[Withdrawal]

    @property
    def leaves(self) -> list[bytes]:
        return [w.leaf for w in self.withdrawals]

    @property
    def root(self) -> bytes:
        return merkle_levels(self.leaves)[-1][0]

    def proof(self, index: int) -> list[bytes]:
        return merkle_proof(self.leaves, index)


@dataclass
class Chain:
    w3: Web3
    usdc: Contract
    vault: Contract
    deployer: str
    operator: str
    users: list[str]

    def send(self, call: Any, sender: str) -> Any:
        """Transact ``call`` from ``sender``; the receipt (asserting success)."""
        receipt = self.w3.eth.wait_for_transaction_receipt(call.transact({"from": sender}))
        assert receipt["status"] == 1
        return receipt

    def fund(self, user: str, amount: int) -> None:
        self.send(self.usdc.functions.mint(user, amount), user)
        self.send(self.usdc.functions.approve(self.vault.address, amount), user)

    def commit(self, block: BlockHeader) -> Any:
        return self.send(self.vault.functions.commitBlock(block.encode()), self.operator)

    def claim_call(
        self,
        block: int,
        w: Withdrawal,
        index: int,
        count: int,
        siblings: Sequence[bytes],
    ) -> Any:
        return self.vault.functions.claim(
            block, w.seq, w.recipient, w.amount, index, count, list(siblings)
        )

    def balance(self, who: str) -> int:
        result: int = self.usdc.functions.balanceOf(who).call()
        return result


def deploy(w3: Web3, data: dict[str, Any], *args: Any, sender: str) -> Contract:
    factory = w3.eth.contract(abi=data["abi"], bytecode=data["bytecode"])
    receipt = w3.eth.wait_for_transaction_receipt(
        factory.constructor(*args).transact({"from": sender})
    )
    return w3.eth.contract(address=receipt["contractAddress"], abi=data["abi"])


def deploy_raw(w3: Web3, runtime: bytes, sender: str) -> str:
    """Deploy hand-assembled ``runtime`` code (a misbehaving token); its address."""
    assert len(runtime) < 256
    n = len(runtime)
    # PUSH1 n PUSH1 12 PUSH1 0 CODECOPY PUSH1 n PUSH1 0 RETURN, then the runtime.
    init = bytes([0x60, n, 0x60, 12, 0x60, 0, 0x39, 0x60, n, 0x60, 0, 0xF3]) + runtime
    tx = w3.eth.send_transaction({"from": sender, "data": "0x" + init.hex()})
    address: str = w3.eth.wait_for_transaction_receipt(tx)["contractAddress"]
    assert w3.eth.get_code(address) == runtime
    return address


@pytest.fixture
def chain() -> Chain:
    w3 = Web3(EthereumTesterProvider(EthereumTester(PyEVMBackend())))
    deployer, operator, *users = w3.eth.accounts
    usdc = deploy(w3, USDC_ARTIFACT, sender=deployer)
    vault = deploy(w3, VAULT_ARTIFACT, usdc.address, operator, sender=deployer)
    return Chain(w3, usdc, vault, deployer, operator, users)


VAULT_ABI = VAULT_ARTIFACT["abi"]
USDC_ABI = USDC_ARTIFACT["abi"]


# --------------------------------------------------------------------------- artifacts


def test_artifacts_have_the_documented_shape() -> None:
    for name, data in (("DevUSDC", USDC_ARTIFACT), ("SettlementVault", VAULT_ARTIFACT)):
        assert list(data) == ["contract", "compiler", "abi", "bytecode"]
        assert data["contract"] == name
        assert data["compiler"]["evmVersion"] == "cancun"
        assert data["compiler"]["optimizer"] == {"enabled": True, "runs": 200}
        assert data["bytecode"].startswith("0x") and len(data["bytecode"]) > 2
        assert (ARTIFACTS / f"{name}.json").read_text().endswith("}\n")


# --------------------------------------------------------------------------- DevUSDC


def test_dev_usdc_is_a_plain_erc20(chain: Chain) -> None:
    usdc, (alice, bob, carol, *_) = chain.usdc, chain.users
    assert usdc.functions.name().call() == "Dev USD Coin"
    assert usdc.functions.symbol().call() == "USDC"
    assert usdc.functions.decimals().call() == 6

    receipt = chain.send(usdc.functions.mint(alice, 100 * USDC_UNIT), bob)  # anyone may mint
    (minted,) = usdc.events.Transfer().process_receipt(receipt, errors=DISCARD)
    assert minted["args"] == {"from": "0x" + "00" * 20, "to": alice, "value": 100 * USDC_UNIT}
    assert usdc.functions.totalSupply().call() == 100 * USDC_UNIT

    assert usdc.functions.transfer(bob, 1).call({"from": alice}) is True
    chain.send(usdc.functions.transfer(bob, 10 * USDC_UNIT), alice)
    assert (chain.balance(alice), chain.balance(bob)) == (90 * USDC_UNIT, 10 * USDC_UNIT)

    receipt = chain.send(usdc.functions.approve(carol, 5 * USDC_UNIT), alice)
    (approval,) = usdc.events.Approval().process_receipt(receipt, errors=DISCARD)
    assert approval["args"] == {"owner": alice, "spender": carol, "value": 5 * USDC_UNIT}
    assert usdc.functions.transferFrom(alice, carol, 1).call({"from": carol}) is True
    chain.send(usdc.functions.transferFrom(alice, carol, 2 * USDC_UNIT), carol)
    assert usdc.functions.allowance(alice, carol).call() == 3 * USDC_UNIT
    assert chain.balance(carol) == 2 * USDC_UNIT

    unlimited = 2**256 - 1
    chain.send(usdc.functions.approve(carol, unlimited), alice)
    chain.send(usdc.functions.transferFrom(alice, carol, USDC_UNIT), carol)
    assert usdc.functions.allowance(alice, carol).call() == unlimited


def test_dev_usdc_reverts(chain: Chain) -> None:
    usdc, (alice, bob, carol, *_) = chain.usdc, chain.users
    zero = "0x" + "00" * 20
    chain.send(usdc.functions.mint(alice, 10), alice)
    chain.send(usdc.functions.approve(carol, 4), alice)
    expect_revert(
        lambda: usdc.functions.transferFrom(alice, bob, 5).transact({"from": carol}),
        USDC_ABI,
        "InsufficientAllowance",
        carol,
        4,
        5,
    )
    expect_revert(
        lambda: usdc.functions.transfer(bob, 11).transact({"from": alice}),
        USDC_ABI,
        "InsufficientBalance",
        alice,
        10,
        11,
    )
    chain.send(usdc.functions.approve(carol, 100), alice)
    expect_revert(
        lambda: usdc.functions.transferFrom(alice, bob, 11).transact({"from": carol}),
        USDC_ABI,
        "InsufficientBalance",
        alice,
        10,
        11,
    )
    expect_revert(
        lambda: usdc.functions.mint(zero, 1).transact({"from": alice}),
        USDC_ABI,
        "ZeroAddressReceiver",
    )
    expect_revert(
        lambda: usdc.functions.transfer(zero, 1).transact({"from": alice}),
        USDC_ABI,
        "ZeroAddressReceiver",
    )


# --------------------------------------------------------------------------- constructor


def test_vault_constructor(chain: Chain) -> None:
    vault = chain.vault
    assert vault.functions.usdc().call() == chain.usdc.address
    assert vault.functions.operator().call() == chain.operator
    assert vault.functions.nextDepositId().call() == 1
    assert vault.functions.lastBlockNumber().call() == 0
    assert vault.functions.lastBlockHash().call() == ZERO_HASH

    factory = chain.w3.eth.contract(abi=VAULT_ABI, bytecode=VAULT_ARTIFACT["bytecode"])
    expect_revert(
        lambda: factory.constructor(chain.usdc.address, "0x" + "00" * 20).transact(
            {"from": chain.deployer}
        ),
        VAULT_ABI,
        "ZeroOperator",
    )
    not_a_token = chain.users[0]
    expect_revert(
        lambda: factory.constructor(not_a_token, chain.operator).transact({"from": chain.deployer}),
        VAULT_ABI,
        "TokenNotAContract",
        not_a_token,
    )


# --------------------------------------------------------------------------- deposits


def test_deposits(chain: Chain) -> None:
    vault, (alice, bob, *_) = chain.vault, chain.users
    chain.fund(alice, 100 * USDC_UNIT)
    chain.fund(bob, 7)
    l2_alice, l2_bob = alice, chain.users[5]  # the ledger account credited: any address

    assert vault.functions.deposit(30 * USDC_UNIT, l2_alice).call({"from": alice}) == 1
    events = []
    for sender, amount, l2 in (
        (alice, 30 * USDC_UNIT, l2_alice),
        (bob, 7, l2_bob),
        (alice, 70 * USDC_UNIT, l2_bob),
    ):
        receipt = chain.send(vault.functions.deposit(amount, l2), sender)
        (event,) = vault.events.Deposit().process_receipt(receipt, errors=DISCARD)
        assert event["address"] == vault.address
        events.append(event["args"])
    assert events == [
        {"depositId": 1, "from": alice, "l2Account": l2_alice, "amount": 30 * USDC_UNIT},
        {"depositId": 2, "from": bob, "l2Account": l2_bob, "amount": 7},
        {"depositId": 3, "from": alice, "l2Account": l2_bob, "amount": 70 * USDC_UNIT},
    ]
    assert vault.functions.nextDepositId().call() == 4
    assert chain.balance(vault.address) == 100 * USDC_UNIT + 7
    assert chain.balance(alice) == chain.balance(bob) == 0
    assert chain.usdc.functions.allowance(alice, vault.address).call() == 0


def test_deposit_reverts(chain: Chain) -> None:
    vault, (alice, bob, *_) = chain.vault, chain.users
    expect_revert(
        lambda: vault.functions.deposit(0, alice).transact({"from": alice}), VAULT_ABI, "ZeroAmount"
    )
    expect_revert(
        lambda: vault.functions.deposit(1, "0x" + "00" * 20).transact({"from": alice}),
        VAULT_ABI,
        "ZeroL2Account",
    )
    chain.send(chain.usdc.functions.mint(alice, 10), alice)
    # No allowance: the token's own error comes through.
    expect_revert(
        lambda: vault.functions.deposit(5, alice).transact({"from": alice}),
        USDC_ABI,
        "InsufficientAllowance",
        vault.address,
        0,
        5,
    )
    chain.send(chain.usdc.functions.approve(vault.address, 100), alice)
    expect_revert(
        lambda: vault.functions.deposit(11, bob).transact({"from": alice}),
        USDC_ABI,
        "InsufficientBalance",
        alice,
        10,
        11,
    )
    assert vault.functions.nextDepositId().call() == 1  # no id was used up


def test_token_that_fails_quietly(chain: Chain) -> None:
    """A token that returns false, or reverts without data, is a TokenTransferFailed."""
    w3, alice = chain.w3, chain.users[0]
    returns_false = deploy_raw(w3, bytes.fromhex("60206000f3"), alice)  # return 32 zero bytes
    reverts_empty = deploy_raw(w3, bytes.fromhex("60006000fd"), alice)  # revert(0, 0)
    returns_junk = deploy_raw(w3, bytes.fromhex("60016000f3"), alice)  # return 1 byte
    for token in (returns_false, reverts_empty, returns_junk):
        vault = deploy(w3, VAULT_ARTIFACT, token, chain.operator, sender=chain.deployer)
        expect_revert(
            lambda v=vault: v.functions.deposit(1, alice).transact({"from": alice}),
            VAULT_ABI,
            "TokenTransferFailed",
        )
    # A token that returns nothing on success (USDT style) is accepted.
    silent = deploy_raw(w3, bytes.fromhex("00"), alice)  # STOP
    vault = deploy(w3, VAULT_ARTIFACT, silent, chain.operator, sender=chain.deployer)
    chain.send(vault.functions.deposit(1, alice), alice)


# --------------------------------------------------------------------------- blocks


def test_commit_blocks(chain: Chain) -> None:
    vault = chain.vault
    prev = ZERO_HASH
    for number in (1, 2, 3):
        root = hashlib.sha256(b"withdrawals %d" % number).digest() if number != 2 else ZERO_HASH
        block = header(number, prev, root)
        receipt = chain.commit(block)
        assert receipt["gasUsed"] < COMMIT_GAS_LIMIT, receipt["gasUsed"]
        (event,) = vault.events.BlockCommitted().process_receipt(receipt, errors=DISCARD)
        assert event["args"] == {
            "number": number,
            "blockHash": block.hash,
            "stateRoot": block.state_root,
            "withdrawalRoot": root,
        }
        assert vault.functions.blocks(number).call() == [block.hash, block.state_root, root]
        assert vault.functions.lastBlockNumber().call() == number
        assert vault.functions.lastBlockHash().call() == block.hash
        prev = block.hash
    assert vault.functions.blocks(4).call() == [ZERO_HASH] * 3
    assert vault.functions.blocks(0).call() == [ZERO_HASH] * 3


def test_commit_gas(chain: Chain) -> None:
    """Three fresh slots per block (hash, state root, withdrawal root) dominate: ~102k."""
    first = header(1, ZERO_HASH, hashlib.sha256(b"w1").digest())
    second = header(2, first.hash, hashlib.sha256(b"w2").digest())
    for block in (first, second):
        gas = chain.commit(block)["gasUsed"]
        assert 90_000 < gas < 110_000 < COMMIT_GAS_LIMIT, gas


def test_commit_reverts(chain: Chain) -> None:
    vault, operator, stranger = chain.vault, chain.operator, chain.users[0]

    def commit(data: bytes, sender: str = operator) -> Callable[[], Any]:
        return lambda: vault.functions.commitBlock(data).transact({"from": sender})

    one = header(1, ZERO_HASH)
    expect_revert(commit(one.encode(), stranger), VAULT_ABI, "NotOperator", stranger)
    expect_revert(commit(one.encode(), chain.deployer), VAULT_ABI, "NotOperator", chain.deployer)
    for data in (b"", one.encode()[:-1], one.encode() + b"\x00", one.encode() * 2):
        expect_revert(commit(data), VAULT_ABI, "BadHeaderLength", len(data))
    bad_magic = b"LBLK0002" + one.encode()[8:]
    expect_revert(commit(bad_magic), VAULT_ABI, "BadHeaderMagic", b"LBLK0002")
    expect_revert(commit(header(2, ZERO_HASH).encode()), VAULT_ABI, "UnexpectedBlockNumber", 1, 2)
    expect_revert(commit(header(0, ZERO_HASH).encode()), VAULT_ABI, "UnexpectedBlockNumber", 1, 0)
    wrong_prev = b"\x11" * 32
    expect_revert(
        commit(header(1, wrong_prev).encode()),
        VAULT_ABI,
        "PrevBlockHashMismatch",
        ZERO_HASH,
        wrong_prev,
    )
    assert vault.functions.lastBlockNumber().call() == 0

    chain.commit(one)
    expect_revert(commit(header(3, one.hash).encode()), VAULT_ABI, "UnexpectedBlockNumber", 2, 3)
    expect_revert(
        commit(header(2, ZERO_HASH).encode()),
        VAULT_ABI,
        "PrevBlockHashMismatch",
        one.hash,
        ZERO_HASH,
    )
    two = header(2, one.hash)
    chain.commit(two)
    # No rewrite: neither the same header again nor another one with a used number.
    for again in (one, two, header(1, ZERO_HASH, b"\x22" * 32), header(2, one.hash, b"\x22" * 32)):
        expect_revert(commit(again.encode()), VAULT_ABI, "BlockAlreadyCommitted", again.number)
    assert vault.functions.lastBlockHash().call() == two.hash
    assert vault.functions.blocks(1).call() == [one.hash, one.state_root, ZERO_HASH]


# --------------------------------------------------------------------------- claims


def five_withdrawals(chain: Chain) -> Tree:
    alice, bob, carol, dave, *_ = chain.users
    return Tree(
        [
            Withdrawal(12, alice, 5 * USDC_UNIT),
            Withdrawal(13, bob, 1),
            Withdrawal(15, carol, 2**100),  # uint128 amounts: the top bytes are used too
            Withdrawal(17, alice, 7 * USDC_UNIT),
            Withdrawal(19, dave, 123_456_789),
        ]
    )


def test_leaf_and_proof_match_the_ledger(chain: Chain) -> None:
    vault = chain.vault
    recipient = chain.users[3]
    for seq, amount in ((0, 0), (1, 1), (2**64 - 1, 2**128 - 1), (12345, 5 * USDC_UNIT)):
        assert vault.functions.withdrawalLeaf(seq, recipient, amount).call() == withdrawal_leaf(
            seq, recipient, amount
        )
    assert len(b"\x02" + (1).to_bytes(8, "big") + bytes(20) + (1).to_bytes(16, "big")) == 45

    # rootFromProof is root_from_proof, for every shape of tree up to 9 leaves and for
    # altered proofs: the same root where Python folds one, MalformedProof where it gives None.
    for count in range(1, 10):
        leaves = [withdrawal_leaf(i, recipient, i + 1) for i in range(count)]
        root = merkle_levels(leaves)[-1][0]
        for index in range(count):
            siblings = merkle_proof(leaves, index)
            assert root_from_proof(leaves[index], index, count, siblings) == root
            assert (
                vault.functions.rootFromProof(leaves[index], index, count, siblings).call() == root
            )
            variants = (
                (index, count, [*siblings, b"\x33" * 32]),
                (index, count, siblings[:-1]),
                (index, count, siblings[::-1]),
                (index ^ 1, count, siblings),
                (count, count, siblings),
                (index, index, siblings),
                (index, count + 1, siblings),
                (index, 2 * count, siblings),
            )
            for v_index, v_count, v_siblings in variants:
                expected = root_from_proof(leaves[index], v_index, v_count, v_siblings)
                call = vault.functions.rootFromProof(leaves[index], v_index, v_count, v_siblings)
                if expected is None:
                    expect_revert(call.call, VAULT_ABI, "MalformedProof")
                else:
                    assert call.call() == expected


def test_claims(chain: Chain) -> None:
    vault, anyone = chain.vault, chain.users[6]
    tree = five_withdrawals(chain)
    total = sum(w.amount for w in tree.withdrawals)
    chain.fund(chain.users[5], total)
    chain.send(vault.functions.deposit(total, chain.users[5]), chain.users[5])
    block = header(1, ZERO_HASH, tree.root)
    chain.commit(block)

    # The promoted leaf (index 4 of 5) first: one sibling only.
    order = [4, 0, 2, 3, 1]
    assert len(tree.proof(4)) == 1 and len(tree.proof(0)) == 3
    before = {w.recipient: chain.balance(w.recipient) for w in tree.withdrawals}
    paid: dict[str, int] = {}
    gas = []
    for index in order:
        w, siblings = tree.withdrawals[index], tree.proof(index)
        assert verify_proof(w.leaf, index, 5, siblings, tree.root)
        assert vault.functions.claimed(w.leaf).call() is False
        receipt = chain.send(chain.claim_call(1, w, index, 5, siblings), anyone)
        gas.append(receipt["gasUsed"])
        (event,) = vault.events.WithdrawalPaid().process_receipt(receipt, errors=DISCARD)
        assert event["args"] == {
            "blockNumber": 1,
            "seq": w.seq,
            "recipient": w.recipient,
            "amount": w.amount,
        }
        (transfer,) = chain.usdc.events.Transfer().process_receipt(receipt, errors=DISCARD)
        assert transfer["args"] == {"from": vault.address, "to": w.recipient, "value": w.amount}
        assert vault.functions.claimed(w.leaf).call() is True
        paid[w.recipient] = paid.get(w.recipient, 0) + w.amount
    # ~88-91k paying an address that held no USDC (a fresh balance slot), ~74k otherwise.
    assert max(gas) < 100_000 < CLAIM_GAS_LIMIT, gas
    assert min(gas) > 60_000, gas
    for recipient, amount in paid.items():
        assert chain.balance(recipient) == before[recipient] + amount
    assert chain.balance(vault.address) == 0
    assert chain.balance(anyone) == 0  # the caller pays gas and gets nothing


def test_claim_reverts(chain: Chain) -> None:
    vault, anyone = chain.vault, chain.users[6]
    tree = five_withdrawals(chain)
    w0, w4 = tree.withdrawals[0], tree.withdrawals[4]
    p0, p4 = tree.proof(0), tree.proof(4)

    def claim(block: int, w: Withdrawal, index: int, count: int, siblings: Sequence[bytes]) -> Any:
        return lambda: chain.claim_call(block, w, index, count, siblings).transact({"from": anyone})

    # Nothing committed yet.
    for number in (0, 1, 2**64 - 1):
        expect_revert(claim(number, w0, 0, 5, p0), VAULT_ABI, "UnknownBlock", number)

    block1 = header(1, ZERO_HASH, tree.root)
    chain.commit(block1)
    other = Tree([Withdrawal(21, w0.recipient, w0.amount), Withdrawal(22, chain.users[7], 3)])
    block2 = header(2, block1.hash, other.root)
    chain.commit(block2)
    expect_revert(claim(3, w0, 0, 5, p0), VAULT_ABI, "UnknownBlock", 3)

    # The vault holds nothing yet: the token's error comes through, nothing is marked.
    expect_revert(
        claim(1, w0, 0, 5, p0), USDC_ABI, "InsufficientBalance", vault.address, 0, w0.amount
    )
    assert vault.functions.claimed(w0.leaf).call() is False
    chain.fund(chain.users[5], 10**40)
    chain.send(vault.functions.deposit(2**127, chain.users[5]), chain.users[5])

    # Proofs that do not lead to the root.
    expect_revert(claim(1, replace(w0, amount=w0.amount + 1), 0, 5, p0), VAULT_ABI, "InvalidProof")
    expect_revert(claim(1, replace(w0, recipient=anyone), 0, 5, p0), VAULT_ABI, "InvalidProof")
    expect_revert(claim(1, replace(w0, seq=w0.seq + 1), 0, 5, p0), VAULT_ABI, "InvalidProof")
    expect_revert(claim(2, w0, 0, 5, p0), VAULT_ABI, "InvalidProof")  # block 1's proof
    expect_revert(claim(1, w0, 1, 5, p0), VAULT_ABI, "InvalidProof")  # wrong index, same shape
    expect_revert(claim(1, w0, 0, 5, [p0[0], p0[2], p0[1]]), VAULT_ABI, "InvalidProof")
    expect_revert(claim(1, tree.withdrawals[1], 0, 5, p0), VAULT_ABI, "InvalidProof")
    # Proofs whose shape does not fit.
    expect_revert(claim(1, w0, 5, 5, p0), VAULT_ABI, "MalformedProof")  # index == count
    expect_revert(claim(1, w0, 0, 0, []), VAULT_ABI, "MalformedProof")
    expect_revert(claim(1, w0, 0, 5, [*p0, b"\x00" * 32]), VAULT_ABI, "MalformedProof")
    expect_revert(claim(1, w0, 0, 5, p0[:-1]), VAULT_ABI, "MalformedProof")
    expect_revert(claim(1, w4, 4, 6, p4), VAULT_ABI, "MalformedProof")  # 6 leaves: 2 siblings
    expect_revert(claim(1, w4, 4, 5, []), VAULT_ABI, "MalformedProof")
    for bad in (
        (w0.leaf, 0, 5, [*p0, b"\x00" * 32]),
        (w0.leaf, 5, 5, p0),
        (w4.leaf, 4, 6, p4),
    ):
        assert root_from_proof(*bad) is None  # the ledger refuses the same shapes

    # A real claim, then every replay of it.
    chain.send(chain.claim_call(1, w0, 0, 5, p0), anyone)
    expect_revert(claim(1, w0, 0, 5, p0), VAULT_ABI, "AlreadyClaimed", w0.leaf)
    # The count is not authenticated (5 and 6 leaves give index 0 the same path), but the
    # leaf is: the same withdrawal cannot be paid twice through another shape.
    assert root_from_proof(w0.leaf, 0, 6, p0) == tree.root
    expect_revert(claim(1, w0, 0, 6, p0), VAULT_ABI, "AlreadyClaimed", w0.leaf)
    # A withdrawal committed in a later block too is still paid once (the leaf includes seq).
    again = Tree([w0, Withdrawal(30, anyone, 1)])
    block3 = header(3, block2.hash, again.root)
    chain.commit(block3)
    expect_revert(claim(3, w0, 0, 2, again.proof(0)), VAULT_ABI, "AlreadyClaimed", w0.leaf)
    chain.send(chain.claim_call(2, other.withdrawals[0], 0, 2, other.proof(0)), anyone)
