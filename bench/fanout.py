"""Fan-out: N concurrent steps that each block ~1.5 s on an HTTP call, then a join.

Prints the wall time of the fan-out (first branch start to last branch end, from the recorded
attempts) against the sum of the branches. Usage: python -m bench.fanout [--branches N]
"""

from __future__ import annotations

import argparse
import threading
import time
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from bench._server import fresh_database, serve, tenant_client


class _Slow(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        time.sleep(1.5)
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: object) -> None:
        pass


def _source(branches: int, url: str) -> str:
    lines = ["from treadle import WorkflowEntrypoint", "", "class Fan(WorkflowEntrypoint):"]
    lines += ["    def run(self, event, step):"]
    for i in range(branches):
        lines += [
            f'        @step.do("b{i}", concurrent=True)',
            f"        def b{i}():",
            f'            return self.env.fetch("{url}").status',
        ]
    names = ", ".join(f"b{i}" for i in range(branches))
    lines += [f'        @step.do("join", depends=[{names}])', f"        def join({names}):"]
    lines += [f"            return [{names}]", "        return join()"]
    return "\n".join(lines) + "\n"


def _ts(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--branches", type=int, default=2)
    args = parser.parse_args()
    http = ThreadingHTTPServer(("127.0.0.1", 0), _Slow)
    threading.Thread(target=http.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{http.server_address[1]}/"
    with fresh_database("sqlite") as db, serve(db) as base:
        client = tenant_client(base, egress_allow=["127.0.0.1"])
        body = {"source": _source(args.branches, url), "sandbox": "restricted"}
        client.put("/v1/workflows/fan", json=body).raise_for_status()
        client.post("/v1/workflows/fan/instances", json={"id": "f"}).raise_for_status()
        while (instance := client.get("/v1/workflows/fan/instances/f").json())["status"] in (
            "queued",
            "running",
            "waiting",
        ):
            time.sleep(0.05)
    http.shutdown()
    attempts = [s["attempts"][-1] for s in instance["steps"] if s["name"] != "join"]
    starts = [_ts(a["started_at"]) for a in attempts]
    ends = [_ts(a["ended_at"]) for a in attempts]
    total = sum(e - s for s, e in zip(starts, ends, strict=True))
    print(
        f"fan-out of {args.branches} x 1.5 s steps ({instance['status']}): "
        f"wall {max(ends) - min(starts):.2f} s, sum of steps {total:.2f} s"
    )


if __name__ == "__main__":
    main()
