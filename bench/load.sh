#!/usr/bin/env bash
# Load benchmark: a release `leeway serve` on a fresh database, driven over loopback by wrk.
# Prints requests/s and latency per scenario, and the server's peak and final memory.
#   bench/load.sh                       # SQLite
#   BENCH_DATABASE_URL=postgres://postgres@127.0.0.1:5432/leeway_bench bench/load.sh
# Needs: wrk (apt-get install wrk). Bounded: each scenario runs DURATION seconds (default 10).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v wrk >/dev/null || { echo "install wrk: apt-get install -y wrk" >&2; exit 1; }
DURATION="${DURATION:-10}"
PORT="${PORT:-18181}"
work=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$work"' EXIT

cargo build -q --release --bin leeway
bin=target/release/leeway
export LEEWAY_DATABASE_URL="${BENCH_DATABASE_URL:-sqlite://$work/bench.db}"
export LEEWAY_JWT_SECRET="bench-secret-bench-secret-bench-secret-0123"
export LEEWAY_LISTEN="127.0.0.1:$PORT" LEEWAY_LOG=warn
"$bin" serve & pid=$!
for _ in $(seq 1 50); do curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null && break; sleep 0.1; done

TOKEN=$("$bin" token --sub alice --roles requester --business-unit bu-1 --ttl 1h)
OFFICER=$("$bin" token --sub carol --roles security_officer --ttl 1h)
export TOKEN EXPIRES
EXPIRES=$(date -u -d '+60 days' +%Y-%m-%dT%H:%M:%SZ)
base="http://127.0.0.1:$PORT"

run() { # name, wrk args...
  local name=$1; shift
  local out; out=$(wrk -t1 -c16 -d"${DURATION}s" --latency "$@")
  printf '%-34s %10s req/s   p50 %-9s p99 %-9s\n' "$name" \
    "$(awk '/Requests\/sec/ {print $2}' <<<"$out")" \
    "$(awk '$1=="50%" {print $2}' <<<"$out")" "$(awk '$1=="99%" {print $2}' <<<"$out")"
  grep -q "Non-2xx" <<<"$out" && { echo "  non-2xx answers:"; grep "Non-2xx" <<<"$out"; } || true
}

echo "backend: ${LEEWAY_DATABASE_URL%%:*}, $(nproc) cores, wrk 1 thread 16 connections, ${DURATION}s each"
run "POST /v1/exceptions (create+submit)" -s bench/create.lua "$base"
rows=$(curl -s "$base/v1/exceptions?limit=1&sort=-created_at" -H "Authorization: Bearer $OFFICER" | sed -E 's/.*"key":"EXC-0*([0-9]+)".*/\1/')
echo "rows after the create run: $rows"
run "GET /v1/exceptions/{key}" -H "Authorization: Bearer $OFFICER" "$base/v1/exceptions/EXC-000042"
run "GET list, limit 50" -H "Authorization: Bearer $OFFICER" "$base/v1/exceptions?limit=50"
run "GET list, deep cursor, limit 50" -H "Authorization: Bearer $OFFICER" \
  "$base/v1/exceptions?limit=50&cursor=$(curl -s "$base/v1/exceptions?limit=500&sort=-created_at" -H "Authorization: Bearer $OFFICER" | sed -E 's/.*"next_cursor":"([^"]+)".*/\1/')&sort=-created_at"
run "GET list ?asset=host-7" -H "Authorization: Bearer $OFFICER" "$base/v1/exceptions?asset=host-7&limit=50"
run "GET list, requester (restricted)" -H "Authorization: Bearer $TOKEN" "$base/v1/exceptions?limit=50"
run "GET /healthz" "$base/healthz"
awk '/VmHWM|VmRSS/ {printf "%s %.1f MiB\n", $1, $2/1024}' "/proc/$pid/status"
