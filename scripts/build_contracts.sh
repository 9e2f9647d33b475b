#!/usr/bin/env bash
# Compile contracts/*.sol into contracts_abi/*.json with a pinned solc-js.
#
#   bash scripts/build_contracts.sh           # (re)write contracts_abi/DevUSDC.json, SettlementVault.json
#   bash scripts/build_contracts.sh --check   # recompile to a temp dir; exit 1 if the committed
#                                             # artifacts differ from what the sources compile to
#
# solc-js is installed with npm (exact version, once) into .cache/solc-<version>/, or into
# $LEDGER_SOLC_CACHE when set. Needs node >= 18 and npm.
set -euo pipefail

SOLC_VERSION="0.8.37"

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${LEDGER_SOLC_CACHE:-$ROOT/.cache/solc-$SOLC_VERSION}"
ARTIFACTS="$ROOT/contracts_abi"

mode="write"
case "${1:-}" in
  "") ;;
  --check) mode="check" ;;
  -h|--help) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  *) echo "build_contracts: unknown argument '$1' (use --check or nothing)" >&2; exit 2 ;;
esac

for tool in node npm; do
  command -v "$tool" >/dev/null || { echo "build_contracts: $tool is not installed" >&2; exit 2; }
done

installed="$(node -e "try { console.log(require('$CACHE/node_modules/solc/package.json').version) } catch { }")"
if [ "$installed" != "$SOLC_VERSION" ]; then
  echo "build_contracts: installing solc@$SOLC_VERSION into $CACHE" >&2
  mkdir -p "$CACHE"
  npm install --prefix "$CACHE" --save-exact --no-audit --no-fund --loglevel=error \
    "solc@$SOLC_VERSION" >&2
fi

export SOLC_PREFIX="$CACHE" SOLC_VERSION
if [ "$mode" = "write" ]; then
  node "$ROOT/scripts/build_contracts.mjs" "$ARTIFACTS"
  exit 0
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
node "$ROOT/scripts/build_contracts.mjs" "$tmp"
status=0
for built in "$tmp"/*.json; do
  name="$(basename "$built")"
  if [ ! -f "$ARTIFACTS/$name" ]; then
    echo "build_contracts --check: contracts_abi/$name is missing" >&2
    status=1
  elif ! cmp -s "$built" "$ARTIFACTS/$name"; then
    echo "build_contracts --check: contracts_abi/$name differs from what contracts/ compiles to:" >&2
    diff -u "$ARTIFACTS/$name" "$built" | head -n 20 >&2 || true
    status=1
  fi
done
if [ "$status" -ne 0 ]; then
  echo "build_contracts --check: artifacts are stale; run 'bash scripts/build_contracts.sh' and commit contracts_abi/" >&2
  exit 1
fi
echo "build_contracts --check: contracts_abi/ matches contracts/ (solc $SOLC_VERSION)" >&2
