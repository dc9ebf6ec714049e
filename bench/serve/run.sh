#!/usr/bin/env bash
# Throughput and latency of `benchstack serve` on this machine: batching off and on, 1 and 32
# rows per request, REST, measured with wrk (closed loop at saturation; its latency figures
# are service times). Server pinned to CPU 0, wrk to CPU 1 where there are two.
#
#   cargo build --release && bench/serve/run.sh          # ~2 minutes
#
# Prints one line per configuration; results/ keeps the raw wrk output.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
bin="${BENCHSTACK:-$root/target/release/benchstack}"
secs="${SECS:-10}"; conns="${CONNS:-16}"
out="$here/results/$(date +%Y%m%d-%H%M%S)"; mkdir -p "$out"
command -v wrk >/dev/null || { echo "needs wrk (apt-get install wrk)"; exit 1; }

python3 - "$root" "$out" <<'PY'
import json, sys
root, out = sys.argv[1], sys.argv[2]
rows = json.load(open(f"{root}/examples/model/expected.json"))["instances"]
for n in (1, 32):
    body = {"instances": [rows[i % len(rows)] for i in range(n)]}
    open(f"{out}/body{n}.json", "w").write(json.dumps(body))
open(f"{out}/batching.txt", "w").write(
    "max_batch_size { value: 256 }\nbatch_timeout_micros { value: 1000 }\n"
    "max_enqueued_batches { value: 1000 }\nnum_batch_threads { value: 1 }\n")
PY

cat > "$out/post.lua" <<'LUA'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local f = io.open(os.getenv("BODY"), "r"); wrk.body = f:read("*a"); f:close()
LUA

printf "%-10s %-5s %10s %9s %9s\n" batching rows "req/s" "p50 ms" "p99 ms"
for batching in off on; do
  flags=()
  [ "$batching" = on ] && flags=(--enable_batching --batching_parameters_file "$out/batching.txt")
  taskset -c 0 "$bin" serve --model_name regression --model_base_path "$root/examples/model/regression" \
    --port 0 --rest_api_port 0 --rest_api_num_threads 1 --tensorflow_inter_op_parallelism 1 "${flags[@]}" \
    > "$out/ready-$batching.json" 2> "$out/serve-$batching.log" &
  pid=$!
  for _ in $(seq 100); do [ -s "$out/ready-$batching.json" ] && break; sleep 0.1; done
  port=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['rest_port'])" "$out/ready-$batching.json")
  for rows in 1 32; do
    BODY="$out/body$rows.json" taskset -c 1 wrk -t1 -c"$conns" -d"${secs}s" -s "$out/post.lua" --latency \
      "http://127.0.0.1:$port/v1/models/regression:predict" > "$out/wrk-$batching-$rows.txt"
    python3 - "$out/wrk-$batching-$rows.txt" "$batching" "$rows" <<'PY'
import re, sys
t = open(sys.argv[1]).read()
def ms(label):
    m = re.search(rf"^\s*{label}\s+([\d.]+)(us|ms|s)\b", t, re.M)
    if not m: return float("nan")
    v, u = float(m.group(1)), m.group(2)
    return v / 1000 if u == "us" else v * 1000 if u == "s" else v
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", t).group(1))
print(f"{sys.argv[2]:<10} {sys.argv[3]:<5} {rps:10.0f} {ms('50%'):9.2f} {ms('99%'):9.2f}")
PY
  done
  kill -TERM "$pid"; wait "$pid" || true
done
