#!/usr/bin/env bash
# Overhead benchmark of the gateway handlers.
#
# In one run it builds ./caddy (../xcaddy.sh, served from Go's build cache
# after the first time), starts a minimal OpenAI-shaped mock provider
# (bench/mockprovider) and one Caddy with two sites on loopback:
#
#   a) plain:   reverse_proxy to the mock
#   b) gateway: api_key_auth + balance_guard + reverse_proxy to the mock,
#               i.e. the full billing path: key check, reservation of the
#               estimated cost, metering of the response, settlement and the
#               ledger row (group-committed to SQLite)
#
# Both sites set the same upstream Authorization header, so the only
# difference between them is the two gateway handlers. It creates an account
# with a large balance and a key through the admin API and warms both sites
# up. Then:
#
# JSON chat completions. wrk loads the sites alternately a/b/a/b...
# (ROUNDS rounds) so that drift of the machine affects both alike. Each round
# measures throughput under saturating load (CONNECTIONS) and latency below
# saturation (LAT_CONNECTIONS, one by default: at saturation p99 is the queue
# in front of the busy core, which swings by milliseconds between runs).
# After every run on b the script waits until the ledger writer has committed
# what the run settled, so that its backlog does not run into the next run.
#
# Streamed chat completions. bench/ttfb sends STREAM_REQUESTS streamed
# requests per site (stream_options.include_usage set), one at a time,
# alternating a/b, after STREAM_WARMUP each, and times the first byte of the
# response (curl's time_starttransfer), the first SSE event (the judged time
# to first byte: the first token reaching the client) and the end of the
# stream. The mock sends the first event after STREAM_FIRST_DELAY (its time
# to first token), then STREAM_CHUNKS content events and the end, STREAM_DELAY
# apart.
#
# Targets of the billing issue, judged on the medians:
#
#   JSON:      throughput ratio b/a >= 0.90      added p99 (b - a) <= 1 ms
#   streaming: time to first event ratio b/a <= 1.05
#
# The first issue's targets (ratio >= 0.95, added p99 <= 0.5 ms) were for the
# auth-only gateway; b now also meters and bills every request. The JSON
# results are still compared with them, labelled as information only; they
# do not enter RESULT.
#
# Finally the script reads the ledger through the admin API: every request
# the clients completed on b must have its usage row, at the mock's usage
# (only requests wrk cut off may be estimates). RESULT is PASS when the three
# targets and this check pass.
#
# With the defaults a run takes about 3.5 minutes plus the build.
#
# Usage:   bench/run.sh
# Env:     DURATION     length of each measured run       (default 10s)
#          WARMUP       length of the warm-up per site     (default 5s)
#          ROUNDS       a/b rounds                          (default 3)
#          CONNECTIONS  wrk connections, throughput runs    (default 32)
#          LAT_CONNECTIONS  wrk connections, latency runs      (default 1)
#          THREADS      wrk threads                         (default 1)
#          STREAM_REQUESTS  streamed requests per site         (default 200)
#          STREAM_WARMUP    streamed warm-up requests per site (default 20)
#          STREAM_DELAY     mock: delay between stream events  (default 20ms)
#          STREAM_FIRST_DELAY  mock: delay before the first event (default
#                       STREAM_DELAY; 0 turns the streaming ratio into a pure
#                       proxy-overhead ratio on a sub-millisecond base)
#          STREAM_CHUNKS    mock: content events per stream    (default 3)
#          DURABLE      1: durable_billing on, 0: off       (default 1, the
#                       gateway's default: answers wait for their ledger row)
#          PIN          1: pin processes to CPUs (below)    (default 1)
#          GUARD_EXTRA  a line added to b's balance_guard, e.g.
#                       "rate_limit key rpm 100000000 tpm 1000000000 concurrency 100000"
#                       (default none)
#          SKIP_BUILD   1: use the existing ./caddy         (default 0; a
#                       quick way to build it from this checkout:
#                       go build -o caddy ./internal/testcaddy)
#          PLAIN_PORT GATEWAY_PORT MOCK_PORT ADMIN_PORT     (loopback ports,
#                       defaults 18080 18081 18090 12019)
#
# CPU placement. This was written on a 2-core machine where the load
# generator, Caddy and the mock share the CPUs. With PIN=1 and at least two
# CPUs, Caddy gets CPU 0 to itself (GOMAXPROCS=1) and wrk, bench/ttfb and the
# mock share CPU 1 (mock GOMAXPROCS=1). Caddy is then the bottleneck (check the CPU
# column: caddy ~100%), so req/s measures Caddy's cost per request, which is
# the strictest comparison; unpinned runs let wrk, the mock and Caddy steal
# each other's CPU and the a/b ratio wanders by several percent between runs.
# wrk -t1 -c32 keeps one CPU-cheap client thread and enough connections to
# saturate one Caddy core. On larger machines raise CONNECTIONS/THREADS and
# set PIN=0, or adapt the taskset lists below.
#
# Results (wrk and ttfb output, the table) go to bench/results/<timestamp>/,
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
STREAM_REQUESTS=${STREAM_REQUESTS:-200}
STREAM_WARMUP=${STREAM_WARMUP:-20}
STREAM_DELAY=${STREAM_DELAY:-20ms}
STREAM_FIRST_DELAY=${STREAM_FIRST_DELAY:-$STREAM_DELAY}
STREAM_CHUNKS=${STREAM_CHUNKS:-3}
PIN=${PIN:-1}
DURABLE=${DURABLE:-1}
SKIP_BUILD=${SKIP_BUILD:-0}
case $DURABLE in
1) DURABLE_BILLING=on ;;
0) DURABLE_BILLING=off ;;
*) echo "run.sh: DURABLE must be 0 or 1, got '$DURABLE'" >&2; exit 2 ;;
esac
PLAIN_PORT=${PLAIN_PORT:-18080}
GATEWAY_PORT=${GATEWAY_PORT:-18081}
MOCK_PORT=${MOCK_PORT:-18090}
ADMIN_PORT=${ADMIN_PORT:-12019}

# Targets of the billing issue (judged).
TARGET_RATIO=0.90
TARGET_ADDED_P99_MS=1.0
TARGET_STREAM_RATIO=1.05
# Targets of the first issue, for the auth-only gateway (shown, not judged).
ISSUE1_RATIO=0.95
ISSUE1_ADDED_P99_MS=0.5

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
[[ $STREAM_REQUESTS =~ ^[1-9][0-9]*$ ]] || die "STREAM_REQUESTS must be a positive integer"
[[ $STREAM_WARMUP =~ ^[0-9]+$ ]] || die "STREAM_WARMUP must be a non-negative integer"
[[ $STREAM_CHUNKS =~ ^[0-9]+$ ]] || die "STREAM_CHUNKS must be a non-negative integer"

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

echo "== building the mock provider and bench/ttfb" >&2
go build -o "$WORK/mockprovider" ./bench/mockprovider
go build -o "$WORK/ttfb" ./bench/ttfb

# --- processes -------------------------------------------------------------
GOMAXPROCS=1 "${LOAD_PIN[@]}" "$WORK/mockprovider" -addr "127.0.0.1:$MOCK_PORT" \
	-stream-delay "$STREAM_DELAY" -first-chunk-delay "$STREAM_FIRST_DELAY" -stream-chunks "$STREAM_CHUNKS" \
	2>"$RESULTS/mock.log" &
PIDS+=($!)

cat >"$WORK/Caddyfile" <<EOF
{
	admin 127.0.0.1:$ADMIN_PORT
	persist_config off
	ai_gateway {
		database $WORK/bench.db
		durable_billing $DURABLE_BILLING
	}
}

# a) plain reverse proxy
http://127.0.0.1:$PLAIN_PORT {
	bind 127.0.0.1
	reverse_proxy 127.0.0.1:$MOCK_PORT {
		header_up Authorization "Bearer provider-key"
	}
}

# b) the gateway: API key, reservation, metering, ledger, reverse proxy
http://127.0.0.1:$GATEWAY_PORT {
	bind 127.0.0.1
	api_key_auth
	balance_guard {
		price bench input 1.00 output 2.00
		unknown_model reject
		${GUARD_EXTRA:-}
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
STREAM_BODY='{"model":"bench","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"Hello"}]}'
for url in "http://127.0.0.1:$PLAIN_PORT" "http://127.0.0.1:$GATEWAY_PORT"; do
	code=$(curl -s -o "$WORK/check.json" -w '%{http_code}' "$url/v1/chat/completions" \
		-H "Authorization: Bearer $BENCH_KEY" -H 'Content-Type: application/json' -d "$BODY")
	[[ $code == 200 ]] || die "$url answered $code: $(cat "$WORK/check.json")"
	code=$(curl -s -N -o "$WORK/check.sse" -w '%{http_code}' "$url/v1/chat/completions" \
		-H "Authorization: Bearer $BENCH_KEY" -H 'Content-Type: application/json' -d "$STREAM_BODY")
	if [[ $code != 200 ]] || ! grep -q '^data: \[DONE\]' "$WORK/check.sse" || ! grep -q '"usage"' "$WORK/check.sse"; then
		die "$url answered a streamed request with $code: $(cat "$WORK/check.sse")"
	fi
done
# Requests the clients completed on b (the two checks above, wrk, bench/ttfb),
# to compare with the ledger at the end.
B_REQUESTS=2
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
	if [[ $2 == "$GATEWAY_PORT" ]]; then
		B_REQUESTS=$((B_REQUESTS + $(awk '/ requests in / {print $1}' "$RESULTS/$1.txt")))
		drain_ledger
	fi
}

# drain_ledger returns once the ledger writer has committed every request
# settled so far: the usage endpoint flushes the writer before it sums.
drain_ledger() {
	curl -sf -o /dev/null "$ADMIN/usage?account=bench&limit=1" || die "reading usage through the admin API failed"
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

# --- streaming -------------------------------------------------------------
echo "== streaming: bench/ttfb, $STREAM_REQUESTS streamed requests per site after $STREAM_WARMUP warm-up, one at a time, alternating a/b" >&2
"${LOAD_PIN[@]}" "$WORK/ttfb" -a "http://127.0.0.1:$PLAIN_PORT/v1/chat/completions" \
	-b "http://127.0.0.1:$GATEWAY_PORT/v1/chat/completions" \
	-n "$STREAM_REQUESTS" -warmup "$STREAM_WARMUP" -target "$TARGET_STREAM_RATIO" \
	>"$RESULTS/stream.txt" 2>&1 || die "bench/ttfb failed: $(cat "$RESULTS/stream.txt")"
B_REQUESTS=$((B_REQUESTS + STREAM_REQUESTS + STREAM_WARMUP))
v_stream=$(awk '/^STREAM RESULT:/ {print $3}' "$RESULTS/stream.txt")
[[ $v_stream == PASS || $v_stream == FAIL ]] || die "bench/ttfb printed no result: $(cat "$RESULTS/stream.txt")"

# --- ledger ----------------------------------------------------------------
# Every request the clients completed on b must have its usage row, charged
# at the mock's usage: 12 prompt and 8 completion tokens at 1.00 and 2.00 per
# 1M tokens, 28000 nano-units. There may be more rows than completed
# requests: wrk drops the requests in flight when a run ends, and the gateway
# records those too: charged in full if the provider's answer was complete,
# the prompt estimate (7 tokens, 7000 nano-units, flagged estimated) if the
# request had reached the provider, else nothing. So with E estimated rows
# out of R, B completed requests:  E <= R - B  and
# B*28000 + E*7000 <= cost <= (R - E)*28000 + E*7000.
REQUEST_COST_NANO=28000
CUT_COST_NANO=7000
usage_json=$(curl -sf "$ADMIN/usage?account=bench&limit=1") || die "reading usage through the admin API failed"
echo "$usage_json" >"$RESULTS/usage.json"
json_int() { printf '%s' "$usage_json" | grep -o "\"$1\": *[0-9]*" | head -1 | grep -o '[0-9]*$'; }
ledger_rows=$(json_int requests)
ledger_estimated=$(json_int estimated)
ledger_cost=$(json_int cost_nano)
[[ -n $ledger_rows && -n $ledger_estimated && -n $ledger_cost ]] || die "unexpected usage answer: $usage_json"
cost_min=$((B_REQUESTS * REQUEST_COST_NANO + ledger_estimated * CUT_COST_NANO))
cost_max=$(((ledger_rows - ledger_estimated) * REQUEST_COST_NANO + ledger_estimated * CUT_COST_NANO))
if ((ledger_rows >= B_REQUESTS && ledger_estimated <= ledger_rows - B_REQUESTS &&
	ledger_cost >= cost_min && ledger_cost <= cost_max)); then
	v_ledger=PASS
else
	v_ledger=FAIL
fi

# --- report ----------------------------------------------------------------
{
	echo "caddy-ai-gateway overhead benchmark ($STAMP)"
	echo "caddy: $("$ROOT/caddy" version | awk '{print $1}'), $(go env GOVERSION), $(nproc) CPUs, $placement"
	echo "load:  POST /v1/chat/completions, $ROUNDS rounds per site after $WARMUP warm-up; each round:"
	echo "       throughput wrk -t$THREADS -c$CONNECTIONS -d$DURATION, latency wrk -t$THREADS -c$LAT_CONNECTIONS -d$DURATION"
	echo "a = reverse_proxy only;  b = api_key_auth + balance_guard + reverse_proxy (auth, reservation, metering, ledger)"
	echo
	echo "JSON chat completions"
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
	i1_ratio=$(verdict "$m_ratio" ">=" "$ISSUE1_RATIO")
	i1_p99=$(verdict "$m_added" "<=" "$ISSUE1_ADDED_P99_MS")
	echo "per-round b/a: ${ratios[*]}   per-round added p99 ms: ${added[*]}"
	echo "billing issue targets (full gateway; judged):"
	echo "  throughput ratio b/a (medians): $m_ratio   target >= $TARGET_RATIO   $v_ratio"
	echo "  added p99 b-a (medians):        $m_added ms  target <= $TARGET_ADDED_P99_MS ms  $v_p99"
	echo "first issue's targets (auth-only gateway; b now also bills; information only, not judged):"
	echo "  throughput ratio b/a (medians): $m_ratio   target >= $ISSUE1_RATIO   $i1_ratio"
	echo "  added p99 b-a (medians):        $m_added ms  target <= $ISSUE1_ADDED_P99_MS ms  $i1_p99"
	echo
	echo "Streamed chat completions: bench/ttfb, $STREAM_REQUESTS per site after $STREAM_WARMUP warm-up, one at a time, a/b alternating"
	echo "mock: first event after $STREAM_FIRST_DELAY, then $STREAM_CHUNKS content events and the end, $STREAM_DELAY apart"
	grep -v '^STREAM RESULT:' "$RESULTS/stream.txt" | sed '/^$/d'
	echo
	echo "ledger of b: $ledger_rows usage rows for $B_REQUESTS requests the clients completed,"
	echo "             $ledger_estimated estimated (requests wrk cut off; at most $((ledger_rows - B_REQUESTS))),"
	echo "             $ledger_cost nano charged (want between $cost_min and $cost_max)   $v_ledger"
	echo
	echo "JSON throughput: $v_ratio   JSON added p99: $v_p99   streaming TTFB: $v_stream   billing: $v_ledger"
	if [[ $v_ratio == PASS && $v_p99 == PASS && $v_stream == PASS && $v_ledger == PASS ]]; then
		echo "RESULT: PASS"
	else
		echo "RESULT: FAIL"
	fi
	echo "raw output: $RESULTS"
} | tee "$RESULTS/summary.txt"
