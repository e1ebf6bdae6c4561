#!/usr/bin/env bash
# Usage-report benchmark: how long the usage reports of the admin API, the
# CLI and the dashboard take on a big ledger.
#
# For each size it builds a database with bench/ledgergen (through the
# store's write path: 20 accounts x 3 keys, 6 models, rows spread over 30
# days) and times the reports with bench/usagebench (median of 5 runs):
#
#   usage --account acct1 --since 24h --by model
#   usage --since 720h --by model            (all accounts)
#   usage --account acct1 --since 720h --by day
#   GET /ai-gateway/usage?account=acct1&limit=5   (all-time total + 5 rows)
#   the dashboard's usage page, 30 and 7 days
#
# Sizes: 1M rows; with --big also 10M (generating it takes several
# minutes). Databases go to $USAGEBENCH_DIR (default a directory under
# ${TMPDIR:-/tmp}) and are made anew each run, so that what the store
# maintains beside the ledger is that of the code under test; --keep reuses
# existing ones. Everything stays on this machine: no network.
#
#   bench/usage.sh            # 1M rows
#   bench/usage.sh --big      # 1M and 10M rows
set -euo pipefail
cd "$(dirname "$0")/.."

sizes=(1000000)
keep=0
for a in "$@"; do
	case "$a" in
	--big) sizes+=(10000000) ;;
	--keep) keep=1 ;;
	*) echo "usage: $0 [--big] [--keep]" >&2; exit 2 ;;
	esac
done

dir=${USAGEBENCH_DIR:-${TMPDIR:-/tmp}/ai-gateway-usagebench}
mkdir -p "$dir"
go build -o "$dir/ledgergen" ./bench/ledgergen
go build -o "$dir/usagebench" ./bench/usagebench

for n in "${sizes[@]}"; do
	db="$dir/ledger-$n.db"
	if [[ $keep == 0 || ! -f $db ]]; then
		rm -f "$db" "$db-wal" "$db-shm" "$db.lock"
		echo "== generating $n rows"
		"$dir/ledgergen" -n "$n" -db "$db"
	fi
	echo "== $n rows"
	"$dir/usagebench" -db "$db"
	echo
done
