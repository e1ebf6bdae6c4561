#!/usr/bin/env bash
# Overhead benchmark of the gateway handlers.
#
# In one run it builds ./caddy (../xcaddy.sh, served from Go's build cache
# after the first time), starts a minimal OpenAI-shaped mock provider
# (bench/mockprovider) and one Caddy with two sites on loopback:
#
#   a) plain:   reverse_proxy to the mock
#   b) gateway: api_key_auth + balance_guard + reverse_proxy to the mock
#
# Both sites set the same upstream Authorization header, so the only
# difference between them is the two gateway handlers. It creates an account
# with a large balance and a key through the admin API, warms both sites up,
# then loads them with wrk alternately a/b/a/b... (ROUNDS rounds) so that
# drift of the machine affects both alike. Each round measures throughput
# under saturating load (CONNECTIONS) and latency below saturation
# (LAT_CONNECTIONS, one by default: at saturation p99 is the queue in front
# of the busy core, which swings by milliseconds between runs). It prints
# req/s, p50 and p99 of each round and the medians, against the targets:
#
#   throughput ratio b/a >= 0.95      added p99 (b - a) <= 0.5 ms
#
# Usage:   bench/run.sh
# Env:     DURATION     length of each measured run       (default 10s)
#          WARMUP       length of the warm-up per site     (default 5s)
#          ROUNDS       a/b rounds                          (default 3)
#          CONNECTIONS  wrk connections, throughput runs    (default 32)
#          LAT_CONNECTIONS  wrk connections, latency runs      (default 1)
#          THREADS      wrk threads                         (default 1)
#          PIN          1: pin processes to CPUs (below)    (default 1)
#          SKIP_BUILD   1: use the existing ./caddy         (default 0)
#          PLAIN_PORT GATEWAY_PORT MOCK_PORT ADMIN_PORT     (loopback ports,
#                       defaults 18080 18081 18090 12019)
#
# CPU placement. This was written on a 2-core machine where the load
# generator, Caddy and the mock share the CPUs. With PIN=1 and at least two
# CPUs, Caddy gets CPU 0 to itself (GOMAXPROCS=1) and wrk and the mock share
# CPU 1 (mock GOMAXPROCS=1). Caddy is then the bottleneck (check the CPU
# column: caddy ~100%), so req/s measures Caddy's cost per request, which is
# the strictest comparison; unpinned runs let wrk, the mock and Caddy steal
# each other's CPU and the a/b ratio wanders by several percent between runs.
# wrk -t1 -c32 keeps one CPU-cheap client thread and enough connections to
# saturate one Caddy core. On larger machines raise CONNECTIONS/THREADS and
# set PIN=0, or adapt the taskset lists below.
#
# Results (wrk output and the table) go to bench/results/<timestamp>/,
# which is gitignored.
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$BENCH_DIR/.." && pwd)
cd "$ROOT"

DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-5s}
ROUNDS=${ROUNDS:-3}
CONNECTIONS=${CONNECTIONS:-32}
LAT_CONNECTIONS=${LAT_CONNECTIONS:-1}
THREADS=${THREADS:-1}
PIN=${PIN:-1}
SKIP_BUILD=${SKIP_BUILD:-0}
PLAIN_PORT=${PLAIN_PORT:-18080}
GATEWAY_PORT=${GATEWAY_PORT:-18081}
MOCK_PORT=${MOCK_PORT:-18090}
ADMIN_PORT=${ADMIN_PORT:-12019}

TARGET_RATIO=0.95
TARGET_ADDED_P99_MS=0.5

die() {
	echo "bench/run.sh: $*" >&2
	exit 1
}

# --- prerequisites ---------------------------------------------------------
command -v go >/dev/null 2>&1 || die "go is not on PATH"
command -v curl >/dev/null 2>&1 || die "curl is not on PATH"
if ! command -v wrk >/dev/null 2>&1; then
	die "wrk is not on PATH. Install it (Debian/Ubuntu: sudo apt-get install -y wrk; macOS: brew install wrk)."
fi
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || die "ROUNDS must be a positive integer"

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for p in "$PLAIN_PORT" "$GATEWAY_PORT" "$MOCK_PORT" "$ADMIN_PORT"; do
	if port_in_use "$p"; then
		die "port 127.0.0.1:$p is in use; set PLAIN_PORT, GATEWAY_PORT, MOCK_PORT or ADMIN_PORT"
	fi
done

# CPU placement (see the header).
CADDY_PIN=()
LOAD_PIN=()
CADDY_PROCS=""
if [[ $PIN == 1 ]] && command -v taskset >/dev/null 2>&1 && (($(nproc) >= 2)); then
	last=$(($(nproc) - 1))
	CADDY_PIN=(taskset -c 0)
	LOAD_PIN=(taskset -c "1-$last")
	CADDY_PROCS=1
	placement="caddy on CPU 0 (GOMAXPROCS=1); wrk and mock on CPU 1-$last"
else
	placement="not pinned ($(nproc) CPUs shared)"
fi

STAMP=$(date +%Y%m%d-%H%M%S)
RESULTS="$BENCH_DIR/results/$STAMP"
mkdir -p "$RESULTS"

# --- build -----------------------------------------------------------------
if [[ $SKIP_BUILD != 1 ]]; then
	echo "== building ./caddy (cached after the first build; log: $RESULTS/build.log)" >&2
	"$ROOT/xcaddy.sh" >"$RESULTS/build.log" 2>&1 || die "build failed; see $RESULTS/build.log"
fi
[[ -x $ROOT/caddy ]] || die "$ROOT/caddy is missing (SKIP_BUILD=1 needs a built ./caddy)"

WORK=$(mktemp -d -t ai-gateway-bench.XXXXXX)

PIDS=()
cleanup() {
	local pid
	for pid in "${PIDS[@]}"; do
		kill "$pid" 2>/dev/null || true
	done
	for pid in "${PIDS[@]}"; do
		wait "$pid" 2>/dev/null || true
	done
	rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "== building the mock provider" >&2
go build -o "$WORK/mockprovider" ./bench/mockprovider

# --- processes -------------------------------------------------------------
GOMAXPROCS=1 "${LOAD_PIN[@]}" "$WORK/mockprovider" -addr "127.0.0.1:$MOCK_PORT" 2>"$RESULTS/mock.log" &
PIDS+=($!)

cat >"$WORK/Caddyfile" <<EOF
{
	admin 127.0.0.1:$ADMIN_PORT
	persist_config off
	ai_gateway {
		database $WORK/bench.db
	}
}

# a) plain reverse proxy
http://127.0.0.1:$PLAIN_PORT {
	bind 127.0.0.1
	reverse_proxy 127.0.0.1:$MOCK_PORT {
		header_up Authorization "Bearer provider-key"
	}
}

# b) the gateway: API key, balance check, reverse proxy
http://127.0.0.1:$GATEWAY_PORT {
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
cp "$WORK/Caddyfile" "$RESULTS/Caddyfile"

# XDG dirs keep Caddy's data and config (autosave, certificates) in WORK.
env XDG_DATA_HOME="$WORK/data" XDG_CONFIG_HOME="$WORK/config" \
	${CADDY_PROCS:+GOMAXPROCS=$CADDY_PROCS} \
	"${CADDY_PIN[@]}" "$ROOT/caddy" run --config "$WORK/Caddyfile" --adapter caddyfile \
	>"$RESULTS/caddy.log" 2>&1 &
CADDY_PID=$!
PIDS+=("$CADDY_PID")

wait_for() { # url
	local i
	for i in $(seq 1 100); do
		if curl -s -o /dev/null "$1"; then
			return 0
		fi
		kill -0 "$CADDY_PID" 2>/dev/null || die "caddy exited; see $RESULTS/caddy.log"
		sleep 0.1
	done
	die "timed out waiting for $1"
}
wait_for "http://127.0.0.1:$ADMIN_PORT/config/"
wait_for "http://127.0.0.1:$MOCK_PORT/v1/models"

# --- account and key -------------------------------------------------------
ADMIN="http://127.0.0.1:$ADMIN_PORT/ai-gateway"
curl -sf -X POST "$ADMIN/accounts" -H 'Content-Type: application/json' \
	-d '{"id":"bench","name":"Benchmark"}' >/dev/null || die "creating the account failed"
curl -sf -X POST "$ADMIN/accounts/bench/balance" -H 'Content-Type: application/json' \
	-d '{"amount":"1000000000.00","note":"benchmark"}' >/dev/null || die "top-up failed"
key_json=$(curl -sf -X POST "$ADMIN/keys" -H 'Content-Type: application/json' \
	-d '{"account":"bench","name":"bench"}') || die "creating the key failed"
BENCH_KEY=$(printf '%s' "$key_json" | grep -o '"key": *"sk-[A-Za-z0-9]*"' | grep -o 'sk-[A-Za-z0-9]*') ||
	die "no key in the admin API answer: $key_json"
export BENCH_KEY

BODY='{"model":"bench","messages":[{"role":"user","content":"Hello"}]}'
for url in "http://127.0.0.1:$PLAIN_PORT" "http://127.0.0.1:$GATEWAY_PORT"; do
	code=$(curl -s -o "$WORK/check.json" -w '%{http_code}' "$url/v1/chat/completions" \
		-H "Authorization: Bearer $BENCH_KEY" -H 'Content-Type: application/json' -d "$BODY")
	[[ $code == 200 ]] || die "$url answered $code: $(cat "$WORK/check.json")"
done
code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$GATEWAY_PORT/v1/chat/completions" \
	-H 'Content-Type: application/json' -d "$BODY")
[[ $code == 401 ]] || die "the gateway site let a request without key through ($code)"

cat >"$WORK/post.lua" <<EOF
wrk.method = "POST"
wrk.body = '$BODY'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("BENCH_KEY")
EOF

# --- load ------------------------------------------------------------------
# run_wrk NAME PORT DURATION CONNECTIONS -> writes $RESULTS/NAME.txt
run_wrk() {
	"${LOAD_PIN[@]}" wrk -t"$THREADS" -c"$4" -d"$3" --latency \
		-s "$WORK/post.lua" "http://127.0.0.1:$2/v1/chat/completions" >"$RESULTS/$1.txt" 2>&1 ||
		die "wrk failed: $(cat "$RESULTS/$1.txt")"
	if grep -q 'Non-2xx' "$RESULTS/$1.txt"; then
		die "$1: wrk saw non-2xx answers: $(grep 'Non-2xx' "$RESULTS/$1.txt")"
	fi
	if grep -q 'Socket errors' "$RESULTS/$1.txt"; then
		echo "warning: $1: $(grep 'Socket errors' "$RESULTS/$1.txt")" >&2
	fi
}

# wrk prints latencies as 123.45us, 1.23ms or 1.02s.
to_ms() {
	awk -v v="$1" 'BEGIN {
		n = v + 0
		if (v ~ /us$/) n /= 1000
		else if (v ~ /ms$/) n += 0
		else if (v ~ /m$/) n *= 60000
		else if (v ~ /s$/) n *= 1000
		printf "%.3f", n
	}'
}
rps_of() { awk '/^Requests\/sec:/ {print $2}' "$1"; }
pct_of() { to_ms "$(awk -v p="$2%" '$1 == p {print $2}' "$1")"; }
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR] = $1} END {if (NR % 2) print a[(NR + 1) / 2]; else printf "%.3f\n", (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }

echo "== $(nproc) CPUs, $placement" >&2
echo "== wrk -t$THREADS -c$CONNECTIONS (throughput) and -c$LAT_CONNECTIONS (latency), warm-up $WARMUP per site, $ROUNDS rounds of 2x$DURATION per site" >&2
run_wrk warmup-a "$PLAIN_PORT" "$WARMUP" "$CONNECTIONS"
run_wrk warmup-b "$GATEWAY_PORT" "$WARMUP" "$CONNECTIONS"

rps_a=() rps_b=() p50_a=() p50_b=() p99_a=() p99_b=()
for r in $(seq 1 "$ROUNDS"); do
	echo "== round $r/$ROUNDS" >&2
	# throughput: saturating load
	run_wrk "round$r-a" "$PLAIN_PORT" "$DURATION" "$CONNECTIONS"
	run_wrk "round$r-b" "$GATEWAY_PORT" "$DURATION" "$CONNECTIONS"
	# latency: below saturation, so percentiles show the time a request
	# takes and not the queue in front of a saturated core
	run_wrk "lat$r-a" "$PLAIN_PORT" "$DURATION" "$LAT_CONNECTIONS"
	run_wrk "lat$r-b" "$GATEWAY_PORT" "$DURATION" "$LAT_CONNECTIONS"
	rps_a+=("$(rps_of "$RESULTS/round$r-a.txt")")
	rps_b+=("$(rps_of "$RESULTS/round$r-b.txt")")
	p50_a+=("$(pct_of "$RESULTS/lat$r-a.txt" 50)")
	p50_b+=("$(pct_of "$RESULTS/lat$r-b.txt" 50)")
	p99_a+=("$(pct_of "$RESULTS/lat$r-a.txt" 99)")
	p99_b+=("$(pct_of "$RESULTS/lat$r-b.txt" 99)")
done

# --- report ----------------------------------------------------------------
{
	echo "caddy-ai-gateway overhead benchmark ($STAMP)"
	echo "caddy: $("$ROOT/caddy" version | awk '{print $1}'), $(go env GOVERSION), $(nproc) CPUs, $placement"
	echo "load:  POST /v1/chat/completions, $ROUNDS rounds per site after $WARMUP warm-up; each round:"
	echo "       throughput wrk -t$THREADS -c$CONNECTIONS -d$DURATION, latency wrk -t$THREADS -c$LAT_CONNECTIONS -d$DURATION"
	echo "a = reverse_proxy only;  b = api_key_auth + balance_guard + reverse_proxy"
	echo
	printf '%-8s %11s %11s %7s %9s %9s %9s %9s %10s\n' \
		round "a req/s" "b req/s" "b/a" "a p50 ms" "b p50 ms" "a p99 ms" "b p99 ms" "+p99 ms"
	ratios=() added=()
	for i in $(seq 0 $((ROUNDS - 1))); do
		ratio=$(awk -v a="${rps_a[i]}" -v b="${rps_b[i]}" 'BEGIN {printf "%.3f", b / a}')
		add=$(awk -v a="${p99_a[i]}" -v b="${p99_b[i]}" 'BEGIN {printf "%.3f", b - a}')
		ratios+=("$ratio")
		added+=("$add")
		printf '%-8s %11.0f %11.0f %7s %9s %9s %9s %9s %10s\n' "$((i + 1))" \
			"${rps_a[i]}" "${rps_b[i]}" "$ratio" "${p50_a[i]}" "${p50_b[i]}" "${p99_a[i]}" "${p99_b[i]}" "$add"
	done
	m_rps_a=$(median "${rps_a[@]}")
	m_rps_b=$(median "${rps_b[@]}")
	m_p50_a=$(median "${p50_a[@]}")
	m_p50_b=$(median "${p50_b[@]}")
	m_p99_a=$(median "${p99_a[@]}")
	m_p99_b=$(median "${p99_b[@]}")
	m_ratio=$(awk -v a="$m_rps_a" -v b="$m_rps_b" 'BEGIN {printf "%.3f", b / a}')
	m_added=$(awk -v a="$m_p99_a" -v b="$m_p99_b" 'BEGIN {printf "%.3f", b - a}')
	printf '%-8s %11.0f %11.0f %7s %9s %9s %9s %9s %10s\n' median \
		"$m_rps_a" "$m_rps_b" "$m_ratio" "$m_p50_a" "$m_p50_b" "$m_p99_a" "$m_p99_b" "$m_added"
	echo
	verdict() { if awk -v x="$1" -v t="$3" -v op="$2" 'BEGIN {exit !((op == ">=") ? x >= t : x <= t)}'; then echo PASS; else echo FAIL; fi; }
	v_ratio=$(verdict "$m_ratio" ">=" "$TARGET_RATIO")
	v_p99=$(verdict "$m_added" "<=" "$TARGET_ADDED_P99_MS")
	echo "throughput ratio b/a (medians): $m_ratio   target >= $TARGET_RATIO   $v_ratio"
	echo "added p99 b-a (medians):        $m_added ms  target <= $TARGET_ADDED_P99_MS ms  $v_p99"
	echo "per-round b/a: ${ratios[*]}   per-round added p99 ms: ${added[*]}"
	if [[ $v_ratio == PASS && $v_p99 == PASS ]]; then
		echo "RESULT: PASS"
	else
		echo "RESULT: FAIL"
	fi
	echo "raw wrk output: $RESULTS"
} | tee "$RESULTS/summary.txt"
