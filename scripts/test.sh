#!/usr/bin/env bash
# README command 2: installs what the tests need (pinned, project-local) and runs every test:
# formatting and lint, unit and router tests, the PostgreSQL backend against a throw-away server, store/queue contract suites (embedded and on moto), Lambda
# event-fixture tests, end-to-end tests against the local broker binary and against the AWS wiring on moto,
# schemathesis fuzzing against the OSB spec, the SAM template checks with the arm64 Lambda build, and the
# documented `cargo lambda watch` steps.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}
start=$(date +%s)

scripts/test-tools.sh

echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> cargo clippy"
cargo clippy --locked --workspace --all-targets -- -D warnings
echo "==> cargo test (unit, router, contract, Lambda events, end-to-end; PostgreSQL backend on a throw-away server)"
# scripts/postgres.sh starts PostgreSQL 15 on loopback (installing it when absent) and exports OSB_PG_*;
# OSB_REQUIRE_POSTGRES=1 makes a PostgreSQL test fail instead of skipping should that server be missing.
OSB_REQUIRE_POSTGRES=1 scripts/postgres.sh run cargo test --locked --workspace
echo "==> schemathesis"
scripts/schemathesis/run.sh
echo "==> AWS deployment checks (cfn-lint, sam validate --lint, template contract, cargo lambda build --arm64, sam build)"
scripts/aws/check.sh
echo "==> cargo lambda watch, as docs/deploy.md describes it"
scripts/aws/watch-test.sh

echo "==> all tests passed in $(( $(date +%s) - start ))s"
