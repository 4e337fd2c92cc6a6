#!/usr/bin/env bash
# The upstream proxy's cost (issue 11): the same load generator against one broker with the demo catalog
# (simulated, synchronous plan `small`) directly, and through a second broker that fronts it as
# [upstream_brokers.up]. Both brokers are release builds on 127.0.0.1 with temporary data directories; the
# two are killed at the end. ROUNDS (default 2) alternates direct and proxied runs.
#   scripts/bench-proxy.sh [ROUNDS] [SECONDS] [CONNECTIONS] [SCENARIOS]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-2}
seconds=${2:-5}
connections=${3:-16}
scenarios=${4:-provision_cycle,full_cycle}
# OSB_BENCH_NO_BUILD=1: use the release binaries already built.
[ "${OSB_BENCH_NO_BUILD:-}" = 1 ] || cargo build --release -p osb-local -p osb-bench >&2
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
password=$(python3 -c 'import secrets; print(secrets.token_hex(16))')
up_port=$(free_port)
proxy_port=$(free_port)
tenant="[[tenants]]
name = \"bench\"
username = \"bench\"
password = \"$password\""
mkdir -p "$work/up" "$work/proxy"
printf 'listen = "127.0.0.1:%s"\ndata_dir = "%s/up/data"\n\n%s\n' "$up_port" "$work" "$tenant" > "$work/up/broker.toml"
printf 'listen = "127.0.0.1:%s"\ndata_dir = "%s/proxy/data"\n\n[upstream_brokers.up]\nurl = "http://127.0.0.1:%s"\nusername = "bench"\npassword = "%s"\n\n%s\n' \
  "$proxy_port" "$work" "$up_port" "$password" "$tenant" > "$work/proxy/broker.toml"
wait_up() {
  for _ in $(seq 1 200); do
    if curl -sf -u "bench:$password" -H 'X-Broker-API-Version: 2.17' "http://127.0.0.1:$1/v2/catalog" >/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "broker on port $1 did not start" >&2; return 1
}
RUST_LOG=warn target/release/osb-broker --config "$work/up/broker.toml" >"$work/up/log" 2>&1 & pids+=($!)
wait_up "$up_port"
RUST_LOG=warn target/release/osb-broker --config "$work/proxy/broker.toml" >"$work/proxy/log" 2>&1 & pids+=($!)
wait_up "$proxy_port"
export OSB_BENCH_USER=bench OSB_BENCH_PASSWORD=$password
for round in $(seq 1 "$rounds"); do
  echo "== round $round: direct (upstream broker alone), load $(cut -d' ' -f1-3 /proc/loadavg)"
  target/release/osb-bench --url "http://127.0.0.1:$up_port" --seconds "$seconds" --connections "$connections" \
    --scenarios "$scenarios" 2>&1 | grep '^|'
  echo "== round $round: proxied (the same upstream behind the proxy), load $(cut -d' ' -f1-3 /proc/loadavg)"
  target/release/osb-bench --url "http://127.0.0.1:$proxy_port" --via-upstream up --seconds "$seconds" \
    --connections "$connections" --scenarios "$scenarios" 2>&1 | grep '^|'
done
