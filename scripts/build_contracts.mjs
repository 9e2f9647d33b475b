// Compile contracts/DevUSDC.sol and contracts/SettlementVault.sol with solc-js (standard JSON)
// and write one artifact per contract into the directory given as the only argument.
// Run through scripts/build_contracts.sh, which installs the pinned solc-js and sets
// SOLC_PREFIX (where it is installed) and SOLC_VERSION (the version it must be).

import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const CONTRACTS = ["DevUSDC", "SettlementVault"];
const EVM_VERSION = "cancun";
const OPTIMIZER = { enabled: true, runs: 200 };

function fail(message) {
  console.error(`build_contracts: ${message}`);
  process.exit(1);
}

const [outDir] = process.argv.slice(2);
if (!outDir) fail("usage: node scripts/build_contracts.mjs OUT_DIR");
const prefix = process.env.SOLC_PREFIX;
const pinned = process.env.SOLC_VERSION;
if (!prefix || !pinned) fail("run me through scripts/build_contracts.sh (SOLC_PREFIX, SOLC_VERSION)");

const solc = createRequire(join(resolve(prefix), "package.json"))("solc");
const version = solc.version();
if (!version.startsWith(`${pinned}+`)) fail(`expected solc ${pinned}, got ${version}`);

const sources = {};
for (const name of CONTRACTS) {
  const path = `contracts/${name}.sol`;
  sources[path] = { content: readFileSync(join(ROOT, path), "utf8") };
}
const input = {
  language: "Solidity",
  sources,
  settings: {
    optimizer: OPTIMIZER,
    evmVersion: EVM_VERSION,
    metadata: { bytecodeHash: "none" },
    outputSelection: { "*": { "*": ["abi", "evm.bytecode.object"] } },
  },
};

const output = JSON.parse(solc.compile(JSON.stringify(input)));
const diagnostics = output.errors ?? [];
for (const d of diagnostics) console.error(d.formattedMessage ?? d.message);
if (diagnostics.some((d) => d.severity === "error")) fail("compilation failed");
if (diagnostics.length) fail("compiler warnings: fix them (artifacts must build cleanly)");

mkdirSync(outDir, { recursive: true });
for (const name of CONTRACTS) {
  const compiled = output.contracts?.[`contracts/${name}.sol`]?.[name];
  if (!compiled) fail(`no output for ${name}`);
  const artifact = {
    contract: name,
    compiler: { version, evmVersion: EVM_VERSION, optimizer: OPTIMIZER },
    abi: compiled.abi,
    bytecode: `0x${compiled.evm.bytecode.object}`,
  };
  const file = join(outDir, `${name}.json`);
  writeFileSync(file, `${JSON.stringify(artifact, null, 2)}\n`);
  console.error(`build_contracts: wrote ${file}`);
}
