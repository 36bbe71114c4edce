#!/usr/bin/env bash
# Leeway at a million exceptions on PostgreSQL: how long `leeway seed` takes, what a first
# page and a page 900,000 rows deep cost, what `covering=true&asset=` answers in, and the
# server's resident size under load.
#
#   bench/million.sh                 # seeds 1,000,000 exceptions into leeway_million (kept)
#   N=200000 bench/million.sh        # another size
#   KEEP=1 bench/million.sh          # reuse the database a previous run seeded
#   BIN=/path/to/leeway bench/million.sh   # measure a prebuilt binary
#
# Needs wrk, psql, python3 and a PostgreSQL server (BENCH_PG_URL, default
# postgres://postgres@127.0.0.1:5432) where it may create the database.
set -euo pipefail
cd "$(dirname "$0")/.."
N="${N:-1000000}"
PG="${BENCH_PG_URL:-postgres://postgres@127.0.0.1:5432}"
DB="${DB:-leeway_million}"
PORT="${PORT:-18182}"
DURATION="${DURATION:-8}"
# BIN: a prebuilt binary to measure (default: build the tree's release binary)
if [ -z "${BIN:-}" ]; then
  BIN=target/release/leeway
  cargo build -q --release --bin leeway
fi
export LEEWAY_DATABASE_URL="$PG/$DB" LEEWAY_JWT_SECRET="bench-secret-bench-secret-bench-secret-0123" \
  LEEWAY_LOG=warn LEEWAY_JOBS_INTERVAL_SECONDS=0 LEEWAY_LISTEN="127.0.0.1:$PORT"
pid=""
trap '[ -n "$pid" ] && kill "$pid" 2>/dev/null || true' EXIT

if [ -z "${KEEP:-}" ]; then
  psql -q "$PG/postgres" -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" -c "CREATE DATABASE $DB"
  echo "seeding $N exceptions"
  start=$(date +%s)
  "$BIN" seed --exceptions "$N"
  echo "seeded in $(( $(date +%s) - start )) s (VACUUM ANALYZE included)"
fi
psql -qtA "$PG/$DB" -c "SELECT 'exceptions: ' || count(*) FROM exceptions" \
  -c "SELECT 'audit events: ' || count(*) FROM audit_events" \
  -c "SELECT 'database size: ' || pg_size_pretty(pg_database_size(current_database()))"

"$BIN" serve & pid=$!
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null && break; sleep 0.1; done
(while kill -0 "$pid" 2>/dev/null; do awk '/VmRSS/ {print $2}' "/proc/$pid/status" 2>/dev/null; sleep 0.1; done) >/tmp/million-rss &
sampler=$!
OFFICER=$("$BIN" token --sub carol --roles security_officer --ttl 1h)
base="http://127.0.0.1:$PORT/v1/exceptions"

# a cursor positioned after row 900,000 of a list: the first page's cursor with its keyset
# moved there (the cursor is base64url JSON: sort, time, id, filter fingerprint)
deep_cursor() { # query sort-column
  local first; first=$(curl -s "$base?$1&limit=1" -H "Authorization: Bearer $OFFICER" | python3 -c 'import json,sys; print(json.load(sys.stdin)["next_cursor"])')
  local row; row=$(psql -qtA "$PG/$DB" -c "SELECT to_char($2, 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') || ' ' || id FROM exceptions $3 ORDER BY $2, id OFFSET $(( N * 9 / 10 - 1 )) LIMIT 1")
  python3 - "$first" "$row" <<'PY'
import base64, json, sys
raw = sys.argv[1]
c = json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
c["t"], c["id"] = sys.argv[2].split(" ")
print(base64.urlsafe_b64encode(json.dumps(c, separators=(",", ":")).encode()).decode().rstrip("="))
PY
}

measure() { # name url [connections]
  local out; out=$(wrk -t"${3:-2}" -c"${3:-8}" -d"${DURATION}s" --latency -H "Authorization: Bearer $OFFICER" "$2")
  printf '| %s | %s | %s | %s |\n' "$1" "$(awk '/Requests\/sec/ {printf "%.0f", $2}' <<<"$out")" \
    "$(awk '$1=="50%" {print $2}' <<<"$out")" "$(awk '$1=="99%" {print $2}' <<<"$out")"
}

deep=$(deep_cursor "" created_at "")
# a figure for an error answer would mean nothing: check the deep page answers its 10 rows
curl -sf "$base?limit=10&cursor=$deep" -H "Authorization: Bearer $OFFICER" \
  | python3 -c 'import json,sys; n=len(json.load(sys.stdin)["items"]); assert n == 10, n' \
  || { echo "the deep cursor does not give a page of 10" >&2; exit 1; }
asset=$(psql -qtA "$PG/$DB" -c "SELECT asset FROM exception_assets a JOIN exceptions e ON e.id = a.exception_id
  WHERE e.status = 'active' LIMIT 1")
echo
echo "| scenario (wrk) | req/s | p50 | p99 |"
echo "|---|---|---|---|"
measure "first page of 10" "$base?limit=10"
measure "page of 10 after row 900,000" "$base?limit=10&cursor=$deep"
measure "first page, status=expired" "$base?status=expired&limit=10"
measure "covering=true&asset= (8 connections)" "$base?covering=true&asset=$asset&limit=10"
measure "covering=true&asset= (1 connection)" "$base?covering=true&asset=$asset&limit=10" 1
measure "asset= (1 connection)" "$base?asset=$asset&limit=10" 1
measure "q=unsupported (1 connection)" "$base?q=unsupported&limit=10" 1
measure "GET by key (1 connection)" "$base/EXC-$(printf '%06d' $(( N / 2 )))" 1
kill "$sampler" 2>/dev/null || true
echo
echo "server peak RSS under load: $(sort -n /tmp/million-rss | tail -1 | awk '{printf "%.1f", $1/1024}') MiB"
