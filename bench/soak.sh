#!/usr/bin/env bash
# Soak test of the gateway: load plus reloads, SIGKILLs and a full disk,
# then a check of the ledger against what the clients saw. It runs
# bench/soak (see its package comment) with the gateway's database on a
# small tmpfs of its own, so that filling that file system makes the
# ledger's commits fail (ENOSPC) without touching anything else.
#
# Everything listens on 127.0.0.1. Mounting the tmpfs needs root; without
# it the database goes to a plain directory and the disk-full phase is
# skipped (the script says so loudly).
#
# Usage:   bench/soak.sh
# Env:     DURATION   length of the load and disturbances   (default 5m, at most 30m)
#          DURABLE    1: durable_billing on, 0: off          (default 1)
#          INTERVAL   time between two disturbances          (default 3s)
#          FILL_HOLD  how long the disk stays full           (default 4s)
#          WORKERS    concurrent clients                     (default 16)
#          RATE       requests per second, at most           (default 200)
#          TMPFS_SIZE size of the database's tmpfs           (default 64m)
#          KEEP       1: keep the work directory (caddy logs, configs, database;
#                     kept anyway when the soak fails)
#
# Exit status: 0 PASS, 1 FAIL, 2 the soak could not run.
set -euo pipefail

DURATION=${DURATION:-5m}
DURABLE=${DURABLE:-1}
INTERVAL=${INTERVAL:-3s}
FILL_HOLD=${FILL_HOLD:-4s}
WORKERS=${WORKERS:-16}
RATE=${RATE:-200}
TMPFS_SIZE=${TMPFS_SIZE:-64m}
KEEP=${KEEP:-0}

cd "$(dirname "$0")/.."

case $DURABLE in
1 | on | true) durable=true ;;
0 | off | false) durable=false ;;
*) echo "soak.sh: DURABLE must be 1 or 0, got '$DURABLE'" >&2; exit 2 ;;
esac

WORK=$(mktemp -d "${TMPDIR:-/tmp}/soak.XXXXXX")
DBDIR=$WORK/db
mkdir -m 0700 "$DBDIR"
mounted=0
cleanup() {
	if [ "$mounted" = 1 ]; then
		umount "$DBDIR" || echo "soak.sh: could not unmount $DBDIR" >&2
	fi
	if [ "$KEEP" = 1 ]; then
		echo "soak.sh: work directory kept: $WORK"
	else
		rm -rf "$WORK"
	fi
}
trap cleanup EXIT

diskfull=true
if mount -t tmpfs -o "size=$TMPFS_SIZE,mode=0700" tmpfs "$DBDIR" 2>"$WORK/mount.err"; then
	mounted=1
	echo "soak.sh: database on a $TMPFS_SIZE tmpfs at $DBDIR"
else
	diskfull=false
	echo "################################################################" >&2
	echo "soak.sh: WARNING: could not mount a tmpfs on $DBDIR:" >&2
	sed 's/^/soak.sh:   /' "$WORK/mount.err" >&2
	echo "soak.sh: the database goes to a plain directory and the" >&2
	echo "soak.sh: DISK-FULL PHASE IS SKIPPED (run as root to include it)." >&2
	echo "################################################################" >&2
fi

go build -o "$WORK/soak" ./bench/soak
status=0
"$WORK/soak" -duration "$DURATION" -durable=$durable -diskfull=$diskfull \
	-interval "$INTERVAL" -fill-hold "$FILL_HOLD" -workers "$WORKERS" -rate "$RATE" \
	-dbdir "$DBDIR" -workdir "$WORK" -max-duration 30m || status=$?
if [ "$status" != 0 ]; then
	KEEP=1 # the caddy logs are what explains a failure
fi
exit $status
