#!/usr/bin/env python3
"""W1 driver for Restate.

Starts N instances of the W1 workflow through the ingress' async `/send` form
(POST /W1/<key>/run/send, answered once the invocation is durably accepted),
as fast as the server accepts them (at most --concurrency sends in flight),
and waits for each via the ingress attach API
(GET /restate/workflow/W1/<key>/attach, a long poll that returns the result).

Timing: from just before the first send until the last attach returned.
Per-workflow latency: send-call start -> attach returned (client view). The
server's own created_at -> completed_at (ms resolution, from the admin SQL
API) is reported as server_p50_ms / server_p99_ms.
"""
import argparse
import asyncio
import json
import os
import sys
import time
import uuid
from datetime import datetime

import aiohttp

p = argparse.ArgumentParser()
p.add_argument("-n", type=int, default=1000)
p.add_argument("--warmup", type=int, default=20)
p.add_argument("--concurrency", type=int, default=64, help="max sends in flight")
p.add_argument("--ingress", default="http://127.0.0.1:8080")
p.add_argument("--admin", default="http://127.0.0.1:9070")
p.add_argument("--timeout", type=float, default=600)
args = p.parse_args()
LOAD0 = open('/proc/loadavg').read().split()[0]


def pct(xs, q):  # same nearest-rank rule as dbos/dbos_bench.py
    xs = sorted(xs)
    if not xs:
        return float("nan")
    k = min(len(xs) - 1, max(0, int(round(q / 100.0 * (len(xs) - 1)))))
    return xs[k]


async def run_batch(session, prefix, n, conc):
    sem = asyncio.Semaphore(conc)
    lat = [None] * n
    sent_at = [None] * n

    async def one(i):
        key = f"{prefix}-{i}"
        async with sem:
            t0 = time.perf_counter()
            async with session.post(f"{args.ingress}/W1/{key}/run/send", json=i) as r:
                body = await r.json()
                if r.status >= 300 or body.get("status") not in ("Accepted", "PreviouslyAccepted"):
                    raise RuntimeError(f"send {key}: {r.status} {body}")
            sent_at[i] = time.perf_counter()
        async with session.get(f"{args.ingress}/restate/workflow/W1/{key}/attach") as r:
            res = await r.json()
            if r.status != 200 or res != i + 3:
                raise RuntimeError(f"attach {key}: {r.status} {res}")
        lat[i] = time.perf_counter() - t0

    t0 = time.perf_counter()
    await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(n))), args.timeout)
    elapsed = time.perf_counter() - t0
    return elapsed, lat, max(sent_at) - t0


async def server_latencies(session, prefix):
    q = ("SELECT created_at, completed_at FROM sys_invocation "
         f"WHERE target_service_name = 'W1' AND target_service_key LIKE '{prefix}-%' "
         "AND status = 'completed'")
    async with session.post(f"{args.admin}/query", json={"query": q},
                            headers={"accept": "application/json"}) as r:
        rows = (await r.json())["rows"]

    def ts(s):
        return datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()
    return [ts(r["completed_at"]) - ts(r["created_at"]) for r in rows]


async def main():
    run_id = uuid.uuid4().hex[:8]
    conn = aiohttp.TCPConnector(limit=0, force_close=False)
    timeout = aiohttp.ClientTimeout(total=None, sock_read=None)
    async with aiohttp.ClientSession(connector=conn, timeout=timeout) as s:
        # warm-up, not measured
        if args.warmup > 0:
            await run_batch(s, f"warm-{run_id}", args.warmup, args.concurrency)
        prefix = f"w1-{run_id}"
        elapsed, lat, send_s = await run_batch(s, prefix, args.n, args.concurrency)
        srv = await server_latencies(s, prefix)
        async with s.get(f"{args.admin}/version") as r:
            ver = (await r.json()).get("version")
    import importlib.metadata as md
    res = {
        "engine": "restate",
        "n": args.n,
        "workflows_per_s": round(args.n / elapsed, 1),
        "p50_ms": round(pct(lat, 50) * 1e3, 2),
        "p99_ms": round(pct(lat, 99) * 1e3, 2),
        "elapsed_s": round(elapsed, 3),
        "send_all_s": round(send_s, 3),
        "server_p50_ms": round(pct(srv, 50) * 1e3, 1) if srv else None,
        "server_p99_ms": round(pct(srv, 99) * 1e3, 1) if srv else None,
        "server_completed_rows": len(srv),
        "steps": 3,
        "concurrency": args.concurrency,
        "restate_server_version": ver,
        "restate_sdk_version": md.version("restate-sdk"),
        "loadavg_at_start": LOAD0,
    }
    print(json.dumps(res))


try:
    import uvloop
except ImportError:
    uvloop = None
(uvloop.run if uvloop else asyncio.run)(main())
