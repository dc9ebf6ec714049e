#!/usr/bin/env python3
"""A stand-in for `tensorflow_model_server` whose capacity and latency are KNOWN FUNCTIONS of
its batching settings, so tests of `benchstack tune` can check that the search finds the
configuration that truly carries the most traffic. Python 3 standard library only (asyncio,
one thread). Tests put this file on PATH under the name `tensorflow_model_server`; the local
provider then starts it with the real server's flags.

Usage (the flags the local provider passes; `--name=value` form, anything else ignored):

    tensorflow_model_server --port=GRPC --rest_api_port=REST
        [--model_config_file=FILE] [--model_name=NAME]
        [--enable_batching[=true|false]] [--batching_parameters_file=FILE]
        [--tensorflow_intra_op_parallelism=N] [--tensorflow_inter_op_parallelism=N] [...]
    tensorflow_model_server --print-capacity [same flags]

`--print-capacity` prints `{"capacity": C, "sheds": bool, "base_latency_ms": x}` for the given
flags and files and exits 0 without serving, so tests compute the truth from this script
instead of copying the formula. Bad flags or files: a message on stderr, exit 1.

Settings (from --batching_parameters_file, text proto lines `max_batch_size { value: 32 }`;
a field not in the file takes TF Serving's default): b = max_batch_size (default 1000),
n = num_batch_threads (default 2 here; TF Serving uses the core count, which would make the
truth machine-dependent), t = batch_timeout_micros (default 0). Other batching fields, the
thread-pool flags and every other flag are accepted and have no effect.

Capacity C in requests/s (one predict request counts once, whatever its number of instances):

    batching disabled (no --enable_batching, or =false):  C = 150, no shedding
    n >= 4 (the load-shedding configuration):               C = 190 + 2.5 * log2(b), sheds
    otherwise:                                              C = 200 * f(b) * g(n)

    f(b): linear in log2(b) through (1, 1.0), (8, 2.0), (32, 3.0), (128, 2.4); below 1 it
          is 1.0; above 128 it keeps falling 0.3 per doubling, never below 1.0
          (batches too large wait to fill and pad).
    g(n): g(1) = 1.0, g(2) = 1.6, g(3) = 1.3 (a 2-core machine oversubscribed).

Base latency (the latency floor: what a request takes at any rate below C):

    batching disabled:  L = 1 ms
    otherwise:          L = 1 ms + t / 1000 ms + PAD_MS_PER_ROW * b,  PAD_MS_PER_ROW = 0.55

A batch runs padded to max_batch_size rows. TF Serving's BatchingSession pads each batch up
to the next of its `allowed_batch_sizes`, whose last entry must equal max_batch_size
(tensorflow_serving/batching/README.md, "Batch Scheduling Parameters and Tuning"); this server
behaves as if max_batch_size were the only allowed size, so every request waits for a full
batch's compute: 0.55 ms per row. That is the cost of a batch size too large for a latency
SLO: under max_batch_size 128 with batch_timeout_micros 1000, L = 72.4 ms, above a 50 ms
objective at every rate, while 32 gives 19.6 ms and 8 gives 6.4 ms.

The grid the tests use (C in req/s; "shed" = answers 503 instead of queueing; L at t = 1000):

    max_batch_size   n=1     n=2     n=4 (sheds)    L
    1                200     320     190.0          2.55 ms
    8                400     640     197.5          6.4 ms
    32               600     960     202.5          19.6 ms
    128              480     768     207.5          72.4 ms (above a 50 ms SLO at any rate)
    batching disabled: 150, L = 1 ms

Among max_batch_size {8, 32} x num_batch_threads {1, 2} the unique best is (32, 2) at 960
req/s, 50% ahead of the runner-up (8, 2) at 640; (32, 2) is also the best non-shedding
configuration of the whole grid.

The server is a single virtual FIFO server with service time 1/C. A predict arriving at time
T (monotonic clock, when its request is parsed) starts at S = max(T, busy_until), then
busy_until = S + 1/C and the answer is sent at busy_until + L. Below C the latency stays about
1/C + L (plus queueing of bursts); above C the queue grows and the latency grows without bound. In the shedding configuration,
a predict that would wait more than 5 ms (S - T > 0.005) is answered 503 at once with a JSON
error and takes no service time, so its latency never grows but its errors do.

Answers under batching (tensorflow/serving#1279: padding changed answers): with the
environment variable TUNABLE_CORRUPT_FROM_BATCH=N and batching enabled with max_batch_size >= N,
a predict that arrives while the virtual server is busy (it would share a batch with the one
in service) is answered with every prediction 1% too large; a predict that finds the server
idle (sent alone) gets the true answer, as do all predicts of any other configuration.

REST: GET /v1/models/NAME[/versions/1] (version 1 AVAILABLE), POST
/v1/models/NAME[/versions/1]:predict with `{"instances": [...]}` (answer `{"predictions": [...]}`,
one per instance) or `{"inputs": ...}` (answer `{"outputs": [...]}`). Models: the names in
--model_config_file, else --model_name, else any name. HTTP/1.1 keep-alive with
Content-Length; chunked bodies are refused (501). Bad requests get 4xx JSON errors
`{"error": "..."}`; nothing a client sends stops the server. The gRPC port is bound and held,
never answered. Nothing is logged per request. SIGTERM/SIGINT: exit 0 promptly.
"""
import asyncio
import collections
import json
import math
import re
import signal
import socket
import sys

SHED_WAIT_S = 0.005
PAD_MS_PER_ROW = 0.55
MAX_HEAD = 64 * 1024
MAX_BODY = 16 * 1024 * 1024
PREDICTION = [0.4213]


class ConfigError(Exception):
    pass


# ---------------------------------------------------------------------------------------
# Flags, files and the capacity formula
# ---------------------------------------------------------------------------------------


def parse_flags(argv):
    flags = {}
    print_capacity = False
    for arg in argv:
        if arg in ("--print-capacity", "--print_capacity"):
            print_capacity = True
            continue
        if not arg.startswith("--") or len(arg) < 3:
            raise ConfigError(f"unexpected argument `{arg}`; expected --name=value flags")
        name, sep, value = arg[2:].partition("=")
        flags[name] = value if sep else None
    return flags, print_capacity


def flag_bool(flags, name):
    if name not in flags:
        return False
    v = flags[name]
    if v is None or v.lower() in ("true", "1", "yes"):
        return True
    if v.lower() in ("false", "0", "no"):
        return False
    raise ConfigError(f"--{name}={v}: expected true or false")


def flag_port(flags, name):
    v = flags.get(name)
    if v is None:
        return None
    try:
        p = int(v)
    except ValueError:
        raise ConfigError(f"--{name}={v}: expected a port number") from None
    if not 0 < p < 65536:
        raise ConfigError(f"--{name}={v}: expected a port number between 1 and 65535")
    return p


WRAPPED = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)\s*\{\s*value\s*:\s*([^}\s]+)\s*\}$")
PLAIN = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)\s*:\s*(\S+)$")


def read_batching_file(path):
    """{field: int} for the integer fields of a batching_parameters text proto."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"reading the batching parameters file {path}: {e}") from None
    fields = {}
    for number, line in enumerate(lines, 1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        m = WRAPPED.match(text) or PLAIN.match(text)
        if not m:
            raise ConfigError(
                f"{path}:{number}:1: expected `name {{ value: N }}` or `name: N`, found `{text}`"
            )
        name, raw = m.group(1), m.group(2).strip('"')
        if raw in ("true", "false"):
            fields[name] = raw == "true"
            continue
        if name == "thread_pool_name":
            continue
        try:
            fields[name] = int(raw)
        except ValueError:
            col = len(line) - len(line.lstrip()) + m.start(2) + 1
            raise ConfigError(f"{path}:{number}:{col}: `{name}` expects an integer, found `{raw}`") from None
    return fields


def batch_factor(b):
    """f(b): linear in log2(b) through the anchors, 0.3 lower per doubling above 128."""
    anchors = [(0.0, 1.0), (3.0, 2.0), (5.0, 3.0), (7.0, 2.4)]
    x = math.log2(b) if b >= 1 else 0.0
    if x <= 0.0:
        return 1.0
    for (x0, y0), (x1, y1) in zip(anchors, anchors[1:]):
        if x <= x1:
            return y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    return max(1.0, 2.4 - 0.3 * (x - 7.0))


THREAD_FACTOR = {1: 1.0, 2: 1.6, 3: 1.3}


def capacity_model(flags):
    """(capacity req/s, sheds, base latency s) for these flags (and the files they name)."""
    if not flag_bool(flags, "enable_batching"):
        return 150.0, False, 0.001
    fields = batching_fields(flags)
    b = fields.get("max_batch_size", 1000)
    n = fields.get("num_batch_threads", 2)
    t = fields.get("batch_timeout_micros", 0)
    base = round(0.001 + t / 1e6 + PAD_MS_PER_ROW * b / 1000.0, 9)
    if n >= 4:
        return round(190.0 + 2.5 * math.log2(b), 6), True, base
    return round(200.0 * batch_factor(b) * THREAD_FACTOR[n], 6), False, base


def corrupts(flags):
    """Whether this configuration corrupts answers under batching (TUNABLE_CORRUPT_FROM_BATCH)."""
    import os
    raw = os.environ.get("TUNABLE_CORRUPT_FROM_BATCH", "")
    if not raw or not flag_bool(flags, "enable_batching"):
        return False
    try:
        limit = int(raw)
    except ValueError:
        raise ConfigError(f"TUNABLE_CORRUPT_FROM_BATCH={raw!r}: expected a whole number") from None
    return batching_fields(flags).get("max_batch_size", 1000) >= limit


def batching_fields(flags):
    """The checked integer fields of the batching parameters file (none: defaults)."""
    fields = {}
    path = flags.get("batching_parameters_file")
    if path:
        fields = read_batching_file(path)
    b = fields.get("max_batch_size", 1000)
    n = fields.get("num_batch_threads", 2)
    t = fields.get("batch_timeout_micros", 0)
    for name, v, low in (("max_batch_size", b, 1), ("num_batch_threads", n, 1), ("batch_timeout_micros", t, 0)):
        if isinstance(v, bool) or v < low:
            raise ConfigError(f"{path}: `{name}` must be an integer >= {low}, found {v}")
    return fields


def model_names(flags):
    """The served model names, or None to accept any."""
    path = flags.get("model_config_file")
    if path:
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"reading the model config file {path}: {e}") from None
        names = set(re.findall(r'\bname\s*:\s*"((?:[^"\\]|\\.)*)"', text))
        if not names:
            raise ConfigError(f"{path}: no `name: \"...\"` in the model config")
        return names
    if flags.get("model_name"):
        return {flags["model_name"]}
    return None


# ---------------------------------------------------------------------------------------
# HTTP
# ---------------------------------------------------------------------------------------

REASONS = {200: "OK", 100: "Continue", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
           411: "Length Required", 413: "Payload Too Large", 431: "Request Header Fields Too Large",
           501: "Not Implemented", 503: "Service Unavailable", 505: "HTTP Version Not Supported"}


def response(status, body, keep_alive, head_only=False):
    data = json.dumps(body).encode()
    head = (f"HTTP/1.1 {status} {REASONS.get(status, 'Error')}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n"
            + ("" if keep_alive else "Connection: close\r\n") + "\r\n").encode()
    return head if head_only else head + data


def error(status, message):
    return status, {"error": message}


class Model:
    """The virtual FIFO server shared by every connection."""

    def __init__(self, capacity, sheds, base, names, corrupt=False):
        self.corrupt = corrupt
        self.service = 1.0 / capacity
        self.sheds = sheds
        self.base = base
        self.names = names
        self.busy_until = 0.0

    def admit(self, now):
        """(the time to answer a predict arriving now, whether it shares a batch), or None
        to shed it."""
        start = max(now, self.busy_until)
        if self.sheds and start - now > SHED_WAIT_S:
            return None
        batched = self.busy_until > now
        self.busy_until = start + self.service
        return self.busy_until + self.base, batched


MODEL_PATH = re.compile(r"^/v1/models/([^/:]+)(?:/versions/([^/:]+)|/labels/([^/:]+))?(?::([A-Za-z]+))?$")


def status_body():
    return {"model_version_status": [
        {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}]}


def predictions(body):
    """The answer for a predict body, or raise ValueError with the reason."""
    try:
        req = json.loads(body)
    except (ValueError, RecursionError) as e:
        raise ValueError(f"JSON parse error: {e}") from None
    if not isinstance(req, dict):
        raise ValueError("the request body must be a JSON object with \"instances\" or \"inputs\"")
    if "instances" in req and "inputs" in req:
        raise ValueError("Not both 'instances' and 'inputs' can be set in the request")
    if "instances" in req:
        rows = req["instances"]
        if not isinstance(rows, list) or not rows:
            raise ValueError("\"instances\" must be a non-empty list of rows")
        return {"predictions": [PREDICTION] * len(rows)}
    if "inputs" in req:
        inputs = req["inputs"]
        if isinstance(inputs, dict):
            inputs = next(iter(inputs.values()), None)
        if not isinstance(inputs, list) or not inputs:
            raise ValueError("\"inputs\" must be a non-empty list or an object of lists")
        return {"outputs": [PREDICTION] * len(inputs)}
    raise ValueError("Missing 'inputs' or 'instances' key in the request")


class Connection(asyncio.Protocol):
    def __init__(self, model, loop):
        self.model = model
        self.loop = loop
        self.buf = bytearray()
        self.head = None  # (method, target, keep_alive, length) of a request awaiting its body
        self.pending = collections.deque()  # answer slots in request order: [bytes or None, close]
        self.closing = False
        self.transport = None

    def connection_made(self, transport):
        self.transport = transport

    def connection_lost(self, exc):
        self.closing = True
        self.pending.clear()

    def data_received(self, data):
        if self.closing:
            return
        self.buf += data
        try:
            self.parse()
        except Exception as e:  # never let one client's bytes stop the server
            self.answer_now(*error(400, f"bad request: {e}"), keep_alive=False)

    def parse(self):
        while not self.closing:
            if self.head is None:
                end = self.buf.find(b"\r\n\r\n")
                if end < 0:
                    if len(self.buf) > MAX_HEAD:
                        self.answer_now(*error(431, "request head too large"), keep_alive=False)
                    return
                if end > MAX_HEAD:
                    self.answer_now(*error(431, "request head too large"), keep_alive=False)
                    return
                raw = bytes(self.buf[:end])
                del self.buf[:end + 4]
                if not self.read_head(raw):
                    return
            method, target, keep_alive, length = self.head
            if len(self.buf) < length:
                return
            body = bytes(self.buf[:length])
            del self.buf[:length]
            self.head = None
            self.handle(method, target, body, keep_alive)

    def read_head(self, raw):
        """Parses a request head into self.head; False after answering an error."""
        lines = raw.decode("latin-1").split("\r\n")
        # Tolerate blank lines before a request (RFC 9112 2.2).
        while lines and lines[0] == "":
            lines.pop(0)
        parts = lines[0].split(" ") if lines else []
        if len(parts) != 3 or not parts[0] or not parts[1]:
            self.answer_now(*error(400, "malformed request line"), keep_alive=False)
            return False
        method, target, version = parts
        if version not in ("HTTP/1.1", "HTTP/1.0"):
            self.answer_now(*error(505, f"unsupported protocol version `{version[:20]}`"), keep_alive=False)
            return False
        headers = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep or not name or name != name.strip():
                self.answer_now(*error(400, "malformed header line"), keep_alive=False)
                return False
            name = name.lower()
            value = value.strip()
            if name in headers and name == "content-length" and headers[name] != value:
                self.answer_now(*error(400, "conflicting Content-Length headers"), keep_alive=False)
                return False
            headers[name] = headers[name] + ", " + value if name in headers and name != "content-length" else value
        if "transfer-encoding" in headers:
            self.answer_now(*error(501, "Transfer-Encoding is not supported; send Content-Length"), keep_alive=False)
            return False
        raw_length = headers.get("content-length", "0")
        if not raw_length.isdigit() or not raw_length.isascii():
            self.answer_now(*error(400, "Content-Length must be a non-negative integer"), keep_alive=False)
            return False
        length = int(raw_length)
        if length > MAX_BODY:
            self.answer_now(*error(413, f"request body larger than {MAX_BODY} bytes"), keep_alive=False)
            return False
        connection = headers.get("connection", "").lower()
        if version == "HTTP/1.1":
            keep_alive = "close" not in connection
        else:
            keep_alive = "keep-alive" in connection
        if (headers.get("expect", "").lower() == "100-continue" and version == "HTTP/1.1"
                and len(self.buf) < length and not self.pending):
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        self.head = (method, target, keep_alive, length)
        return True

    def handle(self, method, target, body, keep_alive):
        path = target.split("?", 1)[0]
        m = MODEL_PATH.match(path)
        if not m:
            return self.answer_now(*error(404, f"Malformed request: {method} {path[:200]}"), keep_alive=keep_alive)
        name, version, label, verb = m.groups()
        names = self.model.names
        if names is not None and name not in names:
            return self.answer_now(*error(404, f"Servable not found for request: Latest({name[:200]})"),
                                   keep_alive=keep_alive)
        if version is not None and version != "1":
            return self.answer_now(*error(404, f"Servable not found for request: Specific({name[:200]}, {version[:40]})"),
                                   keep_alive=keep_alive)
        if verb is None:
            if method not in ("GET", "HEAD"):
                return self.answer_now(*error(405, f"{method} is not allowed on {path[:200]}; use GET"),
                                       keep_alive=keep_alive)
            return self.answer_now(200, status_body(), keep_alive=keep_alive, head_only=method == "HEAD")
        if verb != "predict":
            return self.answer_now(*error(400, f"this server answers only :predict, not :{verb[:40]}"),
                                   keep_alive=keep_alive)
        if method != "POST":
            return self.answer_now(*error(405, f"{method} is not allowed on {path[:200]}; use POST"),
                                   keep_alive=keep_alive)
        try:
            answer = predictions(body)
        except ValueError as e:
            return self.answer_now(*error(400, str(e)), keep_alive=keep_alive)
        admitted = self.model.admit(self.loop.time())
        if admitted is None:
            return self.answer_now(*error(503, "the batch scheduling queue is full"), keep_alive=keep_alive)
        when, batched = admitted
        if batched and self.model.corrupt:
            answer = {k: [[x * 1.01 for x in row] for row in v] for k, v in answer.items()}
        slot = [None, not keep_alive]
        self.pending.append(slot)
        self.loop.call_at(when, self.fill, slot, response(200, answer, keep_alive))

    def answer_now(self, status, body, keep_alive, head_only=False):
        self.pending.append([response(status, body, keep_alive, head_only), not keep_alive])
        if not keep_alive:
            # Nothing after this request is read.
            self.buf.clear()
            self.head = None
            self.closing = True
        self.flush()

    def fill(self, slot, data):
        slot[0] = data
        self.flush()

    def flush(self):
        t = self.transport
        while self.pending and self.pending[0][0] is not None:
            data, close = self.pending.popleft()
            if t.is_closing():
                self.pending.clear()
                return
            t.write(data)
            if close:
                self.pending.clear()
                t.close()
                return


# ---------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------


def fail(message):
    print(f"tunable tensorflow_model_server: {message}", file=sys.stderr)
    sys.exit(1)


async def serve(model, rest_port, grpc_port):
    loop = asyncio.get_running_loop()
    stop = loop.create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: stop.done() or stop.set_result(None))
    holder = None
    if grpc_port:
        # Hold the gRPC port so nothing else takes it while this server runs.
        holder = socket.socket()
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            holder.bind(("127.0.0.1", grpc_port))
        except OSError as e:
            fail(f"binding the gRPC port 127.0.0.1:{grpc_port}: {e}")
        holder.listen(16)
    try:
        server = await loop.create_server(lambda: Connection(model, loop), "127.0.0.1", rest_port,
                                          backlog=1024, reuse_address=True)
    except OSError as e:
        fail(f"binding the REST port 127.0.0.1:{rest_port}: {e}")
    print(f"tunable tensorflow_model_server: REST on 127.0.0.1:{rest_port}, "
          f"capacity {1.0 / model.service:.1f} req/s, sheds {model.sheds}, "
          f"base latency {model.base * 1000:.3f} ms", flush=True)
    await stop
    server.close()
    if holder is not None:
        holder.close()


def main():
    try:
        flags, print_capacity = parse_flags(sys.argv[1:])
        capacity, sheds, base = capacity_model(flags)
        if print_capacity:
            print(json.dumps({"capacity": capacity, "sheds": sheds,
                              "base_latency_ms": round(base * 1000.0, 6)}))
            return
        rest_port = flag_port(flags, "rest_api_port")
        grpc_port = flag_port(flags, "port")
        if rest_port is None:
            raise ConfigError("--rest_api_port is required")
        names = model_names(flags)
        corrupt = corrupts(flags)
    except ConfigError as e:
        fail(str(e))
    try:
        import resource
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft < hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ImportError, ValueError, OSError):
        pass
    asyncio.run(serve(Model(capacity, sheds, base, names, corrupt), rest_port, grpc_port))


if __name__ == "__main__":
    main()
