#!/usr/bin/env bash
# benchstack's load generator as the EXTRA tool in the shared anchors harness
# (nginx on CPU 0, every generator on CPU 1; see ../../../shared/bench/anchors/README.md).
#
#   cargo build --release && bench/loadgen/anchors.sh
#   ROUNDS=1 RATE_ROUNDS=1 SAT_TOOLS=wrk RATE_TOOLS=hey bench/loadgen/anchors.sh   # quicker
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
ANCHORS="${ANCHORS:-$REPO/../shared/bench/anchors}"
[ -x "$ANCHORS/run.sh" ] || ANCHORS=/work/shared/bench/anchors
BIN="${BIN:-${CARGO_TARGET_DIR:-$REPO/target}/release/benchstack}"
[ -x "$BIN" ] || { echo "build it first: cargo build --release (looked for $BIN)" >&2; exit 1; }
export EXTRA_NAME=benchstack
# Single-quoted parts are expanded by run.sh for each run ($HOSTURL, $BODY, $SAT_CONNS, ...).
export EXTRA_SAT_CMD="$BIN"' loadtest $HOSTURL --model regression --request $BODY --rate max --connections $SAT_CONNS --duration ${SAT_SECS}s --quiet --anchor-line'
export EXTRA_RATE_CMD="$BIN"' loadtest $HOSTURL --model regression --request $BODY --rate $RATE --connections $RATE_CONNS --duration ${RATE_SECS}s --quiet --anchor-line'
exec "$ANCHORS/run.sh"
