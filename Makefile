# SAM's `BuildMethod: makefile` entry points: `sam build` runs `make build-<LogicalId>` with ARTIFACTS_DIR set,
# once per function. All targets depend on one `cargo lambda build` of the three binaries, so the workspace
# (AWS SDK included) is compiled once: the first target builds, the second finds everything fresh in target/
# and only copies (cargo's lock on target/ also serialises `sam build --parallel`). Needs `cargo lambda` and
# zig on PATH (scripts/aws/tools.sh; PATH="$PWD/.venv-aws/bin:$PATH") and `build_in_source` (samconfig.toml),
# otherwise SAM first copies the whole tree, target/ included, to a scratch directory and builds from cold.
#
#   CATALOG_FILE=path/to/catalog.json sam build     # the catalog to package (default: the demo catalog)

ROOT := $(patsubst %/,%,$(dir $(abspath $(lastword $(MAKEFILE_LIST)))))
CARGO_LAMBDA ?= cargo lambda
CATALOG_FILE ?= shared/catalog/demo.json
# Relative catalog paths are relative to the repository root.
CATALOG := $(if $(filter /%,$(CATALOG_FILE)),$(CATALOG_FILE),$(ROOT)/$(CATALOG_FILE))

.PHONY: lambda-binaries build-ApiFunction build-WorkerFunction build-WebhookFunction

# Profile `release-lambda` (Cargo.toml): release, optimised for size. Without default features the API carries no
# embedded store (it runs on DynamoDB + SQS only) and no HTTP client (only the webhook sender has one), which
# keeps every package under 10 MB.
lambda-binaries:
	cd "$(ROOT)" && $(CARGO_LAMBDA) build --profile release-lambda --arm64 --locked -p osb-api -p osb-worker -p osb-webhooks --no-default-features

build-ApiFunction: lambda-binaries
	$(call package,api)

build-WorkerFunction: lambda-binaries
	$(call package,worker)

build-WebhookFunction: lambda-binaries
	$(call package,webhooks)

# $(1): binary name. The bootstrap and the catalog (OSB_CATALOG_FILE=/var/task/catalog.json) go into the zip.
define package
	@test -n "$(ARTIFACTS_DIR)" || { echo "ARTIFACTS_DIR is not set (sam build sets it)" >&2; exit 1; }
	@test -f "$(CATALOG)" || { echo "catalog not found: $(CATALOG)" >&2; exit 1; }
	mkdir -p "$(ARTIFACTS_DIR)"
	cp "$(ROOT)/target/lambda/$(1)/bootstrap" "$(ARTIFACTS_DIR)/bootstrap"
	cp "$(CATALOG)" "$(ARTIFACTS_DIR)/catalog.json"
endef
