#!/usr/bin/env bash
# Installs the AWS build/deploy tools (scripts/requirements-aws.txt: aws-sam-cli, cfn-lint, cargo-lambda,
# ziglang), pinned, into the project-local virtualenv .venv-aws, and the aarch64 Rust target that
# `cargo lambda build --arm64` needs. Re-installs only when the requirements change.
# Use the tools with the venv first on PATH (zig is found through its `python3 -m ziglang`):
#   PATH="$PWD/.venv-aws/bin:$PATH" cargo lambda build --release --arm64
set -euo pipefail
cd "$(dirname "$0")/../.."
req=scripts/requirements-aws.txt
venv=.venv-aws
stamp=$venv/.requirements.sha256
want=$(sha256sum "$req" | cut -d' ' -f1)
if ! { [ -x $venv/bin/python ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; }; then
  echo "==> installing pinned AWS tools into $venv"
  python3 -m venv $venv
  $venv/bin/python -m pip install --quiet --disable-pip-version-check -r "$req"
  echo "$want" > "$stamp"
fi

# The toolchain comes from rust-toolchain.toml; its aarch64 standard library is a separate rustup component.
target=aarch64-unknown-linux-gnu
if command -v rustup >/dev/null && ! rustup target list --installed | grep -qx "$target"; then
  echo "==> rustup target add $target"
  rustup target add "$target"
fi
