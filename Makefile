# Orrery — the two set-up commands are `make run` and `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := help

.PHONY: help run run-reset test test-crash bench abuse agent-hot-code build proto proto-check fmt clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

run: ## Start the whole constellation locally (PostgreSQL under .run/, six services, a demo device) until Ctrl-C
	@Tools/scripts/run-local.sh

run-reset: ## Start over: remove .run/ (database, credentials, the demo device's state), then make run
	@Tools/scripts/pg-throwaway.sh stop .run/pg
	rm -rf .run
	@Tools/scripts/run-local.sh

run-ha: ## make run on a highly available PostgreSQL (Patroni, 3 members, etcd, HAProxy) under .run-ha/, made afresh
	@Deploy/ha/run-ha.sh

test: ## Install what tests need, start a throwaway PostgreSQL, build, run every test
	@Tools/scripts/test.sh

test-crash: ## The whole crash matrix: each service killed -9 at each stage of a paid job (make test runs 5 of its 14 cases)
	@ORRERY_CRASH_MATRIX=all Tools/scripts/test.sh --filter CrashMatrixTests

test-ha: ## A failover of the highly available PostgreSQL under load (Patroni, etcd, HAProxy): kill -9 of the primary member
	@ORRERY_TEST_HA=1 Tools/scripts/test.sh --filter HighAvailabilityTests

bench: ## Measure the hot paths (release build); results in bench-results/ and the README
	@Tools/scripts/bench.sh

abuse: ## Measure what attacks cost (release build): CPU per refused token, a live service under a forged flood; bench-results/abuse.md
	@Tools/scripts/abuse.sh

agent-hot-code: ## Profile the release device agent (valgrind) and rewrite the order lld packs its hot code in
	@Tools/scripts/agent-hot-code.sh

build: ## Build every executable (debug)
	swift build

proto: ## Regenerate Shared/OrreryProto/Generated from Protos/ (protoc + plugins built from this package)
	swift build --product protoc-gen-swift
	swift build --product protoc-gen-grpc-swift-2
	Tools/scripts/generate-protos.sh Shared/OrreryProto/Generated

proto-check: ## Fail when regenerating the protobuf code would change it
	Tools/scripts/check-protos.sh

fmt: ## Format the Swift sources (generated code excluded)
	find Package.swift Services Shared Tools Tests -name '*.swift' -not -path '*/Generated/*' -print0 \
		| xargs -0 swift format format --in-place --parallel

clean: ## Remove build products and local run data
	rm -rf .build .run .venv-test
