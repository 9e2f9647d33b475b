"""Signature verification speed: the ledger's verifiers against the raw library calls, in the
same run, and signed actions applied per second end to end.

Prints one JSON object. Usage: python scripts/bench_signatures.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any, cast

from eth_account import Account
from eth_account.messages import encode_typed_data
from starknet_py.hash.utils import verify_message_signature
from starknet_py.utils.typed_data import TypedData

from ledger import Ledger
from ledger.core import eip712, envelopes, genesis, snip12
from ledger.core.encoding import sha256
from ledger.wallet import Wallet


def rate(calls: int, work: Callable[[int], object]) -> float:
    """Calls per second of ``work(i)`` for i in range(calls)."""
    started = time.perf_counter()
    for i in range(calls):
        work(i)
    return calls / (time.perf_counter() - started)


def wallet(name: str) -> Wallet:
    return Wallet(sha256(f"bench-{name}".encode()).digest())


def eip712_rates(n: int) -> dict[str, float]:
    signer = wallet("operator")
    messages = [
        eip712.system_event_message(
            signer.l1_chain_id, "deposit", f"k{i}", sha256(b"%d" % i).digest()
        )
        for i in range(n)
    ]
    signatures = [signer.sign_l1(m) for m in messages]

    def ours(i: int) -> None:
        assert eip712.recover(messages[i], signatures[i]) == signer.address

    def raw(i: int) -> None:
        signable = encode_typed_data(full_message=messages[i])
        assert Account.recover_message(signable, signature=signatures[i]).lower() == signer.address

    return {"ledger_per_s": rate(n, ours), "raw_per_s": rate(n, raw)}


def snip12_rates(n: int) -> dict[str, float]:
    owner = wallet("alice")
    domain = genesis.l2_domain(genesis.DEFAULT_L2_CHAIN_ID)
    struct = envelopes.ACTION_TYPES["transfer"]
    signed = [
        owner.transfer(owner.address, wallet("bob").address, 1_000 + i, domain, i + 1, 2**40)
        for i in range(n)
    ]
    public_key, account = owner.stark_public_key, owner.stark_account

    def ours(i: int) -> None:
        envelopes.verify_action(signed[i], domain)

    def raw(i: int) -> None:
        data = snip12.typed_data(domain, struct, signed[i]["message"])
        message_hash = TypedData.from_dict(cast(Any, data)).message_hash(account)
        r, s = (int(x, 16) for x in signed[i]["signature"])
        assert verify_message_signature(message_hash, [r, s], public_key)

    return {"ledger_per_s": rate(n, ours), "raw_per_s": rate(n, raw)}


def end_to_end(n: int, batch: int) -> float:
    operator, alice, bob = wallet("operator"), wallet("alice"), wallet("bob")
    with tempfile.TemporaryDirectory() as directory:
        book = Ledger.init(f"sqlite:///{directory}/bench.db", operator=operator)
        book.onboard(alice)
        book.onboard(bob)
        book.deposit(alice.address, 10**12)
        signed = [
            alice.transfer(alice.address, bob.address, 1 + i, book.domain, i + 1, 2**40)
            for i in range(n)
        ]
        started = time.perf_counter()
        for start in range(0, n, batch):
            book.submit([book.request_for(e) for e in signed[start : start + batch]])
        elapsed = time.perf_counter() - started
        assert book.store.last_nonce(alice.address) == n
        book.close()
    return n / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    n = 100 if args.quick else 500
    result: dict[str, Any] = {}
    for name, measure in (("eip712", eip712_rates), ("snip12", snip12_rates)):
        rates = measure(n)
        result[name] = {k: round(v, 1) for k, v in rates.items()}
        result[name]["ratio"] = round(rates["ledger_per_s"] / rates["raw_per_s"], 3)
    result["signed_actions_per_s"] = {
        "batch_1": round(end_to_end(n // 2, 1), 1),
        "batch_100": round(end_to_end(n, 100), 1),
    }
    json.dump(result, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
