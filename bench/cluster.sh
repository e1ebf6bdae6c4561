#!/usr/bin/env bash
# Several-instances benchmark: two gateway instances on one PostgreSQL
# against one instance on SQLite, on the same machine, behind the same mock
# provider (bench/mockprovider), measured by bench/clusterbench:
#
#   (a) 1,000 accounts, one key each, used in turn;
#   (b) one hot account (one key);
#
# for each: throughput under CONNECTIONS clients (spread round robin over the
# instances), and latency below saturation (one client) minus the latency of
# the mock alone at the same load (added p99). With two instances it also
# times REVOCATIONS deletions: a key deleted through the first instance's
# admin API until the second answers 401 (p50, p99).
#
# PostgreSQL runs from a temporary directory (initdb, as the postgres user
# when run as root) with its durable defaults (fsync on, synchronous_commit
# on), on a Unix socket. Both setups use the gateway's defaults (durable
# billing on; on PostgreSQL lease mode, lease 1.00, revocation staleness 1s).
# LEASE=0 runs the PostgreSQL instances in exact mode instead.
#
# Usage:   bench/cluster.sh
# Env:     DURATION      length of each measured run  (default 10s)
#          CONNECTIONS   clients of the throughput runs (default 32)
#          REVOCATIONS   deletions timed               (default 100)
#          LEASE         lease setting on PostgreSQL   (default 1.00)
#          SKIP_BUILD    1: use the existing ./caddy   (default 0)
#          BASE_PORT     first of 8 loopback ports     (default 18300)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-32}
REVOCATIONS=${REVOCATIONS:-100}
LEASE=${LEASE:-1.00}
BASE_PORT=${BASE_PORT:-18300}
MOCK_PORT=$BASE_PORT
PG_PORT=$((BASE_PORT + 1))

WORK=$(mktemp -d /tmp/aigw-cluster-bench-XXXXXX)
chmod 755 "$WORK"
RESULTS="$ROOT/bench/results/cluster-$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$RESULTS"
PIDS=()
PG_BIN=""
PG_USER=()

die() {
	echo "bench/cluster.sh: $*" >&2
	exit 1
}

cleanup() {
	local p
	for p in "${PIDS[@]}"; do
		kill "$p" 2>/dev/null || true
	done
	for p in "${PIDS[@]}"; do
		wait "$p" 2>/dev/null || true
	done
	if [ -n "$PG_BIN" ] && [ -d "$WORK/pg" ]; then
		"${PG_USER[@]}" "$PG_BIN/pg_ctl" -D "$WORK/pg" -m immediate stop >/dev/null 2>&1 || true
	fi
	rm -rf "$WORK"
}
trap cleanup EXIT

# --- build -----------------------------------------------------------------
if [ "${SKIP_BUILD:-0}" != 1 ]; then
	go build -o "$ROOT/caddy" ./internal/testcaddy
fi
go build -o "$WORK/mockprovider" ./bench/mockprovider
go build -o "$WORK/clusterbench" ./bench/clusterbench

"$WORK/mockprovider" -addr "127.0.0.1:$MOCK_PORT" 2>"$RESULTS/mock.log" &
PIDS+=($!)

wait_for() { # url
	local i
	for i in $(seq 1 200); do
		if curl -s -o /dev/null "$1"; then
			return 0
		fi
		sleep 0.1
	done
	die "timed out waiting for $1"
}

# start_gateway NAME DATABASE ADMIN_PORT SITE_PORT
start_gateway() {
	local name=$1 db=$2 admin=$3 site=$4
	cat >"$WORK/Caddyfile-$name" <<EOF
{
	admin 127.0.0.1:$admin
	persist_config off
	ai_gateway {
		database "$db"
		lease $LEASE
	}
}

http://127.0.0.1:$site {
	bind 127.0.0.1
	api_key_auth
	balance_guard {
		price bench input 1.00 output 2.00
		unknown_model reject
	}
	reverse_proxy 127.0.0.1:$MOCK_PORT {
		header_up Authorization "Bearer provider-key"
	}
}
EOF
	env XDG_DATA_HOME="$WORK/data-$name" XDG_CONFIG_HOME="$WORK/config-$name" \
		"$ROOT/caddy" run --config "$WORK/Caddyfile-$name" --adapter caddyfile >"$RESULTS/caddy-$name.log" 2>&1 &
	PIDS+=($!)
	wait_for "http://127.0.0.1:$admin/config/"
}

stop_gateways() {
	local p
	for p in "${PIDS[@]:1}"; do
		kill "$p" 2>/dev/null || true
		wait "$p" 2>/dev/null || true
	done
	PIDS=("${PIDS[0]}")
}

# run LABEL ACCOUNTS SITES ADMINS
run() {
	local label=$1 accounts=$2 sites=$3 admins=$4 revocations=0
	if [[ $sites == *,* ]]; then
		revocations=$REVOCATIONS
	fi
	echo "== $label" >&2
	"$WORK/clusterbench" -label "$label" -accounts "$accounts" -sites "$sites" -admins "$admins" \
		-mock "http://127.0.0.1:$MOCK_PORT" -connections "$CONNECTIONS" -duration "$DURATION" \
		-revocations "$revocations" | tee -a "$RESULTS/results.txt"
}

wait_for "http://127.0.0.1:$MOCK_PORT/v1/models"

# --- one instance on SQLite ------------------------------------------------
for case in "accounts1000 1000" "hot 1"; do
	set -- $case
	rm -f "$WORK"/sqlite.db*
	start_gateway s "$WORK/sqlite-$1.db" $((BASE_PORT + 2)) $((BASE_PORT + 3))
	run "sqlite.$1" "$2" "http://127.0.0.1:$((BASE_PORT + 3))" "http://127.0.0.1:$((BASE_PORT + 2))"
	stop_gateways
done

# --- two instances on PostgreSQL -------------------------------------------
if command -v initdb >/dev/null 2>&1; then
	PG_BIN=$(dirname "$(readlink -f "$(command -v initdb)")")
else
	PG_BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
fi
[ -x "$PG_BIN/initdb" ] || die "PostgreSQL (initdb, pg_ctl) not found"
if [ "$(id -u)" = 0 ]; then
	PG_USER=(runuser -u postgres --)
	chown postgres "$WORK"
fi
"${PG_USER[@]}" "$PG_BIN/initdb" -D "$WORK/pg" -A trust -U postgres >"$RESULTS/initdb.log" 2>&1
"${PG_USER[@]}" "$PG_BIN/pg_ctl" -D "$WORK/pg" -l "$WORK/pg.log" -w \
	-o "-k $WORK -c listen_addresses= -p $PG_PORT -c max_connections=100" start >/dev/null

for case in "accounts1000 1000" "hot 1"; do
	set -- $case
	"${PG_USER[@]}" psql -h "$WORK" -p "$PG_PORT" -U postgres -qc "CREATE DATABASE bench_$1" postgres
	dsn="postgres://postgres@/bench_$1?host=$WORK&port=$PG_PORT"
	start_gateway a "$dsn" $((BASE_PORT + 4)) $((BASE_PORT + 5))
	start_gateway b "$dsn" $((BASE_PORT + 6)) $((BASE_PORT + 7))
	run "postgres2.$1" "$2" "http://127.0.0.1:$((BASE_PORT + 5)),http://127.0.0.1:$((BASE_PORT + 7))" \
		"http://127.0.0.1:$((BASE_PORT + 4)),http://127.0.0.1:$((BASE_PORT + 6))"
	stop_gateways
done

echo "results in $RESULTS/results.txt" >&2
