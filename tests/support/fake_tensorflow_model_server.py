#!/usr/bin/env python3
"""A stand-in for `tensorflow_model_server` that sheds load: every Nth predict request
(FAIL_EVERY, default 20, i.e. 5%) gets a fast 503, the rest a prediction. The local provider
runs whatever `tensorflow_model_server` is first on PATH, so tests put this file there under
that name to see how verdicts treat a server that fails fast. It takes the real server's
flags and uses only --rest_api_port (REST) and --port (bound, never answered)."""
import http.server
import json
import os
import socket
import sys
import threading

rest_port = None
grpc_port = None
for arg in sys.argv[1:]:
    if arg.startswith("--rest_api_port="):
        rest_port = int(arg.split("=", 1)[1])
    elif arg.startswith("--port="):
        grpc_port = int(arg.split("=", 1)[1])
if rest_port is None:
    sys.exit("fake tensorflow_model_server: --rest_api_port is required")

fail_every = int(os.environ.get("FAIL_EVERY", "20"))
lock = threading.Lock()
predicts = 0

# Hold the gRPC port so nothing else takes it while this "server" runs.
holder = None
if grpc_port:
    holder = socket.socket()
    holder.bind(("127.0.0.1", grpc_port))
    holder.listen(1)


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def reply(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path.startswith("/v1/models/"):
            self.reply(200, {"model_version_status": [
                {"version": "1", "state": "AVAILABLE",
                 "status": {"error_code": "OK", "error_message": ""}}]})
        else:
            self.reply(404, {"error": "not found"})

    def do_POST(self):
        global predicts
        length = int(self.headers.get("Content-Length", "0"))
        self.rfile.read(length)
        with lock:
            predicts += 1
            n = predicts
        if fail_every > 0 and n % fail_every == 0:
            self.reply(503, {"error": "the batch scheduling queue is full"})
        else:
            self.reply(200, {"predictions": [[0.4213]]})


server = http.server.ThreadingHTTPServer(("127.0.0.1", rest_port), Handler)
server.daemon_threads = True
server.serve_forever()
