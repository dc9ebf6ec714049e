#!/usr/bin/env bash
# gRPC (and REST) saturation of `benchstack loadtest` against `benchstack serve` with the
# example model: the server pinned to CPU 0, the generator to CPU 1, CPU seconds per 10k
# requests from /usr/bin/time. Both are the release build.
#
#   cargo build --release && bench/loadgen/grpc.sh        # SECS=10 CONNS=64 by default
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
BIN="${BIN:-${CARGO_TARGET_DIR:-$REPO/target}/release/benchstack}"
: "${SECS:=10}" "${CONNS:=64}" "${INFLIGHT:=64}" "${SERVER_CPU:=0}" "${GEN_CPU:=1}"
OUT="$(mktemp -d)"
taskset -c "$SERVER_CPU" "$BIN" serve --port 0 --rest_api_port 0 --model_name regression \
    --model_base_path "$REPO/examples/model/regression" >"$OUT/ready" 2>"$OUT/serve.log" &
SERVE=$!
trap 'kill $SERVE 2>/dev/null; wait $SERVE 2>/dev/null; rm -rf "$OUT"' EXIT
for _ in $(seq 100); do [ -s "$OUT/ready" ] && break; sleep 0.1; done
GRPC=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["grpc_port"])' "$OUT/ready")
REST=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["rest_port"])' "$OUT/ready")
printf '%-6s %10s %8s %10s %8s %8s\n' proto rps p50_ms p99_ms cpu_s CPU-s/10k
for proto in grpc rest; do
  if [ $proto = grpc ]; then T="grpc://127.0.0.1:$GRPC"; else T="http://127.0.0.1:$REST"; fi
  taskset -c "$GEN_CPU" /usr/bin/time -f '%U %S %M' -o "$OUT/time" "$BIN" loadtest "$T" \
      --model regression --request "$REPO/examples/requests/regression.json" --rate max \
      --connections "$CONNS" --max-in-flight "$INFLIGHT" --duration "${SECS}s" --quiet --anchor-line >"$OUT/anchor"
  read -r U S M < "$OUT/time"
  A=$(cat "$OUT/anchor")
  REQ=$(sed -E 's/.*requests=([0-9]+).*/\1/' <<<"$A")
  awk -v p=$proto -v a="$A" -v u="$U" -v s="$S" -v r="$REQ" -v m="$M" 'BEGIN{
    split(a, f, /[ =]/); printf "%-6s %10s %8s %10s %8.2f %8.3f  (RSS %d MB)\n", p, f[5], f[7], f[9], u+s, (u+s)/r*10000, m/1024 }'
done
