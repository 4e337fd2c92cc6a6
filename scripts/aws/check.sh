#!/usr/bin/env bash
# Offline checks of the AWS deployment: installs the pinned AWS tools (.venv-aws), lints template.yaml
# (cfn-lint, `sam validate --lint`, scripts/aws/check_template.py), builds the three Lambda binaries with one
# `cargo lambda build --profile release-lambda --arm64` (the Makefile's lambda-binaries target), runs `sam build` on top of it
# (makefile build method; must reuse that build), and checks the packages: aarch64 ELF bootstraps, glibc
# no newer than AL2023's 2.34, catalog.json next to them. Needs no AWS account: dummy credentials, no network
# beyond the package registries for the first install.
set -euo pipefail
cd "$(dirname "$0")/../.."
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}

scripts/aws/tools.sh

# The venv first on PATH: cargo-lambda finds zig through this python3 (`python3 -m ziglang`).
export PATH="$PWD/.venv-aws/bin:$PATH"
export AWS_DEFAULT_REGION=us-east-1 AWS_REGION=us-east-1
export AWS_ACCESS_KEY_ID=AKIAIOSFODNN7EXAMPLE AWS_SECRET_ACCESS_KEY=offline-check-dummy-secret
unset AWS_PROFILE AWS_SESSION_TOKEN
export SAM_CLI_TELEMETRY=0 SAM_CLI_CONTACT_TRACKING=0

step_start=0
step() { step_start=$(date +%s); echo "==> aws: $*"; }
done_step() { echo "    ($(( $(date +%s) - step_start ))s)"; }

step "cfn-lint template.yaml"
cfn-lint template.yaml
done_step

step "sam validate --lint"
sam validate --lint --template-file template.yaml
done_step

step "template contract (scripts/aws/check_template.py)"
python3 scripts/aws/check_template.py
done_step

step "cargo lambda build --profile release-lambda --arm64 (api + worker + webhooks, one build)"
make --no-print-directory lambda-binaries
done_step

build_dir=$(mktemp -d)
trap 'rm -rf "$build_dir"' EXIT
step "sam build (makefile build method, reusing that build)"
sam build --template-file template.yaml --build-dir "$build_dir/build" --build-in-source --no-cached
done_step

step "check the Lambda packages"
python3 - "$build_dir/build" <<'EOF'
import json, re, sys
from pathlib import Path

built = Path(sys.argv[1])
EM_AARCH64 = 183
ok = True
for binary, function in (("api", "ApiFunction"), ("worker", "WorkerFunction"), ("webhooks", "WebhookFunction")):
    for path in (Path("target/lambda") / binary / "bootstrap", built / function / "bootstrap"):
        data = path.read_bytes() if path.is_file() else b""
        problems = []
        if not data:
            problems.append("missing")
        elif data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
            problems.append("not a 64-bit little-endian ELF file")
        elif int.from_bytes(data[18:20], "little") != EM_AARCH64:
            problems.append(f"machine {int.from_bytes(data[18:20], 'little')}, not aarch64")
        glibc = max((int(m) for m in re.findall(rb"GLIBC_2\.(\d+)", data)), default=0)
        if glibc > 34:
            problems.append(f"needs GLIBC_2.{glibc}, AL2023 has 2.34")
        print(f"    {path}: {len(data):,} bytes ({len(data) / 1e6:.1f} MB), aarch64 ELF, max GLIBC_2.{glibc}"
              if not problems else f"    {path}: " + "; ".join(problems))
        ok &= not problems
    catalog = built / function / "catalog.json"
    try:
        services = len(json.loads(catalog.read_text())["services"])
        print(f"    {catalog}: {services} services")
    except (OSError, ValueError, KeyError) as e:
        print(f"    {catalog}: not a catalog ({e})")
        ok = False
boots = [built / f / "bootstrap" for f in ("ApiFunction", "WorkerFunction", "WebhookFunction")]
contents = [b.read_bytes() for b in boots if b.is_file()]
if len(set(contents)) != len(contents):
    print("    two functions got the same bootstrap")
    ok = False
# Only the webhook sender carries an HTTP client for platform URLs (reqwest); the API must not.
api_boot = built / "ApiFunction" / "bootstrap"
if api_boot.is_file() and b"reqwest" in api_boot.read_bytes():
    print("    ApiFunction contains reqwest: the webhook sender's HTTP client leaked into the API")
    ok = False
sys.exit(0 if ok else 1)
EOF
done_step

echo "==> aws: all checks passed"
