#!/usr/bin/env bash
# `benchstack tune` at the probe floor: a six-configuration grid (max_batch_size 8/32/128 x
# num_batch_threads 1/2) on the tunable test server (tests/support/tunable_tensorflow_model_
# server.py on PATH as tensorflow_model_server), p99 <= 50 ms. max_batch_size 128 has a 72.4 ms
# latency floor at every rate: two of the six configurations can never pass.
#
#   cargo build --release && nice bench/tune/run.sh        # ~2-4 minutes
#
# Runs apply, a tune (timed), the same tune again (timed: resumed from the state, nothing
# measured), then destroy. Prints the wall times, the probes, each trial's verdict, the
# time-left estimates against the time actually left, and the probe floor: the probes a
# perfect search needs for the same measurements (the best three are measured three times):
# per measurement of a reachable configuration a pass just under its capacity and a miss at it
# (stopped after its first second), of a hopeless one the two probes that show its floor.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
bin="${BENCHSTACK:-$root/target/release/benchstack}"
work="$(mktemp -d)"
trap 'PATH="$work/bin:$PATH" "$bin" --state "$work/state" destroy --auto-approve "$work/stack.hcl" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
mkdir -p "$work/bin"
cp "$root/tests/support/tunable_tensorflow_model_server.py" "$work/bin/tensorflow_model_server"
chmod +x "$work/bin/tensorflow_model_server"
export PATH="$work/bin:$PATH"
cat > "$work/stack.hcl" <<HCL
cluster "local" {
  provider = "local"
}
model "regression" {
  base_path = "$root/examples/model/regression"
}
serving "tf" {
  cluster = cluster.local
  models  = [model.regression]
  batching {
    max_batch_size       = 8
    batch_timeout_micros = 1000
    max_enqueued_batches = 100
    num_batch_threads    = 1
  }
}
loadtest "probe" {
  target      = serving.tf
  protocol    = "rest"
  request     = file("$root/examples/requests/regression.json")
  connections = 64
  stage {
    rate     = 50
    duration = "1s"
  }
  slo {
    p99 = "50ms"
  }
}
tune "batching" {
  serving  = serving.tf
  loadtest = loadtest.probe
  space = {
    "batching.max_batch_size"    = [8, 32, 128]
    "batching.num_batch_threads" = [1, 2]
  }
  search         = "grid"
  start_rate     = 100
  probe_duration = "2s"
  precision      = 0.05
}
HCL
bs() { "$bin" --state "$work/state" "$@"; }
bs apply --auto-approve "$work/stack.hcl" >/dev/null
t0=$(date +%s.%N)
bs tune "$work/stack.hcl" --json >"$work/tune.json" 2>"$work/tune.err" || true
t1=$(date +%s.%N)
bs tune "$work/stack.hcl" --json >"$work/again.json" 2>"$work/again.err" || true
t2=$(date +%s.%N)
mkdir -p "$here/results" && cp "$work/tune.err" "$here/results/tune-$(date +%Y%m%d-%H%M%S).log"
python3 - "$work" "$t0" "$t1" "$t2" "$root" <<'PY'
import json, re, subprocess, sys
work, t0, t1, t2, root = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
v = json.load(open(f"{work}/tune.json"))
again = json.load(open(f"{work}/again.json"))
script = f"{root}/tests/support/tunable_tensorflow_model_server.py"
def truth(b, n):
    p = f"{work}/truth-{b}-{n}.txt"
    open(p, "w").write(f"max_batch_size {{ value: {b} }}\nbatch_timeout_micros {{ value: 1000 }}\nnum_batch_threads {{ value: {n} }}\n")
    out = subprocess.run([script, "--print-capacity", "--enable_batching=true", f"--batching_parameters_file={p}"],
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out)
print(f"tune: {t1 - t0:.0f} s wall, {v['probes']} probes ({v['probes_measured']} measured)")
print(f"again: {t2 - t1:.1f} s wall, {again['probes_measured']} probes measured")
live = sum(p["duration_s"] for t in v["trials"] for m in t["measurements"] for p in m["probes"])
print(f"probe time: {live:.0f} s of {t1 - t0:.0f} s")
floor_n, floor_s = 0, 0.0
for t in v["trials"]:
    b, n = t["settings"]["batching.max_batch_size"], t["settings"]["batching.num_batch_threads"]
    tr = truth(b, n)
    probes = [p for m in t["measurements"] for p in m["probes"]]
    stopped = sum(1 for p in probes if p.get("stopped_early"))
    verdict = f"capacity {t['capacity']}" if t["capacity"] else t["reason"]
    print(f"  ({b:>3}, {n}) x{len(t['measurements'])} truth {tr['capacity']:.0f} req/s, floor {tr['base_latency_ms']} ms: "
          f"{len(probes)} probes ({stopped} stopped early), {sum(p['duration_s'] for p in probes):.1f} s: {verdict}")
    # The perfect search: two probes of the planned duration (2 s, at least 1000 samples).
    dur = lambda r: min(8.0, max(2.0, 1000.0 / r))
    k = len(t["measurements"])
    if tr["base_latency_ms"] > 50:
        floor_n += 2 * k; floor_s += k * 2 * 1.0  # two probes stopped after their first second
    else:
        c = tr["capacity"]
        # The pass in full, the miss stopped after its first second.
        floor_n += 2 * k; floor_s += k * (dur(c * 0.95) + 1.0)
print(f"probe floor: {floor_n} probes, {floor_s:.0f} s of probing")
print("winner:", v["winner"])
# Time-left estimates against the time actually left (from the log's elapsed stamps).
err = open(f"{work}/tune.err").read()
total = t1 - t0
for m in re.finditer(r"trial (\d+)/(\d+): .* elapsed (\S+?)(?:, ~(\S+) left)?$", err, re.M):
    def secs(s):
        h = re.match(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?", s)
        a, b_, c = (int(x) if x else 0 for x in h.groups())
        return a * 3600 + b_ * 60 + c
    if m.group(4):
        el = secs(m.group(3)); est = secs(m.group(4))
        print(f"  trial {m.group(1)}/{m.group(2)}: ~{est} s left estimated, {total - el:.0f} s actually left")
PY
