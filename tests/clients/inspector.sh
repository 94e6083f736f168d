#!/usr/bin/env bash
# Runs the MCP Inspector CLI (npm @modelcontextprotocol/inspector, binary mcp-inspector)
# against an MCP server started as a stdio command, and prints the JSON it returns.
#
#   tests/clients/inspector.sh [INSPECTOR OPTIONS...] -- COMMAND [ARG...]
#
# Examples:
#   tests/clients/inspector.sh --method tools/list -- target/debug/mreg stdio
#   tests/clients/inspector.sh --method tools/call --tool-name echo --tool-arg text=hi \
#       -- target/debug/mreg stdio
#   tests/clients/inspector.sh --protocol-era auto --method resources/list -- target/debug/mreg stdio
#   tests/clients/inspector.sh -e RUST_LOG=debug --method tools/list -- target/debug/mreg stdio
#
# Everything before -- goes to `mcp-inspector --cli` unchanged (see --help-inspector for
# its options: --method, --tool-name, --tool-arg k=v, --tool-args-json, --uri,
# --prompt-name, --prompt-args, --protocol-era legacy|auto|modern, --format json, -e K=V).
# By default the inspector negotiates the legacy (initialize) era, and prints the
# method's result as pretty JSON on stdout; the server's stderr passes through on stderr.
#
# The inspector starts the server with a minimal environment (HOME, PATH, SHELL, TERM...),
# so this script forwards every MREG_* variable and RUST_LOG/RUST_BACKTRACE of its own
# environment as -e KEY=VALUE; add more with -e.
#
# Exit status: the inspector's. 0 on success; non-zero on any failure, e.g. 1 for a
# connection or JSON-RPC error, 5 when tools/call returns isError: true. Also 1 when it
# exits 0 but prints something that is not JSON.
#
# The inspector needs Node >= 22: it is taken from MREG_TEST_NODE_BIN (written to
# target/test-tools.env by scripts/test-setup), else from the test-setup cache.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
if [ -z "${MREG_TEST_NODE_BIN:-}" ] && [ -f "$root/target/test-tools.env" ]; then
  # shellcheck source=/dev/null
  . "$root/target/test-tools.env"
fi
bin=${MREG_TEST_NODE_BIN:-${MREG_TOOLS_DIR:-$HOME/.cache/mreg-test-tools}/node_modules/.bin}
if [ ! -x "$bin/mcp-inspector" ] || [ ! -x "$bin/node" ]; then
  echo "inspector.sh: mcp-inspector or node 22 not found in $bin; run scripts/test-setup first" >&2
  exit 1
fi
export PATH="$bin:$PATH"

case "${1:-}" in
  -h|--help) awk 'NR>1 && /^#/ {sub(/^# ?/, ""); print; next} NR>1 {exit}' "$0"; exit 0 ;;
  --help-inspector) exec mcp-inspector --cli --help ;;
esac

opts=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do opts+=("$1"); shift; done
if [ $# -eq 0 ]; then
  echo "inspector.sh: missing '-- COMMAND [ARG...]' (the stdio server to run)" >&2
  exit 2
fi
shift
if [ $# -eq 0 ]; then
  echo "inspector.sh: missing the server command after --" >&2
  exit 2
fi
if [ ${#opts[@]} -eq 0 ]; then
  echo "inspector.sh: no inspector options; give at least --method, e.g. --method tools/list" >&2
  exit 2
fi

fwd=()
while IFS= read -r name; do
  fwd+=(-e "$name=${!name}")
done < <(compgen -e | grep -E '^(MREG_[A-Za-z0-9_]*|RUST_LOG|RUST_BACKTRACE)$' || true)

out=$(mktemp -t inspector-out.XXXXXX)
trap 'rm -f "$out"' EXIT
set +e
# --stored-auth-only: never start an interactive OAuth flow (no terminal in CI).
mcp-inspector --cli --stored-auth-only "${fwd[@]}" "${opts[@]}" -- "$@" > "$out" < /dev/null
rc=$?
set -e
cat "$out"
if [ $rc -eq 0 ] && ! node -e 'JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"))' "$out" 2>/dev/null; then
  echo "inspector.sh: the inspector exited 0 but its output is not JSON" >&2
  exit 1
fi
if [ $rc -ne 0 ]; then
  echo "inspector.sh: mcp-inspector exited $rc" >&2
fi
exit $rc
