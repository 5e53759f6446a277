#!/usr/bin/env python3
"""Turn the last JSON line of dbos_bench.py (copied unchanged from
dbos/dbos_bench.py) into the common W1 peer JSON line.

dbos_bench.py's queue mode does not time single workflows, so per-workflow
latency is read back from DBOS' own system table (workflow_status:
completed_at - created_at, ms, for the N measured workflows, i.e. the last N
created; the 20 warm-up ones came first). In direct mode the bench's own
client-side wf_p50_ms / wf_p99_ms are used.
"""
import argparse
import json
import sys

import sqlalchemy as sa

p = argparse.ArgumentParser()
p.add_argument("--db", required=True)
p.add_argument("-n", type=int, required=True)
p.add_argument("--bench-json", required=True)
p.add_argument("--load0", default=None, help="1-min load average before the run")
args = p.parse_args()

bench = None
for line in open(args.bench_json):
    line = line.strip()
    if line.startswith("{"):
        bench = json.loads(line)
if bench is None:
    sys.exit("no JSON line from dbos_bench.py")


def pct(xs, q):  # same nearest-rank rule as dbos_bench.py
    xs = sorted(xs)
    if not xs:
        return float("nan")
    k = min(len(xs) - 1, max(0, int(round(q / 100.0 * (len(xs) - 1)))))
    return xs[k]


url = args.db
is_pg = url.startswith("postgres")
if is_pg:
    url = sa.make_url(url).set(drivername="postgresql+psycopg")
tbl = "dbos.workflow_status" if is_pg else "workflow_status"
eng = sa.create_engine(url)
with eng.connect() as c:
    rows = c.execute(sa.text(
        f"SELECT created_at, completed_at, updated_at, status FROM {tbl} "
        "ORDER BY created_at DESC LIMIT :n"), {"n": args.n}).all()
eng.dispose()
ok = [r for r in rows if r[3] == "SUCCESS"]
srv = [((r[1] or r[2]) - r[0]) for r in ok]

res = {
    "engine": f"dbos-{bench['db']}-{bench['mode']}",
    "n": bench["n"],
    "workflows_per_s": bench["workflows_per_s"],
}
if "wf_p50_ms" in bench:
    res.update({"p50_ms": bench["wf_p50_ms"], "p99_ms": bench["wf_p99_ms"],
                "latency_source": "client (dbos_bench wf_p50/wf_p99)"})
else:
    res.update({"p50_ms": pct(srv, 50) if srv else None, "p99_ms": pct(srv, 99) if srv else None,
                "latency_source": "server (workflow_status completed_at - created_at)"})
res.update({
    "elapsed_s": bench["elapsed_s"],
    "server_p50_ms": pct(srv, 50) if srv else None,
    "server_p99_ms": pct(srv, 99) if srv else None,
    "server_success_rows": len(ok),
    "steps": bench["steps"], "concurrency": bench["concurrency"],
    "dbos_version": bench["dbos_version"],
    "loadavg_at_start": args.load0,
    "bench": bench,
})
print(json.dumps(res))
