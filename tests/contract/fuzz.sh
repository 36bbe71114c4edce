#!/usr/bin/env bash
# Fuzzes the served OpenAPI document with schemathesis (every check, every phase, bounded
# examples, a fixed seed) against a real `leeway serve`, once with a token holding every role
# and once with a requester's. Any server error, or any schema, status-code, header or
# content-type violation, fails the run.
#
#   tests/contract/fuzz.sh sqlite:///tmp/fuzz.db
#   tests/contract/fuzz.sh postgres://postgres@127.0.0.1:5432/leeway_fuzz
#
# Needs target/debug/leeway (cargo build) and schemathesis (ST, default: st on PATH).
set -euo pipefail
cd "$(dirname "$0")/../.."

DATABASE_URL="$1"
ST="${ST:-st}"
BIN="${LEEWAY_BIN:-target/debug/leeway}"
PORT="${FUZZ_PORT:-18477}"
WORK="$(mktemp -d)"
export LEEWAY_DATABASE_URL="$DATABASE_URL" LEEWAY_LISTEN="127.0.0.1:$PORT" LEEWAY_LOG=warn \
  LEEWAY_JWT_SECRET="contract-fuzz-secret-contract-fuzz-secret-0123" LEEWAY_JOBS_INTERVAL_SECONDS=0

"$BIN" serve >"$WORK/server.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true; wait $server 2>/dev/null || true; rm -rf "$WORK"' EXIT
for _ in $(seq 1 50); do
  curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1 && break
  sleep 0.2
done

ALL=$("$BIN" token --sub fuzz-all --roles requester,analyst,security_officer,asset_owner,ciso,compliance,auditor,admin,integration --business-unit payments --ttl 2h)
REQUESTER=$("$BIN" token --sub fuzz-requester --roles requester --business-unit payments --ttl 2h)

status=0
for who in ALL REQUESTER; do
  echo "== schemathesis as $who on ${DATABASE_URL%%:*}"
  if ! "$ST" --config-file tests/contract/schemathesis.toml run "http://127.0.0.1:$PORT/openapi.json" \
      -H "Authorization: Bearer ${!who}" --checks all --phases examples,coverage,fuzzing,stateful \
      --wait-for-schema 30 --no-color; then
    status=1
  fi
done
if [ "$status" -ne 0 ]; then
  echo "== server log"; tail -n 50 "$WORK/server.log"
fi
exit "$status"
