#!/usr/bin/env bash
# Runs the official MCP conformance suite (npm @modelcontextprotocol/conformance) against
# an MCP server that is already listening over Streamable HTTP.
#
#   scripts/conformance.sh URL [REVISION] [extra conformance args...]
#       URL       e.g. http://127.0.0.1:8001/mcp (must be a loopback address: the
#                 dns-rebinding-protection scenario sends foreign Host/Origin headers)
#       REVISION  2025-11-25 (default) or 2026-07-28: runs exactly the scenarios that
#                 revision requires (--requirements), at that revision's wire.
#   scripts/conformance.sh --update-baseline URL [REVISION]
#       runs without a baseline, then rewrites conformance/baseline-REVISION.yml to list
#       the required scenarios that fail now (review the diff before committing it).
#   scripts/conformance.sh --list [REVISION]
#       lists the server scenarios (those REVISION requires, when given).
#
# Baseline: when conformance/baseline-REVISION.yml exists it is passed as
# --expected-failures (override the path with MREG_CONFORMANCE_BASELINE). The run then
# fails on a failure that is not listed (a regression) and on a listed entry that now
# passes (a stale entry: delete it). A check with status WARNING counts as a failure there.
#
# Exit status: the suite's (0 pass, 1 failure). Results: one folder per scenario with
# checks.json under $CONFORMANCE_OUT (default: a fresh temp dir, printed at the end).
#
# The suite needs Node >= 22; scripts/test-setup installs it with the suite into a
# cache folder (MREG_TOOLS_DIR, default ~/.cache/mreg-test-tools) and is run here when
# the suite is missing.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bin=${MREG_TOOLS_DIR:-$HOME/.cache/mreg-test-tools}/node_modules/.bin
if [ -n "${MREG_TEST_NODE_BIN:-}" ]; then
  bin=$MREG_TEST_NODE_BIN
elif [ -f "$root/target/test-tools.env" ]; then
  # shellcheck source=/dev/null
  . "$root/target/test-tools.env"
  bin=${MREG_TEST_NODE_BIN:-$bin}
fi
if [ ! -x "$bin/conformance" ] || [ ! -x "$bin/node" ]; then
  "$root/scripts/test-setup"
  # shellcheck source=/dev/null
  . "$root/target/test-tools.env"
  bin=$MREG_TEST_NODE_BIN
fi
export PATH="$bin:$PATH"

usage() { awk 'NR>1 && /^#/ {sub(/^# ?/, ""); print; next} NR>1 {exit}' "$0"; }

update=0
case "${1:-}" in
  -h|--help) usage; exit 0 ;;
  --list)
    if [ -n "${2:-}" ]; then exec conformance list --server --requirements "$2"; fi
    exec conformance list --server ;;
  --update-baseline) update=1; shift ;;
esac

url=${1:-}
if [ -z "$url" ]; then usage >&2; exit 2; fi
rev=${2:-2025-11-25}
shift $(( $# >= 2 ? 2 : 1 ))
case "$rev" in
  20[0-9][0-9]-[0-9][0-9]-[0-9][0-9]) ;;
  *) echo "conformance.sh: REVISION must be a date like 2025-11-25, got '$rev'" >&2; exit 2 ;;
esac

baseline=${MREG_CONFORMANCE_BASELINE:-$root/conformance/baseline-$rev.yml}
out=${CONFORMANCE_OUT:-$(mktemp -d -t conformance.XXXXXX)}
mkdir -p "$out"

args=(server --url "$url" --requirements "$rev" -o "$out")
if [ $update = 0 ] && [ -f "$baseline" ]; then
  args+=(--expected-failures "$baseline")
  echo "conformance.sh: expected failures from ${baseline#"$root"/}" >&2
fi

set +e
conformance "${args[@]}" "$@"
rc=$?
set -e

if [ $update = 1 ]; then
  reqs=$(dirname "$(readlink -f "$bin/conformance")")/../requirements/$rev.yaml
  node --input-type=module - "$reqs" "$out" "$baseline" "$rev" <<'JS'
import { readFileSync, readdirSync, writeFileSync, existsSync } from "node:fs";
import { join } from "node:path";
import { createRequire } from "node:module";
const [reqsPath, outDir, baselinePath, rev] = process.argv.slice(2);
const require = createRequire(reqsPath);
const YAML = require("yaml");
const required = YAML.parse(readFileSync(reqsPath, "utf8")).server ?? [];
const results = new Map();
for (const dir of readdirSync(outDir)) {
  const file = join(outDir, dir, "checks.json");
  if (!dir.startsWith("server-") || !existsSync(file)) continue;
  // folder: server-<scenario>-<ISO timestamp with : and . replaced by ->
  const scenario = dir.slice("server-".length).replace(/-\d{4}-\d{2}-\d{2}T[\d-]+Z$/, "");
  results.set(scenario, JSON.parse(readFileSync(file, "utf8")));
}
// A scenario without results crashed before writing them: it fails.
const failing = required.filter((s) => {
  const checks = results.get(s);
  return !checks || checks.some((c) => c.status === "FAILURE" || c.status === "WARNING");
});
const lines = [
  `# Expected failures for the ${rev} conformance requirements (scripts/conformance.sh).`,
  `# A listed scenario may fail; an unlisted one that fails, or a listed one that passes,`,
  `# fails the run. Entries are '<scenario>' or '<scenario>:<check-id>' (no space after`,
  `# the colon). Regenerate: scripts/run-conformance --update-baseline ${rev}`,
];
lines.push(failing.length ? "server:" : "server: []");
for (const s of failing) lines.push(`  - ${s}`);
writeFileSync(baselinePath, lines.join("\n") + "\n");
console.error(`conformance.sh: wrote ${baselinePath}: ${failing.length} of ${required.length} required scenarios fail`);
JS
  rc=0
fi

echo "conformance results: $out (exit $rc)" >&2
exit $rc
