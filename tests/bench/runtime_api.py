"""Starts a Lambda function binary against this Lambda Runtime API (the interface AWS Lambda serves) and times its
cold start: from process start to the first answer, then the warm answers after it. Each invocation is a function
URL request (API Gateway v2 payload) to POST /v1/query, signed as the platform API signs it.

Usage: ARCHIVE_URL=... QUERY_SECRET=... runtime_api.py <bootstrap> <tenant> <from ms> <to ms>"""
import hashlib
import hmac
import json
import os
import queue
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

binary, tenant, start, end = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
secret = os.environ["QUERY_SECRET"].encode()
queries = [
    ("cold series per day", "cold", {"kind": "series", "filters": {"from": start, "to": end}, "interval": "day"}),
    ("warm series per day", "warm", {"kind": "series", "filters": {"from": start, "to": end}, "interval": "day"}),
    ("cold events page", "cold", {"kind": "events", "filters": {"from": start, "to": end}, "limit": 100}),
]


def invocation(tier, query):
    body = json.dumps({"tenant": tenant, "tier": tier, "query": query})
    ts = str(int(time.time() * 1000))
    mac = hmac.new(secret, f"v1\n{ts}\nquery\n".encode() + body.encode(), hashlib.sha256).hexdigest()
    return {
        "version": "2.0", "routeKey": "$default", "rawPath": "/v1/query", "rawQueryString": "",
        "headers": {"content-type": "application/json", "x-tracker-timestamp": ts, "x-tracker-signature": f"v1={mac}"},
        "requestContext": {"accountId": "anonymous", "apiId": "q", "domainName": "q.lambda-url.us-east-1.on.aws",
                           "domainPrefix": "q", "http": {"method": "POST", "path": "/v1/query", "protocol": "HTTP/1.1",
                                                         "sourceIp": "127.0.0.1", "userAgent": "bench"},
                           "requestId": "r", "routeKey": "$default", "stage": "$default",
                           "time": "29/Nov/2026:00:00:00 +0000", "timeEpoch": 0},
        "body": body, "isBase64Encoded": False,
    }


pending = queue.Queue()
answers = queue.Queue()
for q in queries:
    pending.put(q)
sent = {}


class Api(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        name, tier, query = pending.get()  # blocks, as AWS does, when nothing is left
        rid = f"req-{len(sent)}"
        sent[rid] = (name, time.perf_counter())
        payload = json.dumps(invocation(tier, query)).encode()
        self.send_response(200)
        for k, v in [("Lambda-Runtime-Aws-Request-Id", rid), ("Lambda-Runtime-Deadline-Ms", str(int(time.time() * 1000) + 60000)),
                     ("Lambda-Runtime-Invoked-Function-Arn", "arn:aws:lambda:us-east-1:000000000000:function:q"),
                     ("Lambda-Runtime-Trace-Id", "Root=1-0-0"), ("Content-Length", str(len(payload)))]:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(payload)

    def do_POST(self):
        rid = self.path.split("/")[-2]
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        answers.put((rid, time.perf_counter(), json.loads(body or b"null")))
        self.send_response(202)
        self.send_header("Content-Length", "0")
        self.end_headers()


server = ThreadingHTTPServer(("127.0.0.1", 0), Api)
threading.Thread(target=server.serve_forever, daemon=True).start()
env = dict(os.environ, AWS_LAMBDA_RUNTIME_API=f"127.0.0.1:{server.server_port}", AWS_LAMBDA_FUNCTION_NAME="tracker-query",
           AWS_LAMBDA_FUNCTION_MEMORY_SIZE="2048", AWS_LAMBDA_FUNCTION_VERSION="$LATEST", RUST_LOG="warn")
started = time.perf_counter()
proc = subprocess.Popen([binary], env=env)
try:
    for i in range(len(queries)):
        rid, at, reply = answers.get(timeout=120)
        name, asked = sent[rid]
        status = reply.get("statusCode")
        if i == 0:
            print(f"cold start, process start to first answer ({name}): {(at - started) * 1000:.0f} ms (status {status})")
        else:
            print(f"warm invocation ({name}): {(at - asked) * 1000:.0f} ms (status {status})")
finally:
    proc.kill()
