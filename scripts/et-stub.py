#!/usr/bin/env python3
"""An Elastic Transcoder endpoint that accepts every job, at once: enough to
drive the broker's CreateJob path (signing, rest-json, the request token's
ListJobsByPipeline look-up) for scripts/bench-ledger. Not ET: it checks
nothing (the test suite's endpoint, tests/it/support/et.rs, does).

Answers POST /2012-09-25/jobs (CreateJob) with the job and an id, and
GET /2012-09-25/jobsByPipeline/ID (ListJobsByPipeline) with the jobs made.
Prints the number of jobs made on SIGTERM. Usage: scripts/et-stub.py PORT
"""
import itertools
import json
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

jobs = []
lock = threading.Lock()
ids = itertools.count(1)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def answer(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))) or b"{}")
        if self.path.split("?")[0] != "/2012-09-25/jobs":
            return self.answer(404, {"message": "CreateJob only"})
        job = dict(body, Id=f"{next(ids):013d}-stub00", Status="Submitted", Arn="arn:aws:elastictranscoder:local")
        with lock:
            jobs.append(job)
        self.answer(201, {"Job": job})

    def do_GET(self):
        path = self.path.split("?")[0]
        prefix = "/2012-09-25/jobsByPipeline/"
        if not path.startswith(prefix):
            return self.answer(404, {"message": "ListJobsByPipeline only"})
        pipeline = path[len(prefix):]
        with lock:
            found = [j for j in reversed(jobs) if j.get("PipelineId") == pipeline]
        self.answer(200, {"Jobs": found})


server = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler)
server.daemon_threads = True


def stop(*_):
    print(f"et-stub: {len(jobs)} jobs made", flush=True)
    threading.Thread(target=server.shutdown).start()


signal.signal(signal.SIGTERM, stop)
server.serve_forever()
