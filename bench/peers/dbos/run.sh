#!/usr/bin/env bash
# W1 peer benchmark: DBOS Transact (PyPI `dbos`), with dbos_bench.py and
# w1_report.py (which prints the common W1 JSON line).
# Usage: ./run.sh [N] [postgres|sqlite] [queue|direct]   (default 1000 postgres queue)
#   queue : enqueue N workflows on a DBOS queue (worker_concurrency=32) and wait
#           for all -- the "start N as fast as accepted, wait for all" W1 shape
#   direct: 32 client threads call the workflow function inline (DBOS' most
#           common in-process usage; per-call latency, no backlog)
#   postgres: a private PostgreSQL 15 cluster under ./pgdata on 127.0.0.1:55439
#             (Debian's postgres binaries; fsync=on, synchronous_commit=on)
#   sqlite  : ./bench.sqlite
# Idempotent: makes ./.venv on first use, starts/stops what it needs.
# Last line = JSON result.
set -euo pipefail
N="${1:-1000}"; DB="${2:-postgres}"; MODE="${3:-queue}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$HERE"
LOGS="$HERE/logs"; mkdir -p "$LOGS"
[ -f "$HERE/dbos_bench.py" ] || { echo "dbos_bench.py missing" >&2; exit 1; }

if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c 'import dbos, sqlalchemy, psycopg' 2>/dev/null; then
  python3 -m venv .venv
  .venv/bin/pip install -q -r requirements.txt >&2
fi

# ---- isolate: run the rest in a private network namespace (loopback only) ---
source "$HERE/../netns.sh"
PG_STARTED=""
PGBIN=""
for v in 17 16 15 14; do [ -x /usr/lib/postgresql/$v/bin/pg_ctl ] && { PGBIN=/usr/lib/postgresql/$v/bin; break; }; done
PGPORT=55439; PGDATA="$HERE/pgdata"
cleanup() {
  if [ -n "$PG_STARTED" ]; then
    runuser -u postgres -- "$PGBIN/pg_ctl" -D "$PGDATA" -m fast -w stop >/dev/null 2>&1 || true
    PG_STARTED=""
  fi
}
trap cleanup EXIT

case "$DB" in
  postgres)
    [ -n "$PGBIN" ] || { echo "no PostgreSQL server binaries (apt-get install postgresql)" >&2; exit 1; }
    if (exec 3<>/dev/tcp/127.0.0.1/$PGPORT) 2>/dev/null; then
      echo "port $PGPORT already in use; stop whatever holds it first" >&2; exit 1
    fi
    if [ ! -f "$PGDATA/PG_VERSION" ]; then
      rm -rf "$PGDATA"; mkdir -p "$PGDATA"; chown postgres:postgres "$PGDATA"
      runuser -u postgres -- "$PGBIN/initdb" -D "$PGDATA" --auth=trust -U postgres -E UTF8 >"$LOGS/initdb.log"
    fi
    mkdir -p "$HERE/pglog"; chown postgres:postgres "$HERE/pglog"
    runuser -u postgres -- "$PGBIN/pg_ctl" -D "$PGDATA" -l "$HERE/pglog/pg.log" -w \
      -o "-p $PGPORT -c listen_addresses=127.0.0.1 -c unix_socket_directories='' -c max_connections=200" start >/dev/null
    PG_STARTED=1
    URL="postgresql://postgres@127.0.0.1:$PGPORT/dbos_bench" ;;
  sqlite) URL="sqlite:///$HERE/bench.sqlite" ;;
  *) echo "db must be postgres or sqlite" >&2; exit 2 ;;
esac

LOAD0="$(cut -d' ' -f1 /proc/loadavg)"
echo "uptime before run: $(uptime)" >&2
PATH="$PGBIN:$PATH" .venv/bin/python dbos_bench.py --db "$URL" --mode "$MODE" -n "$N" --warmup 20 \
  >"$LOGS/bench-$DB-$MODE.out" 2>"$LOGS/bench-$DB-$MODE.err"
echo "uptime after run:  $(uptime)" >&2
.venv/bin/python w1_report.py --db "$URL" -n "$N" --bench-json "$LOGS/bench-$DB-$MODE.out" \
  --load0 "$LOAD0" >"$LOGS/result-$DB-$MODE.json"
cleanup; trap - EXIT
tail -n 1 "$LOGS/result-$DB-$MODE.json"
