"""The settlement vault on an EVM chain, through web3.py: deploy, deposit, commit blocks,
claim withdrawals, read events and balances.

The chain is the in-process py-evm of eth-tester by default (``connect(None)``), or any
JSON-RPC node (``connect("http://127.0.0.1:8545")``, e.g. anvil). Contracts come from the
committed artifacts in ``contracts_abi/`` (``scripts/build_contracts.sh`` builds them).
Transactions from a local key are signed here and sent raw, so the operator's own key
commits blocks, as the vault requires.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, NamedTuple

from eth_account.signers.local import LocalAccount
from web3 import Web3
from web3.contract import Contract
from web3.types import TxReceipt, Wei

from ledger.core.blocks import BlockHeader
from ledger.core.withdrawals import WithdrawalProof
from ledger.errors import LedgerError

ARTIFACTS_ENV = "LEDGER_CONTRACTS_ABI"
ETH_FOR_GAS = 10**18


class ChainError(LedgerError):
    """The chain refused a transaction, or is not what the ledger expects."""


@cache
def artifact(name: str) -> dict[str, Any]:
    """A compiled contract (``contracts_abi/NAME.json``): its ABI and bytecode."""
    folder = Path(os.environ.get(ARTIFACTS_ENV, Path(__file__).parents[2] / "contracts_abi"))
    try:
        data: dict[str, Any] = json.loads((folder / f"{name}.json").read_text())
    except OSError as exc:
        raise ChainError(f"contract artifact {name} not found in {folder}: {exc}") from exc
    return data


def connect(rpc_url: str | None = None) -> Web3:
    """Web3 on ``rpc_url``, or on a fresh in-process py-evm chain."""
    if rpc_url is None:
        from eth_tester import EthereumTester, PyEVMBackend  # type: ignore[import-untyped]
        from web3 import EthereumTesterProvider

        return Web3(EthereumTesterProvider(EthereumTester(PyEVMBackend())))
    w3 = Web3(Web3.HTTPProvider(rpc_url, request_kwargs={"timeout": 30}))
    if not w3.is_connected():
        raise ChainError(f"no JSON-RPC node answers at {rpc_url}")
    return w3


class Deposit(NamedTuple):
    """A ``Deposit`` event, where it was observed."""

    chain_id: int
    tx_hash: str
    log_index: int
    block_number: int
    block_hash: str
    deposit_id: int
    sender: str
    account: str
    amount: int

    @property
    def key(self) -> str:
        """The ledger's idempotency key: one deposit, one journal transaction."""
        return f"l1/{self.chain_id}/{self.tx_hash}/{self.log_index}"


class Payout(NamedTuple):
    """A ``WithdrawalPaid`` event: the vault paid withdrawal ``seq`` out."""

    chain_id: int
    tx_hash: str
    log_index: int
    block_number: int
    block: int
    seq: int
    recipient: str
    amount: int


@dataclass
class Vault:
    """A deployed vault and its USDC token on one chain."""

    w3: Web3
    usdc: Contract
    vault: Contract

    @property
    def chain_id(self) -> int:
        return int(self.w3.eth.chain_id)

    @property
    def chain(self) -> str:
        """The chain's CAIP-2 name (``eip155:ID``), as chain cursors are keyed."""
        return f"eip155:{self.chain_id}"

    # ------------------------------------------------------------------ set-up
    @classmethod
    def deploy(cls, w3: Web3, deployer: LocalAccount, operator: str) -> Vault:
        """Deploy a devnet USDC and a vault whose operator is ``operator``."""
        usdc = _deploy(w3, deployer, artifact("DevUSDC"))
        vault = _deploy(w3, deployer, artifact("SettlementVault"), usdc.address, operator)
        return cls(w3, usdc, vault)

    @classmethod
    def at(cls, w3: Web3, vault_address: str) -> Vault:
        """The vault already deployed at ``vault_address``."""
        vault = w3.eth.contract(
            address=w3.to_checksum_address(vault_address), abi=_abi("SettlementVault")
        )
        usdc = w3.eth.contract(address=vault.functions.usdc().call(), abi=_abi("DevUSDC"))
        return cls(w3, usdc, vault)

    # ------------------------------------------------------------------ writes
    def deposit(self, account: LocalAccount, amount: int, credit: str) -> TxReceipt:
        """``account`` deposits ``amount`` USDC base units for ledger account ``credit``."""
        send(self.w3, account, self.usdc.functions.approve(self.vault.address, amount))
        return send(
            self.w3,
            account,
            self.vault.functions.deposit(amount, self.w3.to_checksum_address(credit)),
        )

    def commit(self, operator: LocalAccount, header: BlockHeader) -> TxReceipt:
        """Commit a sealed block header (the vault checks order and the previous hash)."""
        return send(self.w3, operator, self.vault.functions.commitBlock(header.encode()))

    def claim(self, sender: LocalAccount, proof: WithdrawalProof) -> TxReceipt:
        """Pay a withdrawal out with its proof (anyone may send it)."""
        w = proof.withdrawal
        call = self.vault.functions.claim(
            proof.block,
            w.seq,
            self.w3.to_checksum_address(w.recipient),
            w.amount,
            proof.index,
            proof.count,
            list(proof.siblings),
        )
        return send(self.w3, sender, call)

    # ------------------------------------------------------------------ reads
    def balance(self, who: str | None = None) -> int:
        """USDC held by ``who`` (default: the vault)."""
        address = self.vault.address if who is None else self.w3.to_checksum_address(who)
        value: int = self.usdc.functions.balanceOf(address).call()
        return value

    def committed_block(self) -> int:
        number: int = self.vault.functions.lastBlockNumber().call()
        return number

    def deposits(self, from_block: int, to_block: int) -> list[Deposit]:
        """``Deposit`` events in blocks ``from_block..to_block``, in chain order."""
        logs = _in_chain_order(self.vault.events.Deposit(), from_block, to_block)
        chain_id = self.chain_id
        return [
            Deposit(
                chain_id,
                hex_hash(log["transactionHash"]),
                int(log["logIndex"]),
                int(log["blockNumber"]),
                hex_hash(log["blockHash"]),
                int(log["args"]["depositId"]),
                str(log["args"]["from"]).lower(),
                str(log["args"]["l2Account"]).lower(),
                int(log["args"]["amount"]),
            )
            for log in logs
        ]

    def payouts(self, from_block: int = 0, to_block: int | None = None) -> list[Payout]:
        """``WithdrawalPaid`` events in blocks ``from_block..to_block``, in chain order."""
        last = self.w3.eth.block_number if to_block is None else to_block
        logs = _in_chain_order(self.vault.events.WithdrawalPaid(), from_block, last)
        chain_id = self.chain_id
        return [
            Payout(
                chain_id,
                hex_hash(log["transactionHash"]),
                int(log["logIndex"]),
                int(log["blockNumber"]),
                int(log["args"]["blockNumber"]),
                int(log["args"]["seq"]),
                str(log["args"]["recipient"]).lower(),
                int(log["args"]["amount"]),
            )
            for log in logs
        ]


def _in_chain_order(event: Any, from_block: int, to_block: int) -> list[Any]:
    """``event``'s logs in blocks ``from_block..to_block``, by block and log index."""
    logs = event.get_logs(from_block=from_block, to_block=to_block)
    return sorted(logs, key=lambda log: (log["blockNumber"], log["logIndex"]))


def give_eth(w3: Web3, funder: str, address: str, wei: int = ETH_FOR_GAS) -> None:
    """Send ``address`` ETH for gas from ``funder``, an account the node unlocks (devnets
    prefund a few)."""
    tx = w3.eth.send_transaction({"from": funder, "to": address, "value": Wei(wei)})
    w3.eth.wait_for_transaction_receipt(tx)


def send(w3: Web3, account: LocalAccount, call: Any) -> TxReceipt:
    """Sign ``call`` with ``account``'s key, send it raw and wait; refuse a revert (which
    the node may already report when estimating gas)."""
    try:
        tx = call.build_transaction(
            {
                "from": account.address,
                "nonce": w3.eth.get_transaction_count(account.address, "pending"),
                "chainId": w3.eth.chain_id,
            }
        )
        raw = account.sign_transaction(tx).raw_transaction
        receipt = w3.eth.wait_for_transaction_receipt(w3.eth.send_raw_transaction(raw))
    except Exception as exc:  # web3 and eth-tester raise several types for a revert
        raise ChainError(f"the chain refused the transaction: {exc}") from exc
    if receipt["status"] != 1:
        raise ChainError(f"transaction {receipt['transactionHash'].hex()} reverted")
    return receipt


def hex_hash(value: bytes | str) -> str:
    """0x-prefixed hex of a hash, whichever form the node gave."""
    text = value.hex() if isinstance(value, bytes) else value
    return text if text.startswith("0x") else "0x" + text


def _abi(name: str) -> Any:
    return artifact(name)["abi"]


def _deploy(w3: Web3, deployer: LocalAccount, data: dict[str, Any], *args: Any) -> Contract:
    factory = w3.eth.contract(abi=data["abi"], bytecode=data["bytecode"])
    receipt = send(w3, deployer, factory.constructor(*args))
    address = receipt["contractAddress"]
    assert address is not None
    return w3.eth.contract(address=address, abi=data["abi"])
