#!/usr/bin/env bash
# Bulk import next to PostgreSQL's own COPY of the same rows, in one run; then the reports
# on as many seeded exceptions.
#
#   bench/import.sh                  # ROWS=100000, both backends
#   ROWS=20000 BACKENDS=postgres bench/import.sh
#
# 1. A CSV of ROWS exceptions (each with its own external reference, one compensating
#    control, assets shared by 20 rows each) is written once.
# 2. Ceiling: psql's \copy of that CSV into a table of its columns, before and after
#    Leeway's runs; the mean rate is the ceiling.
# 3. Leeway: a release `leeway serve` on a fresh database of each backend, and
#    `leeway import FILE --mode upsert` through it (requests of 5,000 rows, 200 per
#    transaction), timed end to end from the client; the server's peak RSS is sampled.
# 4. Reports: `leeway seed --exceptions ROWS` into a fresh database of each backend, then
#    GET /v1/reports/kpis and /v1/reports/hotspots five times each (median).
# Each import rate is printed as a ratio to the COPY ceiling. The machine is shared and noisy:
# only ratios from one run mean anything.
#
# Needs psql and curl, python3, and a PostgreSQL server (BENCH_PG_URL, default
# postgres://postgres@127.0.0.1:5432) where it may create databases.
set -euo pipefail
cd "$(dirname "$0")/.."
for tool in psql curl python3; do
  command -v "$tool" >/dev/null || { echo "needs $tool" >&2; exit 1; }
done
ROWS="${ROWS:-100000}"
PG="${BENCH_PG_URL:-postgres://postgres@127.0.0.1:5432}"
BACKENDS="${BACKENDS:-sqlite postgres}"
PORT="${PORT:-18182}"
BIN="${BIN:-target/release/leeway}"
work=$(mktemp -d)
pid=""
cleanup() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
  for db in leeway_bench_copy leeway_bench_import leeway_bench_reports; do
    psql -q "$PG/postgres" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" 2>/dev/null || true
  done
  rm -rf "$work"
}
trap cleanup EXIT

[ "$BIN" = target/release/leeway ] && cargo build -q --release --bin leeway
export LEEWAY_JWT_SECRET="bench-secret-bench-secret-bench-secret-0123" LEEWAY_LOG=warn LEEWAY_JOBS_INTERVAL_SECONDS=0
now() { date +%s.%N; }
since() { awk -v s="$1" -v e="$(now)" 'BEGIN { printf "%.2f", e - s }'; }

# --- the rows ---------------------------------------------------------------------------
python3 - "$ROWS" >"$work/rows.csv" <<'PY'
import csv, sys, datetime
n = int(sys.argv[1])
expires = (datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=90)).strftime("%Y-%m-%dT%H:%M:%SZ")
w = csv.writer(sys.stdout)
w.writerow(["title", "category", "policy_id", "control_ids", "assets", "business_unit", "justification",
            "risk_owner", "expires_at", "tags", "external_system", "external_id",
            "control_1_description", "control_1_kind", "control_1_effectiveness"])
for i in range(n):
    w.writerow([f"Legacy exception {i}", "legacy_software", f"POL-{i % 40:02d}", f"CTL-{i % 25};CTL-{i % 7}",
                f"host-{i // 20:05d}", f"bu-{i % 12:02d}", "Brought over from the old register, see ticket",
                f"owner-{i % 50}", expires, "legacy;import", "old-register", f"R{i:07d}",
                "Network segmentation", "preventive", "medium"])
PY
echo "$ROWS rows, $(du -h "$work/rows.csv" | cut -f1) of CSV"

# --- ceiling: COPY ----------------------------------------------------------------------
psql -q "$PG/postgres" -c "DROP DATABASE IF EXISTS leeway_bench_copy WITH (FORCE)" -c "CREATE DATABASE leeway_bench_copy"
columns=$(head -1 "$work/rows.csv" | tr ',' '\n' | sed 's/.*/& text/' | paste -sd, -)
psql -q "$PG/leeway_bench_copy" -c "CREATE TABLE copied ($columns)"
copy_rates=()
copy() {
  psql -q "$PG/leeway_bench_copy" -c "TRUNCATE copied" -c "CHECKPOINT"
  local s; s=$(now)
  psql -q "$PG/leeway_bench_copy" -c "\\copy copied FROM '$work/rows.csv' WITH (FORMAT csv, HEADER true)"
  local secs; secs=$(since "$s")
  local rate; rate=$(awk -v n="$ROWS" -v s="$secs" 'BEGIN { printf "%.0f", n / s }')
  copy_rates+=("$rate")
  echo "  COPY $ROWS rows in ${secs}s: $rate rows/s"
}
echo "ceiling before:"
copy

# --- Leeway: import ---------------------------------------------------------------------
results="$work/results"
: >"$results"
fresh() { # backend -> url of an empty database
  case $1 in
    sqlite) rm -f "$work"/leeway-"$2".db*; echo "sqlite://$work/leeway-$2.db" ;;
    postgres)
      psql -q "$PG/postgres" -c "DROP DATABASE IF EXISTS leeway_bench_$2 WITH (FORCE)" -c "CREATE DATABASE leeway_bench_$2" >/dev/null
      echo "$PG/leeway_bench_$2" ;;
    *) echo "unknown backend $1" >&2; exit 1 ;;
  esac
}
serve() { # url
  export LEEWAY_DATABASE_URL="$1" LEEWAY_LISTEN="127.0.0.1:$PORT"
  "$BIN" serve & pid=$!
  for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null && return; sleep 0.1; done
  echo "leeway serve did not start" >&2; exit 1
}
stop() { kill "$pid"; wait "$pid" 2>/dev/null || true; pid=""; }
for backend in $BACKENDS; do
  serve "$(fresh "$backend" import)"
  token=$("$BIN" token --sub importer --roles analyst --ttl 2h)
  (while kill -0 "$pid" 2>/dev/null; do awk '/VmRSS/ {print $2}' "/proc/$pid/status" 2>/dev/null; sleep 0.1; done) >"$work/rss" &
  sampler=$!
  s=$(now)
  out=$("$BIN" import "$work/rows.csv" --url "http://127.0.0.1:$PORT" --token "$token" --mode upsert 2>/dev/null)
  secs=$(since "$s")
  kill "$sampler" 2>/dev/null || true; wait "$sampler" 2>/dev/null || true
  rss=$(sort -n "$work/rss" | tail -1 | awk '{printf "%.1f", $1/1024}')
  rate=$(awk -v n="$ROWS" -v s="$secs" 'BEGIN { printf "%.0f", n / s }')
  echo "$backend|$rate|$secs|$rss|$out" >>"$results"
  echo "  leeway import on $backend: $out in ${secs}s: $rate rows/s, server peak RSS $rss MiB"
  stop
done

echo "ceiling after:"
copy
ceiling=$(printf '%s\n' "${copy_rates[@]}" | awk '{ s += $1 } END { printf "%.0f", s / NR }')

# --- reports on seeded data -------------------------------------------------------------
median5() { sort -n | awk '{a[NR]=$1} END {printf "%.0f", a[3] * 1000}'; }
for backend in $BACKENDS; do
  url=$(fresh "$backend" reports)
  echo "seeding $ROWS exceptions into $backend for the reports"
  LEEWAY_DATABASE_URL="$url" "$BIN" seed --exceptions "$ROWS" >/dev/null 2>&1
  serve "$url"
  auditor=$("$BIN" token --sub audrey --roles auditor --ttl 1h)
  for report in kpis hotspots; do
    ms=$(for _ in 1 2 3 4 5; do
      curl -s -o /dev/null -w '%{time_total}\n' "http://127.0.0.1:$PORT/v1/reports/$report" -H "Authorization: Bearer $auditor"
    done | median5)
    echo "$backend|report $report|$ms" >>"$work/reports"
    echo "  GET /v1/reports/$report on $backend, $ROWS exceptions: median $ms ms of 5"
  done
  stop
done

# --- table ------------------------------------------------------------------------------
echo
echo "| backend | import of $ROWS rows | rows/s | COPY rows/s (mean of 2) | ratio | server peak RSS |"
echo "|---|---|---|---|---|---|"
while IFS='|' read -r backend rate secs rss out; do
  ratio=$(awk -v r="$rate" -v c="$ceiling" 'BEGIN { printf "%.3f", r / c }')
  echo "| $backend | ${secs}s | $rate | $ceiling | $ratio | $rss MiB |"
done <"$results"
echo
echo "| backend | report | median of 5 |"
echo "|---|---|---|"
while IFS='|' read -r backend report ms; do echo "| $backend | $report | $ms ms |"; done <"$work/reports"
