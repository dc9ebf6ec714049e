#!/usr/bin/env bash
# benchstack's load generator as the EXTRA tool in the shared anchors harness
# (nginx on CPU 0, every generator on CPU 1; see ../../../shared/bench/anchors/README.md).
#
#   cargo build --release && bench/loadgen/anchors.sh
#   ROUNDS=1 RATE_ROUNDS=1 SAT_TOOLS=wrk RATE_TOOLS=hey bench/loadgen/anchors.sh   # quicker
#   BEFORE=/path/to/older/benchstack ROUNDS=0 RATE_TOOLS="hey oha" bench/loadgen/anchors.sh
#
# BEFORE adds a second binary as the tool `benchstack_before` to the same interleaved rounds,
# so a change is measured against the binary it replaces in one run (the harness itself takes
# one extra tool: it runs from a copy with a second one added). The fixed-rate runs of both
# also print `--json` (kept in the harness's raw output), for the generator-lag figures.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
ANCHORS="${ANCHORS:-$REPO/../shared/bench/anchors}"
[ -x "$ANCHORS/run.sh" ] || ANCHORS=/work/shared/bench/anchors
BIN="${BIN:-${CARGO_TARGET_DIR:-$REPO/target}/release/benchstack}"
[ -x "$BIN" ] || { echo "build it first: cargo build --release (looked for $BIN)" >&2; exit 1; }
export EXTRA_NAME=benchstack
# Single-quoted parts are expanded by run.sh for each run ($HOSTURL, $BODY, $SAT_CONNS, ...).
SAT=' loadtest $HOSTURL --model regression --request $BODY --rate max --connections $SAT_CONNS --duration ${SAT_SECS}s --quiet --anchor-line'
RATE_ARGS=' loadtest $HOSTURL --model regression --request $BODY --rate $RATE --connections $RATE_CONNS --duration ${RATE_SECS}s --quiet --anchor-line --json'
export EXTRA_SAT_CMD="$BIN$SAT"
export EXTRA_RATE_CMD="$BIN$RATE_ARGS"
if [ -z "${BEFORE:-}" ]; then
  exec "$ANCHORS/run.sh"
fi
[ -x "$BEFORE" ] || { echo "BEFORE=$BEFORE is not an executable" >&2; exit 1; }
export EXTRA2_NAME=benchstack_before EXTRA2_SAT_CMD="$BEFORE$SAT" EXTRA2_RATE_CMD="$BEFORE$RATE_ARGS"
COPY="$(mktemp -d)"
trap 'rm -rf "$COPY"' EXIT
cp -a "$ANCHORS/." "$COPY/"
# The second tool goes in right after the harness's own EXTRA block.
awk '/^NGINX_PID=""; WORKER=""/ {
  print "if [ -n \"${EXTRA2_NAME:-}\" ]; then"
  print "  PARSE[$EXTRA2_NAME]=anchor"
  print "  if [ -n \"${EXTRA2_SAT_CMD:-}\" ]; then SAT_CMD[$EXTRA2_NAME]=\"$EXTRA2_SAT_CMD\"; SAT_TOOLS=\"$SAT_TOOLS $EXTRA2_NAME\"; fi"
  print "  if [ -n \"${EXTRA2_RATE_CMD:-}\" ]; then RATE_CMD[$EXTRA2_NAME]=\"$EXTRA2_RATE_CMD\"; RATE_TOOLS=\"$RATE_TOOLS $EXTRA2_NAME\"; fi"
  print "fi"
} { print }' "$ANCHORS/run.sh" > "$COPY/run.sh"
grep -q EXTRA2_NAME "$COPY/run.sh" || { echo "could not add BEFORE to $ANCHORS/run.sh" >&2; exit 1; }
chmod +x "$COPY/run.sh"
"$COPY/run.sh"
# Generator lag and service time of the fixed-rate runs (from their --json reports).
python3 - "${WORK:-${TMPDIR:-/tmp}/benchstack-anchors}/results/latest/raw" <<'EOF'
import glob, json, os, sys
print(f"{'run':<28}{'lat p50':>9}{'lat p99':>9}{'svc p50':>9}{'svc p99':>9}{'lag p50':>9}{'lag p99':>9}{'lag max':>9}  bottleneck")
for p in sorted(glob.glob(os.path.join(sys.argv[1], "rate_*_benchstack*.out"))):
    try:
        text = "".join(l for l in open(p) if not l.startswith("ANCHOR "))
        s = json.loads(text)["stages"][0]
    except (OSError, ValueError, KeyError, IndexError):
        continue
    l, v, g = s["latency_ms"], s["service_time_ms"], s["generator_lag_ms"]
    print(f"{os.path.basename(p)[:-4]:<28}{l['p50']:>9.3f}{l['p99']:>9.3f}{v['p50']:>9.3f}{v['p99']:>9.3f}"
          f"{g['p50']:>9.3f}{g['p99']:>9.3f}{g['max']:>9.3f}  {s.get('bottleneck') or '-'}")
EOF
