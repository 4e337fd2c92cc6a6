#!/usr/bin/env bash
# Runs docs/deploy.md's "cargo lambda watch" steps exactly, so they cannot rot: a moto server on a free loopback
# port, the local resources (scripts/aws/local-resources.py), the API function under
# `cargo lambda watch -A 127.0.0.1 -P <port>`, and curl of the catalog with the local tenant's credentials
# (200 with the catalog expected). Then it stops both. Needs scripts/test-tools.sh and scripts/aws/tools.sh.
set -euo pipefail
cd "$(dirname "$0")/../.."
export PATH="$PWD/.venv-aws/bin:$PATH"
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do pkill -TERM -P "$p" 2>/dev/null || true; kill "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

moto_port=$(free_port)
.venv/bin/moto_server -H 127.0.0.1 -p "$moto_port" > "$work/moto.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do
  python3 -c "import socket,sys; socket.create_connection(('127.0.0.1', $moto_port), 0.2)" 2>/dev/null && break
  sleep 0.1
done

.venv-aws/bin/python scripts/aws/local-resources.py "http://127.0.0.1:$moto_port" > "$work/local-aws.env" 2> "$work/creds"
set -a; . "$work/local-aws.env"; set +a
user=$(sed -n 's/.*username \([^,]*\), password \(.*\)$/\1/p' "$work/creds")
pass=$(sed -n 's/.*username \([^,]*\), password \(.*\)$/\2/p' "$work/creds")
[ -n "$user" ] && [ -n "$pass" ] || { echo "no tenant credentials from local-resources.py"; exit 1; }

watch_port=$(free_port)
# setsid: watch and the `cargo run` it starts form one process group, stopped together.
setsid cargo lambda watch -A 127.0.0.1 -P "$watch_port" > "$work/watch.log" 2>&1 &
pids+=($!)
url="http://127.0.0.1:$watch_port/lambda-url/api/v2/catalog"
# The first request starts `cargo run --bin api` (a build when needed): allow a few minutes.
status=000
for _ in $(seq 1 60); do
  status=$(curl -s -o "$work/catalog.json" -w '%{http_code}' --max-time 10 \
    -u "$user:$pass" -H 'X-Broker-API-Version: 2.17' "$url" || true)
  [ "$status" = 200 ] && break
  sleep 5
done
if [ "$status" != 200 ]; then
  echo "cargo lambda watch: GET /v2/catalog answered $status"; tail -40 "$work/watch.log"; exit 1
fi
python3 - "$work/catalog.json" <<'PY'
import json, sys
services = json.load(open(sys.argv[1]))["services"]
assert services and all("plans" in s for s in services), services
print(f"    catalog through cargo lambda watch: {len(services)} services")
PY
# Wrong credentials are refused through the same path.
bad=$(curl -s -o /dev/null -w '%{http_code}' -u "$user:wrong" -H 'X-Broker-API-Version: 2.17' "$url")
[ "$bad" = 401 ] || { echo "wrong credentials answered $bad, not 401"; exit 1; }
kill -TERM -- "-${pids[1]}" 2>/dev/null || true
echo "    cargo lambda watch steps of docs/deploy.md: OK"
