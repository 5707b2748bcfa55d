#!/usr/bin/env bash
# modelgate benchmark harness: standard loads h1-1k and sse-1 (see /work/shared/BENCH.md),
# side by side against direct (no proxy), nginx and modelgate, in one run.
#
#   bench/run.sh                       # DURATION=10 REPEATS=3
#   DURATION=3 REPEATS=1 bench/run.sh  # quick check
#
# Knobs (env): DURATION REPEATS WARMUP CONNS THREADS LOADS SSE_EVENTS SSE_GAP_MS SSE_STREAMS
#   ORIGIN_WORKERS MODELGATE SSE_BENCH SKIP_MODELGATE BUILD KEEP_TMP READY_TIMEOUT
# See bench/README.md.
set -uo pipefail

DURATION=${DURATION:-10}          # seconds per wrk run
REPEATS=${REPEATS:-3}             # repeats; every repeat runs every target in turn
WARMUP=${WARMUP:-1}               # seconds of wrk warm-up per h1 target (0 = none)
CONNS=${CONNS:-32}                # wrk -c
THREADS=${THREADS:-1}             # wrk -t
LOADS=${LOADS:-"h1-1k tls-1k sse-1"}  # which loads to run
SSE_EVENTS=${SSE_EVENTS:-200}     # events per SSE stream
SSE_GAP_MS=${SSE_GAP_MS:-10}      # gap between SSE events
SSE_STREAMS=${SSE_STREAMS:-1}     # concurrent SSE streams per run (CPU per event is steadier with many)
ORIGIN_WORKERS=${ORIGIN_WORKERS:-2}  # workers of the origin nginx (h1-1k)
SKIP_MODELGATE=${SKIP_MODELGATE:-0}  # 1 = measure direct + nginx only
BUILD=${BUILD:-1}                 # 0 = never run cargo (use what exists / rustc fallback)
KEEP_TMP=${KEEP_TMP:-0}           # 1 = keep the temp dir (configs, logs)
READY_TIMEOUT=${READY_TIMEOUT:-10}  # seconds to wait for a server to answer

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
MODELGATE=${MODELGATE:-$ROOT/target/release/modelgate}
# modelgate configurations measured side by side: plain, with recording, with masking, with
# authentication + policy (a cached bearer token on every request).
MG_VARIANTS=${MG_VARIANTS:-modelgate modelgate_rec modelgate_mask modelgate_auth}
SSE_BENCH=${SSE_BENCH:-$ROOT/target/release/examples/sse-bench}
AUTH_BENCH=${AUTH_BENCH:-$ROOT/target/release/examples/auth-bench}
# A/B: MODELGATE_BASE=/path/to/older/modelgate adds the variant `modelgate_base`, that binary with
# the plain config (BASE_AUTH= for builds from before `auth` existed: no auth line).
MODELGATE_BASE=${MODELGATE_BASE:-}
# BASE_VARIANT=modelgate_rec (or _mask) runs the baseline with that variant's config instead.
BASE_VARIANT=${BASE_VARIANT:-}
[ -n "$MODELGATE_BASE" ] && MG_VARIANTS="modelgate_base $MG_VARIANTS"
CLK_TCK=$(getconf CLK_TCK)

for tool in nginx wrk curl ss pgrep awk; do
    command -v "$tool" >/dev/null || { echo "run.sh: $tool not found (apt install it)" >&2; exit 1; }
done

# ------------------------------------------------------------------ plumbing ---
T=$(mktemp -d "${TMPDIR:-/tmp}/modelgate-bench.XXXXXX")
chmod 755 "$T"   # nginx workers run as nobody
PIDS=()          # every background process this script started
USED_PORTS=" "

proc_tree() {    # pid and all its descendants
    local p=$1 c
    [ -d "/proc/$p" ] || return 0
    echo "$p"
    for c in $(pgrep -P "$p" 2>/dev/null); do proc_tree "$c"; done
}

start_time() {   # field 22 of /proc/PID/stat: tells a PID from a later reuse of it
    local s
    s=$(cat "/proc/$1/stat" 2>/dev/null) || return 0
    s=${s##*) }
    # shellcheck disable=SC2086
    set -- $s
    echo "${20}"
}

stop_pid() {     # TERM a process we started (and its tree), KILL what is left after 3 s
    local pid=$1 tree=() p i
    for p in $(proc_tree "$pid"); do tree+=("$p:$(start_time "$p")"); done
    [ ${#tree[@]} -gt 0 ] || return 0
    kill -TERM "$pid" 2>/dev/null
    for i in $(seq 30); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    for p in "${tree[@]}"; do
        [ "$(start_time "${p%%:*}")" = "${p#*:}" ] && kill -KILL "${p%%:*}" 2>/dev/null
    done
    wait "$pid" 2>/dev/null
    return 0
}

cleanup() {
    local i
    trap - EXIT INT TERM
    [ -n "$FG_PID" ] && stop_pid "$FG_PID"
    for ((i=${#PIDS[@]}-1; i>=0; i--)); do stop_pid "${PIDS[i]}"; done
    if [ "$KEEP_TMP" = 1 ]; then echo "temp dir kept: $T" >&2; else rm -rf "$T"; fi
}
trap cleanup EXIT
trap 'echo "interrupted" >&2; exit 130' INT TERM

alloc_port() {   # alloc_port VAR: a random free port on 127.0.0.1
    local p i
    for i in $(seq 200); do
        p=$((20000 + (RANDOM * 32768 + RANDOM) % 40000))
        case "$USED_PORTS" in *" $p "*) continue ;; esac
        if [ -z "$(ss -Htan "sport = :$p" 2>/dev/null)" ]; then
            USED_PORTS="$USED_PORTS$p "
            printf -v "$1" '%s' "$p"
            return 0
        fi
    done
    echo "run.sh: no free port found" >&2; exit 1
}

FG_PID=
run_fg() {       # run a load generator; in the background + wait, so INT/TERM act at once
    "$@" &
    FG_PID=$!
    wait "$FG_PID"
    local rc=$?
    FG_PID=
    return $rc
}

LAST_PID=
start_bg() {     # start_bg NAME CMD...: run in background, logs in $T/NAME.log
    local name=$1; shift
    "$@" >"$T/$name.log" 2>&1 &
    LAST_PID=$!
    PIDS+=("$LAST_PID")
}

wait_http() {    # wait_http PORT PID: until anything answers HTTP (any status)
    local port=$1 pid=$2 deadline=$((SECONDS + READY_TIMEOUT))
    while [ $SECONDS -lt $deadline ]; do
        kill -0 "$pid" 2>/dev/null || return 1
        curl -s -o /dev/null -m 1 "http://127.0.0.1:$port/" && return 0
        curl -sk -o /dev/null -m 1 "https://127.0.0.1:$port/" && return 0
        sleep 0.1
    done
    return 1
}

cpu_ticks() {    # utime+stime(+reaped children) of a process tree, in clock ticks
    local sum=0 p s
    for p in $(proc_tree "$1"); do
        s=$(cat "/proc/$p/stat" 2>/dev/null) || continue
        s=${s##*) }
        # shellcheck disable=SC2086
        set -- $s
        # after "comm)": $1=state ... $12=utime $13=stime $14=cutime $15=cstime
        sum=$((sum + ${12} + ${13} + ${14} + ${15}))
    done
    echo "$sum"
}

cpu_ns() {       # CPU time of a process tree's live threads in ns (schedstat: finer than ticks)
    local sum=0 p f v
    for p in $(proc_tree "$1"); do
        for f in /proc/"$p"/task/*/schedstat; do
            read -r v _ <"$f" 2>/dev/null || continue
            sum=$((sum + v))
        done
    done
    echo "$sum"
}

median() {       # median of the numeric arguments ("n/a" ignored)
    printf '%s\n' "$@" | grep -E '^-?[0-9.]+$' | sort -g |
        awk '{a[NR]=$1} END{ if(NR==0) print "n/a"; else if(NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2 }'
}

calc() {         # calc FORMAT EXPR [vars...]: awk arithmetic, "n/a" if any var is n/a or div by 0
    local fmt=$1 expr=$2; shift 2
    local v
    for v in "$@"; do [[ "$v" =~ ^-?[0-9.]+([eE][-+]?[0-9]+)?$ ]] || { echo "n/a"; return; }; done
    awk -v fmt="$fmt" "BEGIN{ split(\"$*\", v, \" \"); r = $expr; if (r == \"nan\") print \"n/a\"; else printf fmt, r }" 2>/dev/null || echo "n/a"
}
# calc uses v[1], v[2]...: e.g. calc %.2f 'v[1]/v[2]' 3 4
safe_div() {     # safe_div FORMAT A B
    calc "$1" '(v[2] == 0) ? "nan" : v[1] / v[2]' "$2" "$3"
}

# -------------------------------------------------------------- header / build ---
UPTIME_START=$(uptime)
echo "uptime: $UPTIME_START"
MACHINE="nproc=$(nproc); $(grep -m1 'model name' /proc/cpuinfo | sed 's/[[:space:]]*:[[:space:]]*/: /'); kernel $(uname -r)"
NGINX_V=$(nginx -v 2>&1 | sed 's/^nginx version: //')
WRK_V=$(wrk -v 2>&1 | head -1 | awk '{print $1, $2}')
echo "machine: $MACHINE"
echo "peers: $NGINX_V; $WRK_V; curl $(curl --version | head -1 | awk '{print $2}')"
CMD="DURATION=$DURATION REPEATS=$REPEATS WARMUP=$WARMUP CONNS=$CONNS THREADS=$THREADS LOADS=\"$LOADS\" SSE_EVENTS=$SSE_EVENTS SSE_GAP_MS=$SSE_GAP_MS bench/run.sh"
echo "command: $CMD"
echo "temp dir: $T"

BUILT=0
CARGO_FAILED=0
cargo_build() {  # cargo_build ARGS...: log in $T/cargo.log; no retry after a failure
    [ "$CARGO_FAILED" = 1 ] && return 1
    echo "building: cargo build --release $* (log: $T/cargo.log)"
    BUILT=1
    (cd "$ROOT" && cargo build --release "$@") >>"$T/cargo.log" 2>&1 || { CARGO_FAILED=1; return 1; }
}

MG_SKIP_REASON=
if [ "$SKIP_MODELGATE" = 1 ]; then
    MG_SKIP_REASON="SKIP_MODELGATE=1"
elif [ ! -x "$MODELGATE" ]; then
    if [ "$BUILD" = 1 ]; then
        if ! cargo_build --bin modelgate --example sse-bench --example auth-bench; then
            echo "modelgate: cargo build failed (last lines of $T/cargo.log):"
            tail -n 15 "$T/cargo.log" | sed 's/^/    /'
        fi
    fi
    if [ ! -x "$MODELGATE" ]; then
        MG_SKIP_REASON="binary $MODELGATE not available"
        [ "$CARGO_FAILED" = 1 ] && MG_SKIP_REASON="$MG_SKIP_REASON: cargo build failed, see above"
    fi
fi
if [ -z "$MG_SKIP_REASON" ] && [ "$MODELGATE" = "$ROOT/target/release/modelgate" ]; then
    newer=$(find "$ROOT/src" -name '*.rs' -newer "$MODELGATE" 2>/dev/null | head -3 | tr '\n' ' ')
    [ -n "$newer" ] && echo "WARNING: modelgate binary is older than: $newer(rebuild: cargo build --release --bin modelgate)"
fi

# sse-bench: cargo example if present and fresh, else cargo, else plain rustc into $T.
if [[ " $LOADS " == *" sse-1 "* ]]; then
    USE_RUSTC=0
    if [ ! -x "$SSE_BENCH" ] && [ "$BUILD" = 1 ] && [ "$SSE_BENCH" = "$ROOT/target/release/examples/sse-bench" ]; then
        cargo_build --example sse-bench || echo "sse-bench: cargo build failed (library mid-edit?), falling back to rustc"
    fi
    if [ -x "$SSE_BENCH" ] && [ "$ROOT/bench/sse_bench.rs" -nt "$SSE_BENCH" ]; then
        echo "sse-bench: $SSE_BENCH is older than bench/sse_bench.rs; using a fresh rustc build instead"
        USE_RUSTC=1
    fi
    if [ ! -x "$SSE_BENCH" ] || [ "$USE_RUSTC" = 1 ]; then
        echo "sse-bench: rustc -O --edition 2021 bench/sse_bench.rs -o $T/sse-bench"
        rustc -O --edition 2021 "$ROOT/bench/sse_bench.rs" -o "$T/sse-bench" 2>"$T/rustc.log" ||
            { echo "sse-bench: rustc failed:"; cat "$T/rustc.log"; exit 1; }
        SSE_BENCH=$T/sse-bench
    fi
    echo "sse-bench: $SSE_BENCH"
fi
# modelgate_auth: a JWKS served over loopback HTTP and a token signed with its key, minted once.
AUTH_TOKEN=
if [[ " $MG_VARIANTS " == *" modelgate_auth "* ]] && [ -z "$MG_SKIP_REASON" ]; then
    if [ ! -x "$AUTH_BENCH" ] && [ "$BUILD" = 1 ]; then cargo_build --example auth-bench; fi
    if [ -x "$AUTH_BENCH" ]; then
        mkdir -p "$T/jwks"
        alloc_port JWKS_PORT
        AUTH_TOKEN=$("$AUTH_BENCH" mint --jwks "$T/jwks/jwks.json" --issuer "http://127.0.0.1:$JWKS_PORT" --aud bench)
        start_bg jwks-server python3 -m http.server --bind 127.0.0.1 --directory "$T/jwks" "$JWKS_PORT"
        wait_http "$JWKS_PORT" "$LAST_PID" || { echo "JWKS server did not start"; exit 1; }
    else
        echo "modelgate_auth: $AUTH_BENCH not available; variant skipped"
        MG_VARIANTS=${MG_VARIANTS/modelgate_auth/}
    fi
fi
if [ "$BUILT" = 1 ]; then
    UPTIME_START=$(uptime)
    echo "uptime (after build): $UPTIME_START"
fi

# ------------------------------------------------------------------- servers ---
nginx_temp_paths() {
    local d=$1
    cat <<EOF
    client_body_temp_path $d/tmp/body;
    proxy_temp_path $d/tmp/proxy;
    fastcgi_temp_path $d/tmp/fastcgi;
    uwsgi_temp_path $d/tmp/uwsgi;
    scgi_temp_path $d/tmp/scgi;
EOF
}

start_nginx() {  # start_nginx NAME CONF_BODY_FILE: foreground master; sets LAST_PID
    local name=$1 d=$T/$1
    shift
    "$@"   # write the config
    nginx -t -q -p "$d/" -c "$d/nginx.conf" -e "$d/error.log" 2>"$d/test.log" ||
        { echo "nginx $name: bad config:"; cat "$d/test.log"; exit 1; }
    start_bg "$name" nginx -p "$d/" -c "$d/nginx.conf" -e "$d/error.log"
}

write_origin_nginx() {  # NAME PORT
    local d=$T/$1 port=$2 body
    mkdir -p "$d/tmp"
    body=$(printf '%*s' 1024 '' | tr ' ' 'x')
    cat >"$d/nginx.conf" <<EOF
daemon off;
master_process on;
worker_processes $ORIGIN_WORKERS;
pid $d/nginx.pid;
events { worker_connections 4096; }
http {
    access_log off;
$(nginx_temp_paths "$d")
    keepalive_requests 10000000;
    keepalive_timeout 300s;
    server {
        listen 127.0.0.1:$port;
        location = /1k {
            default_type text/plain;
            return 200 "$body";
        }
        location / { return 404; }
    }
}
EOF
}

write_proxy_nginx() {   # NAME PORT ORIGIN_PORT
    local d=$T/$1 port=$2 oport=$3
    mkdir -p "$d/tmp"
    cat >"$d/nginx.conf" <<EOF
daemon off;
master_process on;
worker_processes 1;
pid $d/nginx.pid;
events { worker_connections 4096; }
http {
    access_log off;
$(nginx_temp_paths "$d")
    keepalive_requests 10000000;
    keepalive_timeout 300s;
    upstream origin {
        server 127.0.0.1:$oport;
        keepalive 64;
        keepalive_requests 10000000;
        keepalive_timeout 300s;
    }
    server {
        listen 127.0.0.1:$port$( [ "$TLS_LOAD" = 1 ] && echo " ssl" );
$( [ "$TLS_LOAD" = 1 ] && printf '        ssl_certificate %s;\n        ssl_certificate_key %s;\n        ssl_protocols TLSv1.2 TLSv1.3;\n' "$T/tls/cert.pem" "$T/tls/key.pem" )
        location / {
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
        }
    }
}
EOF
}

write_modelgate_conf() {  # FILE PORT ORIGIN_PORT [AUTH]
    local auth_line=
    [ -n "${4:-}" ] && auth_line="auth = \"$4\""
    cat >"$1" <<EOF
[server]
listen = "127.0.0.1:$2"
workers = 1

[log]
access_log = false

[[upstream]]
name = "origin"
endpoints = ["127.0.0.1:$3"]

[[route]]
id = "all"
path_prefix = "/"
upstream = "origin"
class = "inference"
$auth_line
EOF
}

# Starts the three targets for one load. Sets PORT_<target>, PID_<target>, TARGETS.
start_targets() {  # LOAD ORIGIN_PORT ORIGIN_PID
    local load=$1 oport=$2 opid=$3 name
    TARGETS="direct"
    PORT_direct=$oport; PID_direct=$opid

    name=nginx-proxy-$load
    alloc_port PORT_nginx
    start_nginx "$name" write_proxy_nginx "$name" "$PORT_nginx" "$oport"
    PID_nginx=$LAST_PID
    if ! wait_http "$PORT_nginx" "$PID_nginx"; then
        echo "nginx proxy ($load) did not start:"; cat "$T/$name/error.log" "$T/$name.log" 2>/dev/null; exit 1
    fi
    TARGETS="$TARGETS nginx"

    if [ -n "$MG_SKIP_REASON" ]; then
        echo "[$load] modelgate: SKIPPED ($MG_SKIP_REASON)"
        return
    fi
    local v port
    for v in $MG_VARIANTS; do
        if [ "$v" = modelgate_auth ] && [ "$load" = sse-1 ]; then
            continue   # sse-bench's client sends no Authorization header; h1-1k measures authn
        fi
        if [ "$load" = tls-1k ] && [ "$v" != modelgate ] && [ "$v" != modelgate_base ]; then
            continue   # tls-1k measures TLS termination on the plain proxy
        fi
        name=$v-$load
        alloc_port "PORT_$v"
        eval "port=\$PORT_$v"
        local auth=none bin=$MODELGATE
        [ "$v" = modelgate_auth ] && auth=required
        [ "$v" = modelgate_base ] && { auth=${BASE_AUTH-none}; bin=$MODELGATE_BASE; }
        [ "$v" = modelgate_base ] && [ "$BASE_VARIANT" = modelgate_auth ] && auth=required
        write_modelgate_conf "$T/$name.toml" "$port" "$oport" "$auth"
        local as=$v
        [ "$v" = modelgate_base ] && [ -n "$BASE_VARIANT" ] && as=$BASE_VARIANT
        variant_toml "$as" "$T/$name" >>"$T/$name.toml"
        if [ "$load" = tls-1k ]; then
            printf '\n[server.tls]\ncert_file = "%s"\nkey_file = "%s"\n' "$T/tls/cert.pem" "$T/tls/key.pem" >>"$T/$name.toml"
        fi
        start_bg "$name" "$bin" run --config "$T/$name.toml"
        eval "PID_$v=\$LAST_PID"
        if wait_http "$port" "$LAST_PID"; then
            TARGETS="$TARGETS $v"
        else
            echo "[$load] $v: SKIPPED (did not answer on 127.0.0.1:$port; output below)"
            echo "    command: $MODELGATE run --config $T/$name.toml"
            tail -n 10 "$T/$name.log" | sed 's/^/    | /'
            stop_pid "$LAST_PID"
        fi
    done
}

# Extra config for modelgate variants: `modelgate_rec` records every session (event
# durability, fsync at seal), `modelgate_reci` the same with interval durability,
# `modelgate_rec1` event durability at zstd level 1 (the default is 3);
# `modelgate_mask` masks every response (built-in detectors plus 1000 literals).
variant_toml() {  # VARIANT DIR
    case $1 in
        modelgate_rec)
            printf '\n[recording]\nenabled = true\ndir = "%s-rec"\ndurability = "event"\n' "$2"
            ;;
        modelgate_reci)
            printf '\n[recording]\nenabled = true\ndir = "%s-rec"\ndurability = "interval"\n' "$2"
            ;;
        modelgate_rec1)
            printf '\n[recording]\nenabled = true\ndir = "%s-rec"\ndurability = "event"\nzstd_level = 1\n' "$2"
            ;;
        modelgate_auth)
            cat <<EOF

[[identity.issuer]]
issuer = "http://127.0.0.1:$JWKS_PORT"
jwks_uri = "http://127.0.0.1:$JWKS_PORT/jwks.json"
audiences = ["bench"]
typ = "at+jwt"

[[policy.rule]]
id = "bench"
effect = "allow"
groups = ["bench"]
classes = ["inference"]
EOF
            ;;
        modelgate_mask)
            seq 1 1000 | sed 's/^/internal-codename-/' >"$2-literals.txt"
            printf '\n[masking]\n[[masking.literals]]\nid = "codenames"\ncategory = "internal"\nfile = "%s-literals.txt"\n' "$2"
            ;;
    esac
}

stop_targets() {
    local t
    for t in $TARGETS; do
        [ "$t" = direct ] && continue
        eval "stop_pid \$PID_$t"
    done
}

label() {
    case $1 in
        direct) echo "direct (no proxy)" ;;
        nginx) echo "nginx ${NGINX_V#nginx/} (1 worker)" ;;
        modelgate) echo "modelgate (1 worker)" ;;
        modelgate_base) echo "modelgate baseline ($MODELGATE_BASE)${BASE_VARIANT:+ as $BASE_VARIANT}" ;;
        modelgate_rec) echo "modelgate + recording (event durability)" ;;
        modelgate_reci) echo "modelgate + recording (interval durability, 250 ms / 64 KiB)" ;;
        modelgate_rec1) echo "modelgate + recording (event durability, zstd level 1)" ;;
        modelgate_mask) echo "modelgate + masking (built-ins + 1000 literals)" ;;
        modelgate_auth) echo "modelgate + authn + policy (cached ES256 token)" ;;
    esac
}

rotate() {       # rotate N words...: the words starting at offset N (mod count)
    local n=$1; shift
    local a=("$@") i k=${#a[@]}
    for ((i=0; i<k; i++)); do printf '%s ' "${a[(i + n) % k]}"; done
}

declare -A H1_CPU H1_RPS H1_ERR SSE_MED SSE_P99 SSE_BAD SSE_CPU
TLS_LOAD=0
ALL_TARGETS="direct nginx $MG_VARIANTS"

# ------------------------------------------------------------------- h1-1k ---
run_wrk() {      # run_wrk PORT SECONDS OUTFILE [TARGET]: the auth variant sends its token
    local hdr=()
    case "${4:-}/$BASE_VARIANT" in
        modelgate_auth/* | modelgate_base/modelgate_auth) hdr=(-H "Authorization: Bearer $AUTH_TOKEN") ;;
    esac
    run_fg wrk -t"$THREADS" -c"$CONNS" -d"$2s" "${hdr[@]}" "$(scheme "${4:-}")://127.0.0.1:$1/1k" >"$3" 2>&1
}

scheme() {       # scheme TARGET: https for the proxies in the tls-1k load (the origin is plain)
    if [ "$TLS_LOAD" = 1 ] && [ "$1" != direct ]; then echo https; else echo http; fi
}

load_h1() {      # load_h1 [h1-1k|tls-1k]: tls-1k terminates TLS 1.3 at the proxies
    local load=${1:-h1-1k} oport opid t r out reqs rps errs c0 c1 cpu
    echo
    echo "== $load: wrk -t$THREADS -c$CONNS -d${DURATION}s, 1 KiB body, keep-alive; origin nginx ($ORIGIN_WORKERS workers)"
    alloc_port oport
    start_nginx origin-h1 write_origin_nginx origin-h1 "$oport"
    opid=$LAST_PID
    wait_http "$oport" "$opid" || { echo "origin nginx did not start:"; cat "$T/origin-h1/error.log"; exit 1; }
    TLS_LOAD=0
    [ "$load" = tls-1k ] && { make_tls_cert; TLS_LOAD=1; }
    start_targets "$load" "$oport" "$opid"
    for t in $TARGETS; do
        eval "port=\$PORT_$t"
        code=$(curl -sk -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $AUTH_TOKEN" "$(scheme "$t")://127.0.0.1:$port/1k")
        [ "$code" = 200 ] || echo "[$load] WARNING: $t answers /1k with HTTP $code"
        if [ "$WARMUP" != 0 ]; then run_wrk "$port" "$WARMUP" /dev/null "$t"; fi
    done
    for ((r=1; r<=REPEATS; r++)); do
        for t in $(rotate $((r - 1)) $TARGETS); do
            out=$T/wrk-$load-$t-$r.txt
            eval "port=\$PORT_$t pid=\$PID_$t"
            c0=$(cpu_ticks "$pid")
            run_wrk "$port" "$DURATION" "$out" "$t"
            c1=$(cpu_ticks "$pid")
            reqs=$(awk '/requests in/ {print $1}' "$out")
            rps=$(awk '/^Requests\/sec:/ {print $2}' "$out")
            errs=$(awk '/Non-2xx/ {n+=$NF} /Socket errors:/ {gsub(",", ""); n+=$4+$6+$8+$10} END{print n+0}' "$out")
            if [ -z "$reqs" ] || [ "$reqs" = 0 ]; then
                echo "[$load r$r] $t: wrk produced no requests:"; sed 's/^/    /' "$out"
                reqs=n/a; rps=n/a; cpu=n/a
            else
                cpu=$(calc %.2f 'v[1] * 1000000 / v[2] / v[3]' $((c1 - c0)) "$CLK_TCK" "$reqs")
            fi
            [ "$t" = direct ] && cpu=n/a   # the origin's CPU is not a proxy cost
            H1_CPU[$load/$t]+="$cpu "; H1_RPS[$load/$t]+="$rps "
            H1_ERR[$load/$t]=$(( ${H1_ERR[$load/$t]:-0} + errs ))
            printf '[%s r%d] %-10s req/s=%-10s requests=%-9s cpu_us_per_req=%-7s errors=%s\n' \
                "$load" "$r" "$t" "$rps" "$reqs" "$cpu" "$errs"
        done
    done
    stop_targets
    stop_pid "$opid"
    TLS_LOAD=0
}

make_tls_cert() {  # a self-signed P-256 certificate for 127.0.0.1, shared by nginx and modelgate
    [ -f "$T/tls/cert.pem" ] && return
    mkdir -p "$T/tls"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=127.0.0.1 \
        -addext subjectAltName=IP:127.0.0.1 -keyout "$T/tls/key.pem" -out "$T/tls/cert.pem" 2>/dev/null ||
        { echo "openssl could not make a certificate"; exit 1; }
    chmod 644 "$T/tls/key.pem"   # nginx workers run as nobody
}

# ------------------------------------------------------------------- sse-1 ---
load_sse() {
    echo
    echo "== sse-1: $SSE_STREAMS stream(s) at once, $SSE_EVENTS events each ${SSE_GAP_MS} ms apart; origin sse-bench"
    local oport opid t r line med p99 n pid c0 c1
    alloc_port oport
    start_bg origin-sse "$SSE_BENCH" origin --listen "127.0.0.1:$oport" --events "$SSE_EVENTS" --gap-ms "$SSE_GAP_MS"
    opid=$LAST_PID
    wait_http "$oport" "$opid" || { echo "sse-bench origin did not start:"; cat "$T/origin-sse.log"; exit 1; }
    start_targets sse-1 "$oport" "$opid"
    local timeout=$(( SSE_EVENTS * SSE_GAP_MS / 1000 + 30 ))
    for ((r=1; r<=REPEATS; r++)); do
        for t in $(rotate $((r - 1)) $TARGETS); do
            eval "port=\$PORT_$t pid=\$PID_$t"
            [ "$t" = direct ] || c0=$(cpu_ns "$pid")
            run_fg "$SSE_BENCH" client --url "http://127.0.0.1:$port/sse" --timeout-s "$timeout" \
                --streams "$SSE_STREAMS" >"$T/sse-client-$t-$r.out" 2>"$T/sse-client-$t-$r.err"
            if [ "$t" != direct ]; then
                c1=$(cpu_ns "$pid")
                SSE_CPU[$t]+="$(calc %.2f '(v[1] - v[2]) / 1000 / v[3]' "$c1" "$c0" "$((SSE_EVENTS * SSE_STREAMS))") "
            fi
            line=$(head -n 1 "$T/sse-client-$t-$r.out")
            n=$(sed -n 's/.*events=\([0-9]*\).*/\1/p' <<<"$line")
            med=$(sed -n 's/.*median_us=\([-0-9.]*\).*/\1/p' <<<"$line")
            p99=$(sed -n 's/.*p99_us=\([-0-9.]*\).*/\1/p' <<<"$line")
            # Masking may carry held-back text into one extra event at the end (the last
            # event's envelope with the rest of the text): more events is not a loss.
            if [ "${n:-0}" -lt "$((SSE_EVENTS * SSE_STREAMS))" ]; then
                echo "[sse-1 r$r] $t: WARNING: got ${n:-0} of $((SSE_EVENTS * SSE_STREAMS)) events: $(cat "$T/sse-client-$t-$r.err")"
                SSE_BAD[$t]=$(( ${SSE_BAD[$t]:-0} + 1 ))
                [ "${n:-0}" = 0 ] && { med=n/a; p99=n/a; }
            fi
            SSE_MED[$t]+="${med:-n/a} "; SSE_P99[$t]+="${p99:-n/a} "
            printf '[sse-1 r%d] %-10s %s cpu_us_per_event=%s\n' "$r" "$t" "${line:-(no output)}" \
                "$(awk '{print $NF}' <<<"${SSE_CPU[$t]:-n/a}")"
        done
    done
    stop_targets
    stop_pid "$opid"
}

# --------------------------------------------------------------------- main ---
for load in $LOADS; do
    case $load in
        h1-1k|tls-1k) load_h1 "$load" ;;
        sse-1) load_sse ;;
        *) echo "unknown load $load (known: h1-1k tls-1k sse-1)"; exit 1 ;;
    esac
done

# ------------------------------------------------------------------ summary ---
DATE=$(date -u '+%Y-%m-%d %H:%M UTC')
UPTIME_END=$(uptime)
[ -n "$MG_SKIP_REASON" ] && MG_NOTE="modelgate skipped: $MG_SKIP_REASON" ||
    MG_NOTE="modelgate: $MODELGATE ($(date -u -r "$MODELGATE" '+%Y-%m-%d %H:%M UTC'))"

echo
echo "================================================================ summary"
echo
echo "## $DATE — modelgate vs nginx vs direct"
echo
echo "- command: \`$CMD\`"
echo "- uptime before: \`$UPTIME_START\`"
echo "- uptime after: \`$UPTIME_END\`"
echo "- machine: $MACHINE"
echo "- peers: $NGINX_V; $WRK_V; $MG_NOTE"
echo "- medians of $REPEATS repeats; targets run in turn within each repeat (order rotated per repeat)"

for load in h1-1k tls-1k; do
    [[ " $LOADS " == *" $load "* ]] || continue
    ng_cpu=$(median ${H1_CPU[$load/nginx]:-}); ng_rps=$(median ${H1_RPS[$load/nginx]:-})
    echo
    note="origin nginx"
    [ "$load" = tls-1k ] && note="TLS 1.3 (P-256 certificate) at the proxies, plain origin nginx"
    echo "### $load — \`wrk -t$THREADS -c$CONNS -d${DURATION}s\`, 1 KiB body, keep-alive, $note"
    echo
    echo "| target | CPU µs/req | ÷ nginx | req/s | ÷ nginx | errors | CPU µs/req per repeat |"
    echo "|---|---:|---:|---:|---:|---:|---|"
    for t in $ALL_TARGETS; do
        if [ -z "${H1_RPS[$load/$t]:-}" ]; then
            echo "| $(label "$t") | skipped | | | | | |"; continue
        fi
        cpu=$(median ${H1_CPU[$load/$t]}); rps=$(median ${H1_RPS[$load/$t]})
        rps_r=$(safe_div %.2f "$rps" "$ng_rps")
        if [ "$t" = direct ]; then cpu_cell="–"; cpu_r="–"; per="–"
        else cpu_cell=$(calc %.2f 'v[1]' "$cpu"); cpu_r=$(safe_div %.2f "$cpu" "$ng_cpu"); per=${H1_CPU[$load/$t]% }
        fi
        printf '| %s | %s | %s | %s | %s | %s | %s |\n' "$(label "$t")" "$cpu_cell" "$cpu_r" \
            "$(calc %.0f 'v[1]' "$rps")" "$rps_r" "${H1_ERR[$load/$t]:-0}" "$per"
    done
done

if [[ " $LOADS " == *" sse-1 "* ]]; then
    d_med=$(median ${SSE_MED[direct]:-})
    ng_added=$(calc %.1f 'v[1] - v[2]' "$(median ${SSE_MED[nginx]:-})" "$d_med")
    echo
    echo "### sse-1 — $SSE_STREAMS stream(s) at once, $SSE_EVENTS events each ${SSE_GAP_MS} ms apart, origin \`sse-bench origin\`"
    echo
    ng_cpu=$(median ${SSE_CPU[nginx]:-})
    echo "| target | median transit µs | p99 transit µs | added median µs/token vs direct | ÷ nginx's added | CPU µs/event | ÷ nginx | median per repeat |"
    echo "|---|---:|---:|---:|---:|---:|---:|---|"
    for t in $ALL_TARGETS; do
        if [ -z "${SSE_MED[$t]:-}" ]; then
            echo "| $(label "$t") | skipped | | | | | | |"; continue
        fi
        med=$(median ${SSE_MED[$t]}); p99=$(median ${SSE_P99[$t]})
        if [ "$t" = direct ]; then added="–"; ratio="–"; cpu="–"; cpu_r="–"
        else added=$(calc %.1f 'v[1] - v[2]' "$med" "$d_med"); ratio=$(safe_div %.2f "$added" "$ng_added")
            cpu=$(median ${SSE_CPU[$t]:-}); cpu_r=$(safe_div %.2f "$cpu" "$ng_cpu")
        fi
        bad=""; [ -n "${SSE_BAD[$t]:-}" ] && bad=" (${SSE_BAD[$t]} incomplete runs)"
        printf '| %s | %s | %s | %s | %s | %s | %s | %s%s |\n' "$(label "$t")" "$(calc %.1f 'v[1]' "$med")" \
            "$(calc %.1f 'v[1]' "$p99")" "$added" "$ratio" "$cpu" "$cpu_r" "${SSE_MED[$t]% }" "$bad"
    done
fi
echo
