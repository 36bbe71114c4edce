#!/usr/bin/env bash
# Leeway's throughput next to what PostgreSQL itself does for the same work, in one run.
#
#   bench/load.sh                 # both backends, DURATION seconds per measurement (default 10)
#   BACKENDS=postgres bench/load.sh
#
# 1. Ceilings: pgbench (8 clients, 2 threads) on the same PostgreSQL server runs the bare work
#    behind each scenario: a 1-row INSERT, a SELECT by unique key, a page of 10 by index.
# 2. Leeway: a release `leeway serve` on a fresh database of each backend, driven over
#    loopback by wrk (2 threads, 8 connections): create + submit, GET by key, a list page of 10
#    filtered by status, and more.
# 3. Ceilings again. Each scenario is printed as a ratio to the mean of the two ceiling runs,
#    with p50/p99 and the server's peak RSS. The machine is shared: only ratios from one run
#    mean anything.
#
# Needs wrk and pgbench (Debian packages wrk and postgresql-client) and a PostgreSQL server
# (BENCH_PG_URL, default postgres://postgres@127.0.0.1:5432) where it may create databases.
set -euo pipefail
cd "$(dirname "$0")/.."
for tool in wrk pgbench psql curl; do
  command -v "$tool" >/dev/null || { echo "needs $tool (apt-get install -y wrk postgresql-client curl)" >&2; exit 1; }
done
DURATION="${DURATION:-10}"
PG="${BENCH_PG_URL:-postgres://postgres@127.0.0.1:5432}"
BACKENDS="${BACKENDS:-sqlite postgres}"
PORT="${PORT:-18181}"
work=$(mktemp -d)
pid=""
cleanup() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
  for db in leeway_bench_ceiling leeway_bench_pg; do psql -q "$PG/postgres" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

cargo build -q --release --bin leeway
bin=target/release/leeway

# --- ceilings ---------------------------------------------------------------------------
psql -q "$PG/postgres" -c "DROP DATABASE IF EXISTS leeway_bench_ceiling WITH (FORCE)" -c "CREATE DATABASE leeway_bench_ceiling"
psql -q "$PG/leeway_bench_ceiling" <<'SQL'
CREATE TABLE rows (id bigserial PRIMARY KEY, key_num bigint UNIQUE, status text NOT NULL,
                   created_at timestamp NOT NULL, title text NOT NULL, body text NOT NULL);
CREATE INDEX rows_status ON rows (status, created_at, id);
INSERT INTO rows (key_num, status, created_at, title, body)
  SELECT n, (ARRAY['draft','submitted','active'])[1 + n % 3], now() - n * interval '1 second',
         'Row ' || n, repeat('x', 400) FROM generate_series(1, 20000) n;
CREATE SEQUENCE keys START 100000;
ANALYZE rows;
SQL
cat > "$work/select.sql" <<'SQL'
\set k random(1, 20000)
SELECT * FROM rows WHERE key_num = :k;
SQL
cat > "$work/insert.sql" <<'SQL'
INSERT INTO rows (key_num, status, created_at, title, body) VALUES (nextval('keys'), 'submitted', now(), 'Inserted', repeat('x', 400));
SQL
cat > "$work/page.sql" <<'SQL'
SELECT * FROM rows WHERE status = 'submitted' ORDER BY created_at, id LIMIT 10;
SQL
tps() { pgbench -n -c 8 -j 2 -T "$DURATION" -f "$work/$1.sql" "$PG/leeway_bench_ceiling" 2>/dev/null | awk '/^tps/ {printf "%.0f", $3}'; }
declare -A ceiling
measure_ceilings() {
  for w in insert select page; do
    local t; t=$(tps "$w")
    ceiling[$w]=$(( ${ceiling[$w]:-0} + t ))
    printf '  pgbench %-7s %8s tps\n' "$w" "$t"
  done
}
echo "ceilings before (pgbench, 8 clients, 2 threads, ${DURATION}s):"
measure_ceilings

# --- Leeway -----------------------------------------------------------------------------
results="$work/results"
: >"$results"
run() { # backend scenario ceiling-name wrk-args...
  local backend=$1 name=$2 against=$3; shift 3
  local out; out=$(wrk -t2 -c8 -d"${DURATION}s" --latency "$@")
  local rps p50 p99 bad
  rps=$(awk '/Requests\/sec/ {printf "%.0f", $2}' <<<"$out")
  p50=$(awk '$1=="50%" {print $2}' <<<"$out"); p99=$(awk '$1=="99%" {print $2}' <<<"$out")
  bad=$(awk '/Non-2xx/ {print $5}' <<<"$out")
  echo "$backend|$name|$against|$rps|$p50|$p99|${bad:-0}" >>"$results"
  printf '  %-34s %8s req/s  p50 %-9s p99 %-9s %s\n' "$name" "$rps" "$p50" "$p99" "${bad:+non-2xx: $bad}"
}

for backend in $BACKENDS; do
  case $backend in
    sqlite) url="sqlite://$work/bench.db" ;;
    postgres)
      psql -q "$PG/postgres" -c "DROP DATABASE IF EXISTS leeway_bench_pg WITH (FORCE)" -c "CREATE DATABASE leeway_bench_pg"
      url="$PG/leeway_bench_pg" ;;
    *) echo "unknown backend $backend" >&2; exit 1 ;;
  esac
  export LEEWAY_DATABASE_URL="$url" LEEWAY_JWT_SECRET="bench-secret-bench-secret-bench-secret-0123" \
    LEEWAY_LISTEN="127.0.0.1:$PORT" LEEWAY_LOG=warn LEEWAY_JOBS_INTERVAL_SECONDS=0
  "$bin" serve & pid=$!
  for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null && break; sleep 0.1; done
  TOKEN=$("$bin" token --sub alice --roles requester --business-unit payments --ttl 1h)
  OFFICER=$("$bin" token --sub carol --roles security_officer --ttl 1h)
  EXPIRES=$(date -u -d '+60 days' +%Y-%m-%dT%H:%M:%SZ 2>/dev/null || date -u -v+60d +%Y-%m-%dT%H:%M:%SZ)
  export TOKEN EXPIRES
  base="http://127.0.0.1:$PORT"
  echo "leeway on $backend (wrk, 2 threads, 8 connections, ${DURATION}s):"
  run "$backend" "create + submit" insert -s bench/create.lua "$base"
  rows=$(curl -s "$base/v1/exceptions?limit=1&sort=-created_at" -H "Authorization: Bearer $OFFICER" | sed -E 's/.*"key":"EXC-0*([0-9]+)".*/\1/')
  export ROWS="$rows"
  run "$backend" "get by key" select -s bench/get.lua -H "Authorization: Bearer $OFFICER" "$base"
  run "$backend" "list 10, filtered by status" page -H "Authorization: Bearer $OFFICER" "$base/v1/exceptions?status=submitted&limit=10"
  deep=$(curl -s "$base/v1/exceptions?status=submitted&limit=500" -H "Authorization: Bearer $OFFICER" | sed -E 's/.*"next_cursor":"([^"]+)".*/\1/')
  run "$backend" "list 10, deep cursor" page -H "Authorization: Bearer $OFFICER" "$base/v1/exceptions?status=submitted&limit=10&cursor=$deep"
  run "$backend" "list 10, ?asset=asset-00007" page -H "Authorization: Bearer $OFFICER" "$base/v1/exceptions?asset=asset-00007&limit=10"
  run "$backend" "list 10, restricted requester" page -H "Authorization: Bearer $TOKEN" "$base/v1/exceptions?limit=10"
  rss=$(awk '/VmHWM/ {printf "%.1f", $2/1024}' "/proc/$pid/status")
  echo "$backend|peak RSS|-|$rss|||" >>"$results"
  echo "  rows: $rows; server peak RSS $rss MiB"
  kill "$pid"; wait "$pid" 2>/dev/null || true; pid=""
done

echo "ceilings after:"
measure_ceilings

# --- ratios -----------------------------------------------------------------------------
echo
echo "| backend | scenario | req/s | p50 | p99 | ceiling (pgbench, mean of before and after) | ratio |"
echo "|---|---|---|---|---|---|---|"
while IFS='|' read -r backend name against rps p50 p99 bad; do
  if [ "$against" = "-" ]; then
    echo "| $backend | $name | $rps MiB | | | | |"
    continue
  fi
  c=$(( ceiling[$against] / 2 ))
  ratio=$(awk -v r="$rps" -v c="$c" 'BEGIN { printf "%.3f", (c > 0 ? r / c : 0) }')
  echo "| $backend | $name | $rps | $p50 | $p99 | $against $c tps | $ratio |"
done <"$results"
