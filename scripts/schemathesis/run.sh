#!/usr/bin/env bash
# Fuzzes the local broker with schemathesis against the official OSB 2.17 Swagger file (a copy in this
# folder), twice: as published, and with service/plan/instance ids focused on the demo catalog so that
# generated requests reach provisioning, binding and polling. Checks: no 5xx, only documented status
# codes, response bodies and content types as the spec describes them. Loopback only.
set -euo pipefail
cd "$(dirname "$0")/../.."
seconds=${SCHEMATHESIS_SECONDS:-60}
bin=${OSB_BROKER_BIN:-target/debug/osb-broker}
[ -x "$bin" ] || cargo build --locked -p osb-local --bin osb-broker
work=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$work"' EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat > "$work/broker.toml" <<TOML
listen = "127.0.0.1:$port"
data_dir = "$work/data"
[[tenants]]
name = "fuzz"
username = "fuzz"
password = "fuzz-password"
TOML
"$bin" --config "$work/broker.toml" > "$work/broker.log" 2>&1 &
pid=$!
python3 - "$port" <<'PY'
import base64, sys, time, urllib.request
url = f"http://127.0.0.1:{sys.argv[1]}/v2/catalog"
auth = "Basic " + base64.b64encode(b"fuzz:fuzz-password").decode()
for _ in range(300):
    try:
        req = urllib.request.Request(url, headers={"Authorization": auth, "X-Broker-API-Version": "2.17"})
        if urllib.request.urlopen(req, timeout=1).status == 200:
            sys.exit(0)
    except Exception:
        time.sleep(0.1)
sys.exit("the broker did not start")
PY
.venv/bin/python scripts/schemathesis/focus_spec.py scripts/schemathesis/osb-swagger.yaml "$work/focused.yaml"
status=0
for spec in scripts/schemathesis/osb-swagger.yaml "$work/focused.yaml"; do
  echo "==> schemathesis: $(basename "$spec") for ${seconds}s"
  .venv/bin/schemathesis run "$spec" \
    --url "http://127.0.0.1:$port" \
    --auth fuzz:fuzz-password \
    --header 'X-Broker-API-Version: 2.17' \
    --checks not_a_server_error,status_code_conformance,response_schema_conformance,content_type_conformance \
    --max-time "$seconds" \
    --workers 2 \
    --no-color || status=$?
done
if ! kill -0 "$pid" 2>/dev/null; then
  echo "the broker died during fuzzing:"; tail -50 "$work/broker.log"; exit 1
fi
if grep -q "panicked" "$work/broker.log"; then
  echo "the broker panicked during fuzzing:"; grep -A5 panicked "$work/broker.log"; exit 1
fi
exit "$status"
