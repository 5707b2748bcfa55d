#!/usr/bin/env bash
# HTTP/2 loads, side by side in one run (see /work/shared/BENCH.md):
#   h2c   h2load -c32 -m10 to a 1 KiB response over h2c prior knowledge; the proxies (haproxy,
#         nginx, modelgate; one worker/thread each) speak HTTP/1.1 with keep-alive to an nginx
#         origin. Figure: proxy CPU µs per request, and its ratio to haproxy's and nginx's.
#   grpc  unary KServe ModelInfer (tritonclient's protobuf, a grpcio server) with h2load, direct
#         and through modelgate (h2c both sides) and haproxy (proto h2 both sides). Figures:
#         calls/s, mean latency, and the proxy's CPU µs per call.
#
#   bench/h2.sh                        # DURATION=10 REPEATS=3
#   DURATION=3 REPEATS=1 bench/h2.sh   # quick check
set -uo pipefail

DURATION=${DURATION:-10}
REPEATS=${REPEATS:-3}
LOADS=${LOADS:-"h2c grpc"}
GRPC_CONNS=${GRPC_CONNS:-4}        # the Python server is the bottleneck: a few connections
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
MODELGATE=${MODELGATE:-$ROOT/target/release/modelgate}
CLK_TCK=$(getconf CLK_TCK)

for tool in nginx haproxy h2load curl python3; do
    command -v "$tool" >/dev/null || { echo "h2.sh: $tool not found (apt install nginx haproxy nghttp2-client)" >&2; exit 1; }
done
if [ ! -x "$MODELGATE" ] || [ "${BUILD:-1}" = 1 ]; then
    (cd "$ROOT" && cargo build --release --quiet) || { echo "h2.sh: cargo build --release failed" >&2; exit 1; }
fi

T=$(mktemp -d "${TMPDIR:-/tmp}/modelgate-h2.XXXXXX")
chmod 755 "$T"
PIDS=()
cleanup() {
    local p
    for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
    sleep 0.3
    for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null; done
    [ "${KEEP_TMP:-0}" = 1 ] || rm -rf "$T"
}
trap cleanup EXIT

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
start_bg() { local name=$1; shift; "$@" >"$T/$name.log" 2>&1 & LAST_PID=$!; PIDS+=("$LAST_PID"); }
wait_port() { local i; for i in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; return 1; }
cpu_ticks() {    # utime + stime of a process and its children (nginx's workers)
    local p t=0
    for p in $1 $(pgrep -P "$1"); do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0))); done
    echo "$t"
}
median() { printf '%s\n' "$@" | grep -v n/a | sort -g | awk '{a[NR]=$1} END {if (NR==0) print "n/a"; else if (NR%2) print a[(NR+1)/2]; else printf "%.2f\n", (a[NR/2]+a[NR/2+1])/2}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "n/a" || b == "n/a" || b == 0) print "n/a"; else printf "%.2f\n", a / b }'; }

nginx_conf() {   # DIR BODY: an nginx config from the http {} body
    mkdir -p "$1/tmp"
    cat >"$1/nginx.conf" <<EOF
daemon off;
worker_processes 1;
pid $1/nginx.pid;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $1/tmp/body; proxy_temp_path $1/tmp/proxy;
    fastcgi_temp_path $1/tmp/fcgi; uwsgi_temp_path $1/tmp/uwsgi; scgi_temp_path $1/tmp/scgi;
    keepalive_requests 10000000;
    http2_max_requests 10000000;
$2
}
EOF
}

haproxy_conf() { # FILE PORT BACKEND_PORT BACKEND_PROTO(h1|h2)
    local proto=""
    [ "$4" = h2 ] && proto=" proto h2"
    cat >"$1" <<EOF
global
    nbthread 1
defaults
    mode http
    timeout client 60s
    timeout server 60s
    timeout connect 5s
frontend f
    bind 127.0.0.1:$2 proto h2
    default_backend b
backend b
    http-reuse always
    server o 127.0.0.1:$3$proto
EOF
}

mg_conf() {      # FILE PORT BACKEND_PORT PROTOCOL
    cat >"$1" <<EOF
[server]
listen = "127.0.0.1:$2"
workers = 1
[log]
access_log = false
[[upstream]]
name = "origin"
endpoints = ["127.0.0.1:$3"]
protocol = "$4"
# 32 connections × 10 streams are up to 320 requests in flight: keep that many upstream
# connections (nginx gets keepalive 512; haproxy reuses idle connections on its own).
max_idle_per_endpoint = 512
[[route]]
id = "all"
path_prefix = "/"
upstream = "origin"
class = "inference"
auth = "none"
EOF
}

# run_h2load TARGET PORT PID OUT ARGS...: h2load for DURATION s; prints "rps cpu_us_per_req mean_ms"
run_h2load() {
    local t=$1 p=$2 pid=$3 out=$4 c0 c1 reqs secs
    shift 4
    c0=$(cpu_ticks "$pid")
    h2load -D "$DURATION" "$@" "http://127.0.0.1:$p${URL_PATH}" >"$out" 2>&1
    c1=$(cpu_ticks "$pid")
    reqs=$(awk '/^requests:/ {print $8}' "$out")      # succeeded
    secs=$(awk '/^finished in/ {sub("s,", "", $3); print $3}' "$out")
    [ -n "$reqs" ] && [ "$reqs" != 0 ] || { echo "n/a n/a n/a"; return; }
    awk -v r="$reqs" -v s="$secs" -v c=$((c1 - c0)) -v hz="$CLK_TCK" -v t="$t" -v f="$out" '
        BEGIN {
            while ((getline line < f) > 0) if (line ~ /^time for request:/) { split(line, a, " +"); mean = a[6] }
            cpu = (t == "direct") ? "n/a" : sprintf("%.2f", c * 1000000 / hz / r)
            printf "%.0f %s %s\n", r / s, cpu, mean
        }'
}

echo "# bench/h2.sh  $(date -u '+%F %T UTC')  DURATION=$DURATION REPEATS=$REPEATS"
echo "# $(uptime)"
echo "# $(nginx -v 2>&1 | tr -d '\n'), $(haproxy -v | head -1 | cut -d' ' -f1-3), $(h2load --version | head -1)"

declare -A RPS CPU LAT

load_h2c() {
    local op np hp mp opid t r out fields
    op=$(port); np=$(port); hp=$(port); mp=$(port)
    local body; body=$(printf '%*s' 1024 '' | tr ' ' 'x')
    nginx_conf "$T/origin" "    server { listen 127.0.0.1:$op; location / { default_type text/plain; return 200 \"$body\"; } }"
    sed -i 's/worker_processes 1;/worker_processes 2;/' "$T/origin/nginx.conf"
    start_bg origin nginx -p "$T/origin/" -c "$T/origin/nginx.conf" -e "$T/origin/error.log"; opid=$LAST_PID
    nginx_conf "$T/nginx" "    upstream o { server 127.0.0.1:$op; keepalive 512; }
    server { listen 127.0.0.1:$np http2; location / { proxy_pass http://o; proxy_http_version 1.1; proxy_set_header Connection \"\"; proxy_buffering off; } }"
    start_bg nginx nginx -p "$T/nginx/" -c "$T/nginx/nginx.conf" -e "$T/nginx/error.log"; local npid=$LAST_PID
    haproxy_conf "$T/haproxy.cfg" "$hp" "$op" h1
    start_bg haproxy haproxy -db -f "$T/haproxy.cfg"; local hpid=$LAST_PID
    mg_conf "$T/mg.toml" "$mp" "$op" http1
    start_bg modelgate "$MODELGATE" run --config "$T/mg.toml"; local mpid=$LAST_PID
    for p in $op $np $hp $mp; do wait_port "$p" || { echo "h2c: port $p did not open"; tail "$T"/*.log; exit 1; }; done
    declare -A P=([direct]=$op [haproxy]=$hp [nginx]=$np [modelgate]=$mp)
    declare -A PID=([direct]=$opid [haproxy]=$hpid [nginx]=$npid [modelgate]=$mpid)
    URL_PATH=/1k
    echo
    echo "== h2c: h2load -c32 -m10 -D${DURATION}, 1 KiB response; proxies HTTP/1.1 keep-alive to an nginx origin"
    for t in direct haproxy nginx modelgate; do   # warm-up and a protocol check
        [ "$t" = direct ] && continue
        curl -s --http2-prior-knowledge -o /dev/null -w "%{http_version} %{http_code}" "http://127.0.0.1:${P[$t]}/1k" | grep -q '^2 200' ||
            echo "WARNING: $t does not answer h2c with 200"
    done
    for ((r = 1; r <= REPEATS; r++)); do
        for t in haproxy nginx modelgate; do
            out=$T/h2c-$t-$r.txt
            read -r rps cpu lat < <(run_h2load "$t" "${P[$t]}" "${PID[$t]}" "$out" -c32 -m10 -t1)
            RPS[h2c/$t]+="$rps "; CPU[h2c/$t]+="$cpu "; LAT[h2c/$t]+="$lat "
            printf '[h2c r%d] %-10s req/s=%-8s cpu_us_per_req=%-7s mean_latency=%s\n' "$r" "$t" "$rps" "$cpu" "$lat"
        done
    done
}

load_grpc() {
    local gp mp hp gpid t r out
    python3 - "$T/infer.bin" <<'EOF' || { echo "grpc: tritonclient not installed (tests/install-deps.sh)"; return; }
import struct, sys
from tritonclient.grpc import service_pb2 as pb
req = pb.ModelInferRequest(model_name="echo")
inp = req.inputs.add(); inp.name = "INPUT0"; inp.datatype = "BYTES"; inp.shape.append(1)
req.raw_input_contents.append(struct.pack("<I", 5) + b"hello")
msg = req.SerializeToString()
open(sys.argv[1], "wb").write(b"\0" + struct.pack(">I", len(msg)) + msg)
EOF
    start_bg kserve python3 "$ROOT/tests/clients/kserve_grpc_server.py"; gpid=$LAST_PID
    for _ in $(seq 100); do grep -q '^PORT' "$T/kserve.log" 2>/dev/null && break; sleep 0.1; done
    gp=$(awk '/^PORT/ {print $2}' "$T/kserve.log")
    mp=$(port); hp=$(port)
    mg_conf "$T/mg-grpc.toml" "$mp" "$gp" h2c
    start_bg modelgate-grpc "$MODELGATE" run --config "$T/mg-grpc.toml"; local mpid=$LAST_PID
    haproxy_conf "$T/haproxy-grpc.cfg" "$hp" "$gp" h2
    start_bg haproxy-grpc haproxy -db -f "$T/haproxy-grpc.cfg"; local hpid=$LAST_PID
    for p in $mp $hp; do wait_port "$p" || { echo "grpc: port $p did not open"; exit 1; }; done
    declare -A P=([direct]=$gp [haproxy]=$hp [modelgate]=$mp)
    declare -A PID=([direct]=$gpid [haproxy]=$hpid [modelgate]=$mpid)
    URL_PATH=/inference.GRPCInferenceService/ModelInfer
    local args=(-c"$GRPC_CONNS" -m10 -t1 -d "$T/infer.bin" -H "content-type: application/grpc" -H "te: trailers")
    echo
    echo "== grpc: unary ModelInfer (5-byte BYTES tensor), h2load -c$GRPC_CONNS -m10 -D${DURATION}, grpcio server (Python, 16 threads)"
    for ((r = 1; r <= REPEATS; r++)); do
        for t in direct haproxy modelgate; do
            out=$T/grpc-$t-$r.txt
            read -r rps cpu lat < <(run_h2load "$t" "${P[$t]}" "${PID[$t]}" "$out" "${args[@]}")
            RPS[grpc/$t]+="$rps "; CPU[grpc/$t]+="$cpu "; LAT[grpc/$t]+="$lat "
            printf '[grpc r%d] %-10s calls/s=%-7s cpu_us_per_call=%-7s mean_latency=%s\n' "$r" "$t" "$rps" "$cpu" "$lat"
        done
    done
}

for l in $LOADS; do "load_${l}"; done

echo
echo "== medians over $REPEATS repeats"
for l in $LOADS; do
    for t in direct haproxy nginx modelgate; do
        [ -n "${RPS[$l/$t]:-}" ] || continue
        # shellcheck disable=SC2086
        printf '%-5s %-10s req/s=%-8s cpu_us_per_req=%-7s mean_latency=%s\n' "$l" "$t" \
            "$(median ${RPS[$l/$t]})" "$(median ${CPU[$l/$t]})" "$(echo ${LAT[$l/$t]} | tr ' ' '\n' | sort | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')"
    done
done
# shellcheck disable=SC2086
mg=$(median ${CPU[h2c/modelgate]:-n/a}); ha=$(median ${CPU[h2c/haproxy]:-n/a}); ng=$(median ${CPU[h2c/nginx]:-n/a})
echo "h2c CPU µs/req: modelgate ÷ haproxy = $(ratio "$mg" "$ha"), modelgate ÷ nginx = $(ratio "$mg" "$ng")"
# shellcheck disable=SC2086
gm=$(median ${CPU[grpc/modelgate]:-n/a}); gh=$(median ${CPU[grpc/haproxy]:-n/a})
echo "grpc CPU µs/call: modelgate ÷ haproxy = $(ratio "$gm" "$gh")"
