#!/usr/bin/env bash
# The one test command of caddy-ai-gateway: vet, then every test with the race
# detector, on real SQLite files and an in-process Caddy bound to loopback.
# CI runs exactly this through .ci/run.
set -euo pipefail
cd "$(dirname "$0")"

if ! command -v go >/dev/null 2>&1; then
	echo "test.sh: go is not on PATH (Go >= 1.25 is required)" >&2
	exit 1
fi

go vet ./...
go test -race -count=1 -timeout 20m ./...
