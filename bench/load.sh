#!/usr/bin/env bash
# Leeway's throughput next to what PostgreSQL itself does for the same work, in one run.
#
#   bench/load.sh                    # both backends, DURATION seconds per measurement (default 10)
#   BACKENDS=postgres bench/load.sh  # one backend
#   SEED=100000 bench/load.sh        # exceptions seeded before measuring (default 20000)
#
# 1. Two PostgreSQL databases get Leeway's schema and the same `leeway seed` data: one for
#    the ceilings, one for Leeway.
# 2. Ceilings: pgbench (8 clients, 2 threads) runs the bare work behind each scenario on the
#    ceiling database: a 1-row INSERT of an exception row, a SELECT of one row by key, the
#    coverage periods of one asset and of 100, a page of 10 rows by index. Same tables, same indexes and triggers, same rows: what PostgreSQL
#    itself does for the same work.
# 3. Leeway: a release `leeway serve` on the seeded database of each backend, driven over
#    loopback by wrk (2 threads, 8 connections): create + submit, GET by key, coverage of one
#    asset and of 100, list pages.
# 4. Ceilings again. Each scenario is printed as a ratio to the mean of the two ceiling runs,
#    with p50/p99 and the server's peak RSS under load. The machine is shared and noisy:
#    only ratios from one run mean anything. For comparison with older runs, each is also
#    given against the same three statements on a bare six-column table (pgbench latency
#    percentiles come from its per-transaction log).
#
# Needs wrk and pgbench (Debian packages wrk and postgresql-client) and a PostgreSQL server
# (BENCH_PG_URL, default postgres://postgres@127.0.0.1:5432) where it may create databases.
set -euo pipefail
cd "$(dirname "$0")/.."
for tool in wrk pgbench psql curl; do
  command -v "$tool" >/dev/null || { echo "needs $tool (apt-get install -y wrk postgresql-client curl)" >&2; exit 1; }
done
DURATION="${DURATION:-10}"
SEED="${SEED:-20000}"
PG="${BENCH_PG_URL:-postgres://postgres@127.0.0.1:5432}"
BACKENDS="${BACKENDS:-sqlite postgres}"
PORT="${PORT:-18181}"
BIN="${BIN:-target/release/leeway}"
work=$(mktemp -d)
pid=""
cleanup() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
  for db in leeway_bench_ceiling leeway_bench_pg; do psql -q "$PG/postgres" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

[ "$BIN" = target/release/leeway ] && cargo build -q --release --bin leeway
export LEEWAY_JWT_SECRET="bench-secret-bench-secret-bench-secret-0123" LEEWAY_LOG=warn LEEWAY_JOBS_INTERVAL_SECONDS=0

fresh_pg() { # name: a database with Leeway's schema and the seeded data
  psql -q "$PG/postgres" -c "DROP DATABASE IF EXISTS $1 WITH (FORCE)" -c "CREATE DATABASE $1" 2>/dev/null
  LEEWAY_DATABASE_URL="$PG/$1" "$BIN" seed --exceptions "$SEED" >/dev/null 2>&1
  psql -q "$PG/$1" -c "VACUUM ANALYZE"
}

# --- ceilings ---------------------------------------------------------------------------
echo "seeding $SEED exceptions into the ceiling database"
fresh_pg leeway_bench_ceiling
cols=$(psql -qtA "$PG/leeway_bench_ceiling" -c "SELECT string_agg(quote_ident(column_name), ', ' ORDER BY ordinal_position)
  FROM information_schema.columns WHERE table_name = 'exceptions' AND table_schema = current_schema()
  AND column_name NOT IN ('id', 'key_num', 'external_refs')")
cat > "$work/select.sql" <<SQL
\set k random(1, $SEED)
SELECT * FROM exceptions WHERE key_num = :k;
SQL
# a copy of a seeded row under a new id and key, with no reference to collide on
cat > "$work/insert.sql" <<SQL
\set k random(1, $SEED)
INSERT INTO exceptions (id, key_num, external_refs, $cols)
  SELECT gen_random_uuid()::text, nextval('exception_keys'), '[]', $cols FROM exceptions WHERE key_num = :k;
SQL
# coverage: the periods of one asset, and of 100, in force now
cat > "$work/coverage.sql" <<'SQL'
\set a random(1, 10000)
SELECT asset, exception_id, key_num, status, residual_level, expires_at, control_id FROM coverage_periods
 WHERE asset = 'asset-' || lpad(:a::text, 5, '0') AND held_from <= now() AND (held_until IS NULL OR held_until > now())
   AND (starts_at IS NULL OR starts_at <= now()) AND expires_at > now() ORDER BY asset, key_num, control_id;
SQL
cat > "$work/coverage100.sql" <<'SQL'
SELECT asset, exception_id, key_num, status, residual_level, expires_at, control_id FROM coverage_periods
 WHERE asset = ANY (ARRAY(SELECT 'asset-' || lpad((1 + floor(random() * 10000))::int::text, 5, '0')
                          FROM generate_series(1, 100)))
   AND held_from <= now() AND (held_until IS NULL OR held_until > now())
   AND (starts_at IS NULL OR starts_at <= now()) AND expires_at > now() ORDER BY asset, key_num, control_id;
SQL
cat > "$work/page.sql" <<'SQL'
SELECT * FROM exceptions WHERE status = 'submitted' ORDER BY created_at, id LIMIT 10;
SQL
# the same three on a bare six-column table: the ceilings issue 7 first measured against
psql -q "$PG/leeway_bench_ceiling" <<'SQL'
CREATE TABLE bare (id bigserial PRIMARY KEY, key_num bigint UNIQUE, status text NOT NULL,
                   created_at timestamp NOT NULL, title text NOT NULL, body text NOT NULL);
CREATE INDEX bare_status ON bare (status, created_at, id);
INSERT INTO bare (key_num, status, created_at, title, body)
  SELECT n, (ARRAY['draft','submitted','active'])[1 + n % 3], now() - n * interval '1 second',
         'Row ' || n, repeat('x', 400) FROM generate_series(1, 20000) n;
CREATE SEQUENCE bare_keys START 100000;
ANALYZE bare;
SQL
cat > "$work/bare-insert.sql" <<'SQL'
INSERT INTO bare (key_num, status, created_at, title, body) VALUES (nextval('bare_keys'), 'submitted', now(), 'Inserted', repeat('x', 400));
SQL
cat > "$work/bare-select.sql" <<'SQL'
\set k random(1, 20000)
SELECT * FROM bare WHERE key_num = :k;
SQL
cat > "$work/bare-page.sql" <<'SQL'
SELECT * FROM bare WHERE status = 'submitted' ORDER BY created_at, id LIMIT 10;
SQL
# tps, and p50/p99 latency in ms from pgbench's per-transaction log
tps() {
  rm -f "$work"/pgbench_log.*
  local t; t=$(cd "$work" && pgbench -n -c 8 -j 2 -T "$DURATION" -l -f "$work/$1.sql" "$PG/leeway_bench_ceiling" 2>/dev/null | awk '/^tps/ {printf "%.0f", $3}')
  local lat; lat=$(cat "$work"/pgbench_log.* | awk '{print $3}' | sort -n | awk '{a[NR]=$1} END {printf "p50 %.2fms p99 %.2fms", a[int(NR*0.5)]/1000, a[int(NR*0.99)]/1000}')
  echo "$t|$lat"
}
declare -A ceiling
measure_ceilings() {
  for w in insert select page coverage coverage100 bare-insert bare-select bare-page; do
    local r t; r=$(tps "$w"); t=${r%%|*}
    ceiling["$w"]=$(( ${ceiling["$w"]:-0} + t ))
    printf '  pgbench %-11s %8s tps  %s\n' "$w" "$t" "${r#*|}"
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
    sqlite)
      url="sqlite://$work/bench.db"
      echo "seeding $SEED exceptions into SQLite"
      LEEWAY_DATABASE_URL="$url" "$BIN" seed --exceptions "$SEED" >/dev/null 2>&1 ;;
    postgres)
      echo "seeding $SEED exceptions into the Leeway database"
      fresh_pg leeway_bench_pg
      url="$PG/leeway_bench_pg" ;;
    *) echo "unknown backend $backend" >&2; exit 1 ;;
  esac
  export LEEWAY_DATABASE_URL="$url" LEEWAY_LISTEN="127.0.0.1:$PORT"
  "$BIN" serve & pid=$!
  for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null && break; sleep 0.1; done
  # a requester of a seeded business unit, and an officer who sees everything
  TOKEN=$("$BIN" token --sub req-01-1 --roles requester --business-unit bu-01 --ttl 1h)
  OFFICER=$("$BIN" token --sub carol --roles security_officer --ttl 1h)
  EXPIRES=$(date -u -d '+60 days' +%Y-%m-%dT%H:%M:%SZ 2>/dev/null || date -u -v+60d +%Y-%m-%dT%H:%M:%SZ)
  export TOKEN EXPIRES BUSINESS_UNIT=bu-01 ROWS="$SEED"
  base="http://127.0.0.1:$PORT"
  echo "leeway on $backend (wrk, 2 threads, 8 connections, ${DURATION}s):"
  # resident size, sampled every 100 ms while the scenarios run
  (while kill -0 "$pid" 2>/dev/null; do awk '/VmRSS/ {print $2}' "/proc/$pid/status" 2>/dev/null; sleep 0.1; done) >"$work/rss" &
  sampler=$!
  run "$backend" "create + submit" insert -s bench/create.lua "$base"
  run "$backend" "get by key" select -s bench/get.lua -H "Authorization: Bearer $OFFICER" "$base"
  run "$backend" "coverage, one asset" coverage -s bench/coverage.lua -H "Authorization: Bearer $OFFICER" "$base"
  run "$backend" "coverage batch of 100 assets" coverage100 -s bench/coverage_batch.lua -H "Authorization: Bearer $OFFICER" "$base"
  run "$backend" "list 10, filtered by status" page -H "Authorization: Bearer $OFFICER" "$base/v1/exceptions?status=submitted&limit=10"
  deep=$(curl -s "$base/v1/exceptions?status=submitted&limit=500" -H "Authorization: Bearer $OFFICER" | sed -E 's/.*"next_cursor":"([^"]+)".*/\1/')
  run "$backend" "list 10, deep cursor" page -H "Authorization: Bearer $OFFICER" "$base/v1/exceptions?status=submitted&limit=10&cursor=$deep"
  run "$backend" "list 10, ?asset=" page -H "Authorization: Bearer $OFFICER" "$base/v1/exceptions?asset=asset-00007&limit=10"
  run "$backend" "list 10, covering + asset" page -H "Authorization: Bearer $OFFICER" "$base/v1/exceptions?covering=true&asset=asset-00007&limit=10"
  run "$backend" "list 10, restricted requester" page -H "Authorization: Bearer $TOKEN" "$base/v1/exceptions?limit=10"
  # a streamed export of every row: its time and what it adds to the resident size
  AUDITOR=$("$BIN" token --sub audrey --roles auditor --ttl 1h)
  for fmt in ndjson csv oscal; do
    before=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
    n0=$(wc -l <"$work/rss")
    start=$(date +%s.%N)
    bytes=$(curl -s "$base/v1/exports/exceptions?format=$fmt" -H "Authorization: Bearer $AUDITOR" | wc -c)
    secs=$(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN { printf "%.2f", e - s }')
    during=$(tail -n +"$((n0 + 1))" "$work/rss" | sort -n | tail -1)
    grow=$(awk -v a="$before" -v b="${during:-$before}" 'BEGIN { d = (b - a) / 1024; printf "%.1f", (d > 0 ? d : 0) }')
    mib=$(awk -v b="$bytes" 'BEGIN { printf "%.1f", b / 1048576 }')
    echo "$backend|export $fmt ($mib MiB in ${secs}s)|-|+$grow|||" >>"$results"
    printf '  export %-6s %8s MiB in %6s s, resident size +%s MiB during it\n' "$fmt" "$mib" "$secs" "$grow"
  done
  kill "$sampler" 2>/dev/null || true; wait "$sampler" 2>/dev/null || true
  rss=$(sort -n "$work/rss" | tail -1 | awk '{printf "%.1f", $1/1024}')
  hwm=$(awk '/VmHWM/ {printf "%.1f", $2/1024}' "/proc/$pid/status")
  echo "$backend|peak RSS under load|-|$rss|||" >>"$results"
  echo "  server peak RSS under load $rss MiB (high-water mark since start-up $hwm MiB)"
  kill "$pid"; wait "$pid" 2>/dev/null || true; pid=""
done

echo "ceilings after:"
measure_ceilings

# --- ratios -----------------------------------------------------------------------------
echo
echo "| backend | scenario | req/s | p50 | p99 | ceiling: same work (pgbench, mean) | ratio | bare-table ceiling | ratio |"
echo "|---|---|---|---|---|---|---|---|---|"
while IFS='|' read -r backend name against rps p50 p99 bad; do
  if [ "$against" = "-" ]; then
    echo "| $backend | $name | $rps MiB | | | | | | |"
    continue
  fi
  c=$(( ${ceiling[$against]:-0} / 2 )); b=$(( ${ceiling["bare-$against"]:-0} / 2 ))
  ratio=$(awk -v r="$rps" -v c="$c" 'BEGIN { printf "%.3f", (c > 0 ? r / c : 0) }')
  bare=$(awk -v r="$rps" -v c="$b" 'BEGIN { printf "%.3f", (c > 0 ? r / c : 0) }')
  [ "$b" -gt 0 ] && b="$b tps" || { b="-"; bare="-"; }
  echo "| $backend | $name | $rps | $p50 | $p99 | $against $c tps | $ratio | $b | $bare |"
done <"$results"
