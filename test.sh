#!/usr/bin/env bash
# The one test command of caddy-ai-gateway: vet, then every test with the race
# detector, on real SQLite files and an in-process Caddy bound to loopback.
# The dashboard's browser tests drive a headless Chromium; it is installed
# here when missing (Debian/Ubuntu: apt-get install chromium). The
# PostgreSQL tests start a throwaway PostgreSQL server of their own
# (internal/pgtest); its binaries are installed here when missing
# (apt-get install postgresql). CI runs exactly this through .ci/run.
set -euo pipefail
cd "$(dirname "$0")"

if ! command -v go >/dev/null 2>&1; then
	echo "test.sh: go is not on PATH (Go >= 1.26 is required, as go.mod says)" >&2
	exit 1
fi

if ! command -v chromium >/dev/null 2>&1; then
	echo "test.sh: chromium is missing; installing it for the dashboard's browser tests" >&2
	sudo=""
	if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then
		sudo="sudo"
	fi
	$sudo apt-get update
	$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y chromium
fi

pg_installed() {
	command -v initdb >/dev/null 2>&1 || compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null
}
if ! pg_installed; then
	echo "test.sh: postgresql is missing; installing it for the PostgreSQL store's tests" >&2
	sudo=""
	if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then
		sudo="sudo"
	fi
	$sudo apt-get update
	$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y postgresql
fi

# the PostgreSQL tests fail instead of skipping when PostgreSQL is missing
export AIGW_REQUIRE_PG=1
# the browser tests fail instead of skipping when they cannot start chromium
export AI_GATEWAY_REQUIRE_BROWSER=1

go vet ./...
go test -race -count=1 -timeout 20m ./...
# The store's contract tests and the management tests (admin API, CLI,
# lifecycle through an in-process Caddy) once more, on PostgreSQL
# (internal/pgtest starts a throwaway server): the same tests, each on a
# fresh database.
AIGW_TEST_STORE=postgres go test -race -count=1 -timeout 20m ./keystore ./management
