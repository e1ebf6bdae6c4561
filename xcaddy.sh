#!/usr/bin/env bash
# Builds Caddy with the caddy-ai-gateway modules into ./caddy.
#
#   ./xcaddy.sh              build ./caddy
#   ./xcaddy.sh run [ARGS]   build, then run Caddyfile.example (extra ARGS are
#                            passed to `caddy run`)
#
# Environment:
#   CADDY_VERSION   Caddy version to build (default v2.11.9, the one go.mod uses)
#   XCADDY          xcaddy command to use (default: xcaddy from PATH if present,
#                   else the version pinned in tools/go.mod via `go tool`)
#
# xcaddy is pinned in tools/go.mod, a separate module, so that it never enters
# the dependency graph of projects that import these modules. The first build
# downloads and compiles Caddy (a few minutes on 2 cores); later builds are
# served from Go's build cache.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")"
ROOT=$(pwd)

CADDY_VERSION=${CADDY_VERSION:-v2.11.9}
MIN_GO_MAJOR=1
MIN_GO_MINOR=26

die() {
	echo "xcaddy.sh: $*" >&2
	exit 1
}

# --- prerequisites ---------------------------------------------------------
if ! command -v go >/dev/null 2>&1; then
	die "go is not on PATH. Install Go >= ${MIN_GO_MAJOR}.${MIN_GO_MINOR} from https://go.dev/dl/ and try again."
fi
# GOVERSION reflects the toolchain that will actually run here (Go may switch
# to a newer toolchain requested by go.mod when GOTOOLCHAIN=auto).
go_version=$(go env GOVERSION 2>/dev/null || true)
if [[ ! $go_version =~ ^go([0-9]+)\.([0-9]+) ]]; then
	die "cannot tell the Go version (go env GOVERSION said '${go_version}'); Go >= ${MIN_GO_MAJOR}.${MIN_GO_MINOR} is required."
fi
go_major=${BASH_REMATCH[1]}
go_minor=${BASH_REMATCH[2]}
if ((go_major < MIN_GO_MAJOR || (go_major == MIN_GO_MAJOR && go_minor < MIN_GO_MINOR))); then
	die "${go_version} is too old: Go >= ${MIN_GO_MAJOR}.${MIN_GO_MINOR} is required (https://go.dev/dl/)."
fi

# --- which xcaddy ----------------------------------------------------------
if [[ -n ${XCADDY:-} ]]; then
	read -r -a xcaddy_cmd <<<"$XCADDY"
elif command -v xcaddy >/dev/null 2>&1; then
	xcaddy_cmd=(xcaddy)
else
	# `go tool -modfile` needs to run inside the main module, i.e. here.
	xcaddy_cmd=(go tool -modfile="$ROOT/tools/go.mod" xcaddy)
fi

# --- build -----------------------------------------------------------------
build() {
	echo "xcaddy.sh: building Caddy ${CADDY_VERSION} with github.com/metask/caddy-ai-gateway (${go_version}, ${xcaddy_cmd[*]})" >&2
	# The zero pseudo-version makes `go get` take the module straight from the
	# local replacement instead of asking the module proxy for its latest
	# release (which fails for unpublished or private checkouts).
	"${xcaddy_cmd[@]}" build "$CADDY_VERSION" \
		--with "github.com/metask/caddy-ai-gateway@v0.0.0-00010101000000-000000000000=$ROOT" \
		--output "$ROOT/caddy"
	echo "xcaddy.sh: built $ROOT/caddy" >&2
}

case "${1:-build}" in
build)
	build
	;;
run)
	shift
	build
	echo "xcaddy.sh: starting $ROOT/caddy with Caddyfile.example (gateway http://localhost:8080, admin http://localhost:2019)" >&2
	exec "$ROOT/caddy" run --config Caddyfile.example --adapter caddyfile "$@"
	;;
-h | --help | help)
	sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'
	;;
*)
	die "unknown command '$1' (want: no argument to build, or 'run')"
	;;
esac
