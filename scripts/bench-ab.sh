#!/usr/bin/env bash
# A/B benchmark of two broker binaries on the same generator: runs osb-bench against OLD and NEW alternately,
# ROUNDS times (default 3), and prints each round's table rows. Build the two binaries the same way, e.g.
#   git worktree add --detach /tmp/old <commit> && (cd /tmp/old && cargo build --release -p osb-local)
#   cargo build --release -p osb-local -p osb-bench
#   scripts/bench-ab.sh /tmp/old/target/release/osb-broker target/release/osb-broker
set -euo pipefail
cd "$(dirname "$0")/.."
old=${1:?usage: scripts/bench-ab.sh OLD_BROKER_BIN NEW_BROKER_BIN [ROUNDS] [SCENARIOS]}
new=${2:?usage: scripts/bench-ab.sh OLD_BROKER_BIN NEW_BROKER_BIN [ROUNDS] [SCENARIOS]}
rounds=${3:-3}
scenarios=${4:-catalog,last_operation,provision_cycle,full_cycle}
for round in $(seq 1 "$rounds"); do
  for which in old new; do
    bin=$old; [ "$which" = new ] && bin=$new
    echo "== round $round: $which ($bin), load $(cut -d' ' -f1-3 /proc/loadavg)"
    target/release/osb-bench --broker-bin "$bin" --seconds 5 --scenarios "$scenarios" 2>&1 | grep '^| [a-z]'
  done
done
