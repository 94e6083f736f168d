#!/usr/bin/env bash
# shellcheck disable=SC2015  # `A && B || fail` here means: fail unless A and B.
# End-to-end test of mreg-dashboard, driven through tmux like an operator would:
#   1. builds mreg and mreg-dashboard, starts `mreg serve --dev` on a temp data dir with
#      a tight user rate limit (6/min, burst 1), opens MCP sessions for two principals
#      of two tenants (admin contoso/alice, user fabrikam/bob) and gets bob refused and
#      rate-limited;
#   2. starts the dashboard in a detached 100x30 tmux session and reads the screen with
#      `capture-pane` until the Sessions view shows both sessions with their roles, the
#      Rate limits view shows bob LIMITED, and the Audit tail narrows under `/` filter;
#   3. stops the server (the dashboard must say "disconnected, retrying"), restarts it
#      (the dashboard must come back live by itself), stops it again and restarts the
#      dashboard offline; a server started meanwhile, and a second dashboard, must
#      refuse with one line naming the dashboard.
# Exit 0 on success; otherwise non-zero with the screen and the server log printed.
# Everything started here is stopped on exit (trap).
#
# Tokens: with `mreg token` (dev issuer) each principal sends its own bearer token.
# Without it, every dev caller is the configured local principal, so both sessions
# belong to fabrikam/bob and the two-tenant checks are reported as PENDING.
# Likewise the audit-tail checks are PENDING while the server has no
# GET /v1/audit/tail. A missing server feature fails the run (DASHBOARD_E2E_STRICT=0 reports it as pending).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
STRICT=${DASHBOARD_E2E_STRICT:-1}

for tool in tmux curl; do
    command -v "$tool" >/dev/null || {
        echo "dashboard_e2e: $tool is required (apt-get install $tool)"
        exit 1
    }
done

if [ "${DASHBOARD_E2E_NO_BUILD:-0}" != 1 ]; then
    "${CARGO:-cargo}" build -q -p mreg -p mreg-dashboard
fi
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/debug
MREG=$BIN/mreg
DASH=$BIN/mreg-dashboard

WORK=$(mktemp -d "${TMPDIR:-/tmp}/mreg-dash-e2e.XXXXXX")
DATA=$WORK/data
mkdir -p "$DATA"
export MREG_DATA_DIR=$DATA
TMUX_SOCKET=mreg-e2e-$$
T=(tmux -L "$TMUX_SOCKET")
SERVER_PID=
KEEPER_PID=
PENDING=()

cleanup() {
    local code=$?
    set +e
    [ -n "$KEEPER_PID" ] && kill "$KEEPER_PID" 2>/dev/null
    [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null
    "${T[@]}" kill-server 2>/dev/null
    rm -rf "$WORK"
    exit "$code"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

screen() { "${T[@]}" capture-pane -p -t "${1:-dash}" 2>/dev/null || true; }

fail() {
    echo "dashboard_e2e: FAIL: $*"
    echo "----- screen -----"
    screen "${2:-dash}"
    echo "----- server log (last 30 lines) -----"
    tail -n 30 "$WORK/server.log" 2>/dev/null || true
    exit 1
}

pending() {
    if [ "$STRICT" = 1 ]; then
        fail "$1 (DASHBOARD_E2E_STRICT=1)"
    fi
    echo "dashboard_e2e: PENDING: $1"
    PENDING+=("$1")
}

# wait_screen SECONDS PANE ERE...: waits until every extended regexp matches a line.
wait_screen() {
    local secs=$1 pane=$2
    shift 2
    local deadline=$((SECONDS + secs)) s re ok
    while :; do
        s=$(screen "$pane")
        ok=1
        for re in "$@"; do
            grep -Eq -- "$re" <<<"$s" || { ok=0; break; }
        done
        [ "$ok" = 1 ] && return 0
        [ "$SECONDS" -ge "$deadline" ] && return 1
        sleep 0.2
    done
}

start_server() {
    : >"$WORK/server.log"
    MREG_HTTP_ADDR=127.0.0.1:0 MREG_FASTMCP_REQUESTS_PER_MINUTE=6 MREG_RATE_LIMIT_BURST=1 \
        MREG_LOCAL_TENANT=fabrikam MREG_LOCAL_USER=bob MREG_LOCAL_ROLES=user \
        "$MREG" serve --dev 2>>"$WORK/server.log" >/dev/null &
    SERVER_PID=$!
    local deadline=$((SECONDS + 10))
    until URL=$(grep -oE 'listening on http://[^ ]+/mcp' "$WORK/server.log" | head -n1 | cut -d' ' -f3) &&
        [ -n "$URL" ]; do
        kill -0 "$SERVER_PID" 2>/dev/null || fail "the server exited at start"
        [ "$SECONDS" -ge "$deadline" ] && fail "the server did not listen within 10 s"
        sleep 0.1
    done
}

stop_server() {
    kill "$SERVER_PID"
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=
}

# mcp TOKEN SESSION BODY: one MCP POST; response headers in $WORK/headers.
mcp() {
    local args=(-sS -m 10 -D "$WORK/headers" -H 'Content-Type: application/json'
        -H 'Accept: application/json, text/event-stream')
    [ -n "$1" ] && args+=(-H "Authorization: Bearer $1")
    [ -n "$2" ] && args+=(-H "Mcp-Session-Id: $2" -H 'MCP-Protocol-Version: 2025-11-25')
    curl "${args[@]}" "$URL" -d "$3"
}

# open_session TOKEN CLIENT: initialize + initialized; prints the session id.
open_session() {
    mcp "$1" "" '{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"'"$2"'","version":"1"}}}' >/dev/null
    local sid
    sid=$(tr -d '\r' <"$WORK/headers" | awk 'tolower($1) == "mcp-session-id:" { print $2 }')
    [ -n "$sid" ] || return 1
    mcp "$1" "$sid" '{"jsonrpc":"2.0","method":"notifications/initialized"}' >/dev/null
    echo "$sid"
}

call_tool() { # TOKEN SESSION ID TOOL
    mcp "$1" "$2" '{"jsonrpc":"2.0","id":'"$3"',"method":"tools/call","params":{"name":"'"$4"'","arguments":{}}}'
}

admin_get() { curl -sS -m 5 -o /dev/null -w '%{http_code}' --unix-socket "$DATA/admin/mreg.sock" "http://mreg-admin$1"; }

# ---- 1. server, principals, traffic -------------------------------------------------
start_server
echo "dashboard_e2e: server at $URL"

TOKENS=0
TOKEN_A=
TOKEN_B=
HELP=$("$MREG" help 2>&1 || true)
if grep -Eq '^ +token' <<<"$HELP"; then
    jwt() { "$MREG" token --role "$1" --tenant "$2" --user "$3" | grep -oE '[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+' | head -n1; }
    TOKEN_A=$(jwt admin contoso alice) || fail "mreg token failed"
    TOKEN_B=$(jwt user fabrikam bob) || fail "mreg token failed"
    [ -n "$TOKEN_A" ] && [ -n "$TOKEN_B" ] || fail "mreg token printed no token"
    TOKENS=1
else
    pending "two tenants: \`mreg token\` does not exist yet, so every dev caller is fabrikam/bob"
fi

SID_A=$(open_session "$TOKEN_A" e2e-alice) || fail "initialize for the first principal failed"
sleep 0.3
if [ "$TOKENS" = 1 ]; then
    call_tool "$TOKEN_A" "$SID_A" 2 _admin_system_status >/dev/null
fi
SID_B=$(open_session "$TOKEN_B" e2e-bob) || fail "initialize for bob failed"
# bob (user): the admin tool is denied, then the budget (2 at once) is spent.
call_tool "$TOKEN_B" "$SID_B" 3 _admin_system_status >/dev/null
for i in 4 5 6; do call_tool "$TOKEN_B" "$SID_B" "$i" _secure_query_data >/dev/null; done
call_tool "$TOKEN_B" "$SID_B" 7 _secure_query_data | grep -q 'rate limit' ||
    fail "bob was not rate-limited"
# Keep bob limited while the screen is read (one call a second; the limit is 1 per 10 s).
(
    n=100
    while sleep 1; do
        n=$((n + 1))
        call_tool "$TOKEN_B" "$SID_B" "$n" _secure_query_data >/dev/null 2>&1 || true
    done
) &
KEEPER_PID=$!

FEED=0
if [ "$(admin_get '/v1/audit/tail?after=0&limit=1&wait_ms=0')" = 200 ]; then
    FEED=1
else
    pending "audit tail: the server has no GET /v1/audit/tail yet"
fi

# ---- 2. the dashboard, live ---------------------------------------------------------
"${T[@]}" new-session -d -s dash -x 100 -y 30 \
    "env MREG_DATA_DIR='$DATA' '$DASH'; echo \"dashboard exited \$?\"; sleep 600"
wait_screen 10 dash '● live' || fail "the dashboard did not attach to the server"

"${T[@]}" send-keys -t dash 2
if [ "$TOKENS" = 1 ]; then
    wait_screen 10 dash 'Sessions: 2 http' ' alice +contoso +admin +2025-11-25 +http ' \
        ' bob +fabrikam +user +2025-11-25 +http ' ||
        fail "the Sessions view does not show both principals with their roles"
else
    wait_screen 10 dash 'Sessions: 2 http' ' bob +fabrikam +user +2025-11-25 +http ' ||
        fail "the Sessions view does not show the two sessions with their role"
    [ "$(screen | grep -cE ' bob +fabrikam +user ')" = 2 ] || fail "expected two session rows"
fi
echo "dashboard_e2e: sessions view ok"

"${T[@]}" send-keys -t dash 3
wait_screen 10 dash 'fabrikam/bob +0/2 .* LIMITED' ||
    fail "the Rate limits view does not show bob LIMITED"
echo "dashboard_e2e: rate limits view ok"

"${T[@]}" send-keys -t dash 4
if [ "$FEED" = 1 ]; then
    if [ "$TOKENS" = 1 ]; then
        wait_screen 10 dash 'contoso +alice' 'fabrikam +bob' ' denied ' ' limited ' ||
            fail "the Audit tail does not show both tenants' requests, denied and limited"
        FILTER=tenant:fabrikam
        GONE='contoso +alice'
    else
        wait_screen 10 dash 'fabrikam +bob' ' limited ' ||
            fail "the Audit tail does not show bob's limited requests"
        FILTER=limited
        GONE=' allowed +fabrikam'
    fi
    before=$(screen | grep -oE 'Audit tail: [0-9]+ of [0-9]+' | head -n1)
    "${T[@]}" send-keys -t dash / "$FILTER" Enter
    wait_screen 10 dash "filter: $FILTER" || fail "typing the filter did not apply it"
    after=$(screen | grep -oE 'Audit tail: [0-9]+ of [0-9]+' | head -n1)
    shown=$(awk '{print $3}' <<<"$after")
    total=$(awk '{print $5}' <<<"$after")
    [ -n "$shown" ] && [ "$shown" -gt 0 ] && [ "$shown" -lt "$total" ] ||
        fail "the filter did not narrow the tail ($before → $after)"
    ! screen | grep -Eq -- "$GONE" || fail "rows outside the filter are still shown"
    "${T[@]}" send-keys -t dash Escape
    wait_screen 5 dash 'Audit tail: [0-9]+ of [0-9]+ records +─' || fail "Esc did not clear the filter"
    echo "dashboard_e2e: audit tail and filter ok ($before → $after)"
else
    wait_screen 10 dash 'no audit feed' || fail "the Audit view does not say the feed is missing"
fi

# ---- 3. server gone, back, stopped ----------------------------------------------------
kill "$KEEPER_PID" 2>/dev/null || true
KEEPER_PID=
OLD_PID=$SERVER_PID
stop_server
wait_screen 10 dash 'disconnected, retrying' || fail "no 'disconnected, retrying' after the server stopped"
echo "dashboard_e2e: disconnected state ok"
start_server
wait_screen 10 dash "● live  mreg [^ ]+ pid $SERVER_PID " || fail "the dashboard did not reconnect (old pid $OLD_PID)"
echo "dashboard_e2e: reconnected by itself"

"${T[@]}" send-keys -t dash q
wait_screen 5 dash 'dashboard exited 0' || fail "q did not quit cleanly"
stop_server

"${T[@]}" new-window -t dash -n offline \
    "env MREG_DATA_DIR='$DATA' '$DASH'; echo \"dashboard exited \$?\"; sleep 600"
wait_screen 10 dash:offline 'offline \(server stopped\)' || fail "no offline mode" dash:offline
"${T[@]}" send-keys -t dash:offline 3
wait_screen 10 dash:offline 'Persisted rate state' 'fabrikam/bob' ||
    fail "the offline Rate limits view does not show bob's persisted bucket" dash:offline
if [ "$FEED" = 1 ]; then
    "${T[@]}" send-keys -t dash:offline 4
    wait_screen 10 dash:offline 'fabrikam +bob' ' limited ' ||
        fail "the offline Audit view does not show the log" dash:offline
fi
echo "dashboard_e2e: offline mode ok"

set +e
second=$("$DASH" 2>&1)
code=$?
set -e
[ "$code" != 0 ] && grep -q 'in use by another process' <<<"$second" ||
    fail "a second dashboard did not refuse with one line (exit $code: $second)" dash:offline
[ "$(wc -l <<<"$second")" = 1 ] || fail "the refusal is not one line: $second" dash:offline
set +e
MREG_HTTP_ADDR=127.0.0.1:0 timeout 10 "$MREG" serve --dev >/dev/null 2>"$WORK/blocked.log"
code=$?
set -e
[ "$code" != 0 ] && grep -q 'mreg-dashboard' "$WORK/blocked.log" ||
    fail "a server started meanwhile did not name the dashboard: $(cat "$WORK/blocked.log")" dash:offline
echo "dashboard_e2e: lock refusals ok"
"${T[@]}" send-keys -t dash:offline q
wait_screen 5 dash:offline 'dashboard exited 0' || fail "q did not quit the offline dashboard" dash:offline

if [ "${#PENDING[@]}" -gt 0 ]; then
    echo "dashboard_e2e: passed, with ${#PENDING[@]} check(s) pending on server features:"
    printf '  - %s\n' "${PENDING[@]}"
else
    echo "dashboard_e2e: passed"
fi
