"""anvil (Foundry's devnet node, installed from npm) on a free loopback port, for tests.

``LEDGER_ANVIL`` names the binary (``.ci/run`` installs it); without it the anvil tests
skip, unless ``LEDGER_REQUIRE_ANVIL=1`` (CI), where a missing anvil is a failure.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from web3 import Web3


def anvil_binary() -> str | None:
    path = os.environ.get("LEDGER_ANVIL")
    if path and os.access(path, os.X_OK):
        return path
    if os.environ.get("LEDGER_REQUIRE_ANVIL") == "1":
        pytest.fail("LEDGER_ANVIL does not name an executable anvil, and CI requires one")
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextmanager
def running_anvil() -> Iterator[str]:
    """Start anvil, yield its URL once it answers, stop it afterwards."""
    binary = anvil_binary()
    if binary is None:
        pytest.skip("anvil is not installed (set LEDGER_ANVIL; .ci/run installs it from npm)")
    port = _free_port()
    process = subprocess.Popen(
        [binary, "--host", "127.0.0.1", "--port", str(port), "--silent"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while not Web3(Web3.HTTPProvider(url)).is_connected():
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"anvil did not start on port {port}")
            time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)
