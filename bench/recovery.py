"""Recovery: how soon do a killed process's running instances run again?

Starts a real `treadle serve` (on PostgreSQL also a `treadle worker`) with the default lease
(30 s) on a fresh database; each round starts instances whose one step blocks in a fetch to a
local server, waits until every step body is in flight, then `kill -9`s the process holding
the most of them and starts it again at once. An instance has recovered when its step body
starts again (the local server sees its second call). Prints, per round, the time from the
kill to the last instance recovered, and from the restarted process being ready to it; then
the median and the maximum. Usage: python -m bench.recovery [--rounds N] [--instances N]
[--backend sqlite|postgresql]
"""

from __future__ import annotations

import argparse
import collections
import statistics
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import sqlalchemy as sa

from bench._processes import TreadleProcess
from bench._server import fresh_database, tenant_client
from storage import normalize_url

SOURCE = """
from treadle import WorkflowEntrypoint

class Hang(WorkflowEntrypoint):
    def run(self, event, step):
        url = event.payload["url"] + "/" + event.instance_id
        return step.do("hang", lambda: self.env.fetch(url).status, timeout="1 hour")
"""


class Hanging:
    """A local server whose answers never come (within a round): it counts calls per path."""

    def __init__(self) -> None:
        self.calls: collections.defaultdict[str, list[float]] = collections.defaultdict(list)
        calls, stop = self.calls, threading.Event()
        self.stop = stop

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                calls[self.path.strip("/")].append(time.monotonic())
                stop.wait(120)

            def log_message(self, *args: object) -> None:
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.http.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}"
        threading.Thread(target=self.http.serve_forever, daemon=True).start()


def _held_by(url: str) -> collections.Counter[int]:
    engine = sa.create_engine(normalize_url(url))
    with engine.connect() as conn:
        query = "SELECT lease_owner FROM instances WHERE status = 'running'"
        owners = [row[0] for row in conn.execute(sa.text(query))]
    engine.dispose()
    return collections.Counter(int(owner.split("-")[-2]) for owner in owners if owner)


def _round(
    url: str,
    procs: list[TreadleProcess],
    hanging: Hanging,
    client: httpx.Client,
    n: int,
    first: int,
) -> tuple[float, float, str]:
    ids = [f"h{i}" for i in range(first, first + n)]
    batch = {"instances": [{"id": i, "params": {"url": hanging.url}} for i in ids]}
    client.post("/v1/workflows/hang/instances/batch", json=batch).raise_for_status()
    deadline = time.monotonic() + 60
    while not all(hanging.calls[i] for i in ids):
        if time.monotonic() > deadline:
            raise RuntimeError("the step bodies did not all start")
        time.sleep(0.02)
    held = _held_by(url)
    victim = max(procs, key=lambda p: held[p.pid])
    mine = held[victim.pid]
    killed = time.monotonic()
    victim.kill()
    victim.start()
    ready = time.monotonic()
    while sum(1 for i in ids if len(hanging.calls[i]) >= 2) < mine:
        if time.monotonic() > killed + 90:
            raise RuntimeError("the instances did not recover in 90 s")
        time.sleep(0.01)
    last = max(hanging.calls[i][1] for i in ids if len(hanging.calls[i]) >= 2)
    return last - killed, last - ready, f"{victim.kind} holding {mine}/{n}"


def run(backend: str, rounds: int, instances: int) -> None:
    hanging = Hanging()
    with fresh_database(backend) as url, tempfile.TemporaryDirectory() as tmp:
        procs = [TreadleProcess(url, Path(tmp), kind="serve")]
        if backend == "postgresql":
            procs.append(TreadleProcess(url, Path(tmp), kind="worker"))
        try:
            for proc in procs:
                proc.start()
            with tenant_client(procs[0].base, egress_allow=["127.0.0.1"]) as client:
                body = {"source": SOURCE, "sandbox": "restricted"}
                client.put("/v1/workflows/hang", json=body).raise_for_status()
                results = []
                for r in range(rounds):
                    after_kill, after_ready, who = _round(
                        url, procs, hanging, client, instances, r * instances
                    )
                    results.append((after_kill, after_ready))
                    print(
                        f"recovery {backend:10} round {r + 1}: kill -9 of the {who}: all ran "
                        f"again {after_kill:.2f} s after the kill, {after_ready:.2f} s after "
                        "the restarted process was ready"
                    )
                    for i in range(r * instances, (r + 1) * instances):
                        path = f"/v1/workflows/hang/instances/h{i}/status"
                        client.patch(path, json={"status": "terminate"})
        finally:
            hanging.stop.set()
            for proc in procs:
                proc.stop()
            hanging.http.shutdown()
    kills = [k for k, _ in results]
    readies = [r for _, r in results]
    print(
        f"recovery {backend:10} {rounds} rounds: after the kill p50 "
        f"{statistics.median(kills):.2f} s max {max(kills):.2f} s; after the restart p50 "
        f"{statistics.median(readies):.2f} s max {max(readies):.2f} s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--instances", type=int, default=8)
    parser.add_argument("--backend", choices=["sqlite", "postgresql"], action="append")
    args = parser.parse_args()
    for backend in args.backend or ["sqlite", "postgresql"]:
        run(backend, args.rounds, args.instances)


if __name__ == "__main__":
    main()
