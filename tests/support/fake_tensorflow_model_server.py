#!/usr/bin/env python3
"""A stand-in for `tensorflow_model_server` that sheds load: every Nth predict request
(FAIL_EVERY, default 20, i.e. 5%) gets a fast 503, the rest a prediction. The local provider
runs whatever `tensorflow_model_server` is first on PATH, so tests put this file there under
that name to see how verdicts treat a server that fails fast. It takes the real server's
flags and uses --rest_api_port (REST), --port (bound, never answered) and
--monitoring_config_file.

With --monitoring_config_file naming `prometheus_config { enable: true path: "..." }` it
serves TF Serving's metrics at that path, with TF Serving's names, labels, bucket layouts and
text format (tensorflow/serving util/prometheus_exporter.cc; a value is counted in the first
bucket whose bound is above it, as TensorFlow's Histogram::Add does) and known values: every
4 successful predicts make one batch of exactly 4 rows, each of them queued 2 ms and run for
3 ms. NO_METRICS=1 ignores the flag, like a server without the endpoint (404)."""
import http.server
import json
import os
import re
import socket
import sys
import threading

rest_port = None
grpc_port = None
monitoring = None
for arg in sys.argv[1:]:
    if arg.startswith("--rest_api_port="):
        rest_port = int(arg.split("=", 1)[1])
    elif arg.startswith("--port="):
        grpc_port = int(arg.split("=", 1)[1])
    elif arg.startswith("--monitoring_config_file="):
        monitoring = arg.split("=", 1)[1]
if rest_port is None:
    sys.exit("fake tensorflow_model_server: --rest_api_port is required")

metrics_path = None
if monitoring and os.environ.get("NO_METRICS") != "1":
    text = open(monitoring).read()
    if re.search(r"enable\s*:\s*true", text):
        m = re.search(r'path\s*:\s*"([^"]*)"', text)
        metrics_path = (m.group(1) if m else "") or "/monitoring/prometheus/metrics"

fail_every = int(os.environ.get("FAIL_EVERY", "20"))
lock = threading.Lock()
predicts = 0
# (model, status) -> count
request_count = {}
ok_predicts = 0

QUEUE_US = 2000
RUN_US = 3000
ROWS = 4


def exponential(scale, growth, count):
    out, b = [], scale
    for _ in range(count):
        out.append(b)
        b *= growth
    return out


LATENCY = exponential(10, 1.8, 33)
QUEUE = exponential(100, 1.2, 52)
BATCH = exponential(1, 2, 14)


def histogram(name, labels, bounds, value, n):
    """n observations, all equal to value, in TF Serving's exposition."""
    lines = []
    prefix = name + "_bucket{" + (labels + "," if labels else "")
    for b in bounds:
        lines.append('%sle="%s"} %d' % (prefix, "%g" % b, n if value < b else 0))
    lines.append('%sle="+Inf"} %d' % (prefix, n))
    lines.append("%s_sum{%s} %s" % (name, labels, "%g" % (value * n)))
    lines.append("%s_count{%s} %d" % (name, labels, n))
    return lines


def page():
    with lock:
        counts = dict(request_count)
        ok = ok_predicts
    batches = ok // ROWS
    s = ":tensorflow:serving:batching_session"
    lines = ["# TYPE %s:input_batch_size histogram" % s]
    lines += histogram(s + ":input_batch_size", "", BATCH, 1, ok)
    lines.append("# TYPE %s:padding_size histogram" % s)
    lines += histogram(s + ":padding_size", 'execution_batch_size="4"', BATCH, 0, batches)
    lines.append("# TYPE %s:processed_batch_size histogram" % s)
    lines += histogram(s + ":processed_batch_size", "", BATCH, ROWS, batches)
    lines.append("# TYPE %s:queuing_latency histogram" % s)
    lines += histogram(s + ":queuing_latency", 'thread_pool_name="batch_threads"', QUEUE, QUEUE_US, ok)
    lines.append("# TYPE %s:wrapped_run_count counter" % s)
    lines.append("%s:wrapped_run_count{} %d" % (s, batches))
    lines.append("# TYPE :tensorflow:serving:request_count counter")
    for (model, status), n in sorted(counts.items()):
        lines.append(':tensorflow:serving:request_count{model_name="%s",status="%s"} %d' % (model, status, n))
    lines.append("# TYPE :tensorflow:serving:runtime_latency histogram")
    lines += histogram(":tensorflow:serving:runtime_latency",
                       'model_name="regression",API="Predict",runtime="TF1"', LATENCY, RUN_US, ok)
    return "\n".join(lines) + "\n"

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
        if metrics_path is not None and self.path == metrics_path:
            data = page().encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        elif self.path.startswith("/v1/models/"):
            self.reply(200, {"model_version_status": [
                {"version": "1", "state": "AVAILABLE",
                 "status": {"error_code": "OK", "error_message": ""}}]})
        else:
            self.reply(404, {"error": "not found"})

    def do_POST(self):
        global predicts, ok_predicts
        length = int(self.headers.get("Content-Length", "0"))
        self.rfile.read(length)
        model = self.path[len("/v1/models/"):].split(":")[0].split("/")[0]
        with lock:
            predicts += 1
            n = predicts
            failed = fail_every > 0 and n % fail_every == 0
            status = "UNAVAILABLE" if failed else "OK"
            request_count[(model, status)] = request_count.get((model, status), 0) + 1
            if not failed:
                ok_predicts += 1
        if failed:
            self.reply(503, {"error": "the batch scheduling queue is full"})
        else:
            self.reply(200, {"predictions": [[0.4213]]})


# socketserver listens with a backlog of 5. When the load generator opens its connections
# at once, the kernel drops the SYNs beyond it and the clients retry a second later: a
# scrape caught in that burst answered a second into the stage. Real servers listen with
# far longer backlogs (commonly up to the kernel's somaxconn).
http.server.ThreadingHTTPServer.request_queue_size = 1024
server = http.server.ThreadingHTTPServer(("127.0.0.1", rest_port), Handler)
server.daemon_threads = True
server.serve_forever()
