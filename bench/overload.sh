#!/usr/bin/env bash
# CPM overload benchmark (issue 12): cpm's full durable pager path and Kamailio 5.6's relay under
# the same open-loop overload, same machine, same run.
#
#   bench/overload.sh [--clean-rate R] [--phase-secs S] [--variants "cpm kamailio"]
#                     [--threads N] [--cpm-bin PATH] [--no-build] [--wait-idle PCT]
#                     [--quick] [--keep] [--tag NAME]
#
# For each variant, on a freshly started server with a fresh data directory:
#   cold      the clean rate R offered to the node right after it became healthy (and the two
#             REGISTERs the load needs): S seconds;
#   then, after 5 s idle, one continuous ramp: R, 2R, 4R (S seconds each), and 0.5R for 2S
#   seconds (recovery: how long until the node is clean again).
# R (default 7000/s) is the clean rate of cpm's full durable path measured by bench/pager.sh on
# this machine (README); both variants get the same offered rates.
#
# Load: SIPp 3.6.1 UAC (bench/sipp/uac_pager_overload.xml, run with -nd: no BYE/CANCEL on an
# unexpected answer, which would double the work of an overloaded server) -> server -> SIPp UAS
# registered as bob (bench/sipp/uas_pager.xml). The UAC is alice's registered device (REGISTER
# with digest from its port before the run), as in bench/pager.sh. Open loop: the UAC offers its
# rate whatever the answers (-l high, -recv_timeout 5 s), so a server that stops answering sees
# retransmissions (T1 = 500 ms, doubling) and then timeouts, not a politely slowing client.
# Counted per second (SIPp -trace_stat -fd 1): 2xx (goodput), 503 (refusals), timeouts and other
# failures, retransmissions; 2xx response times (SIPp -trace_rtt); the server's memory
# (cpm: VmRSS; Kamailio: PSS of all its processes, i.e. private memory plus its share of the
# shared-memory segment) every second; cpm's /metrics before and after every phase.
#
# Output: Markdown on stdout and in bench/results/overload-<date>[-quick][-TAG].md (-2, -3...
# when that file exists), and next to it the plot (SVG) of goodput against offered load and of
# goodput and refusals over time; raw files in a work directory under ${TMPDIR:-/tmp}.
#
# Requirements: sipp (sip-tester), kamailio, python3, curl, cargo (unless --cpm-bin or
# --no-build). Traffic stays on 127.0.0.1; every process started here is stopped by PID on exit.
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$BENCH_DIR/lib.sh"
REPO_ROOT=$(cd "$BENCH_DIR/.." && pwd)
PY="python3 $BENCH_DIR/sipbench.py"
OPY="python3 $BENCH_DIR/overload.py"

CLEAN_RATE=7000
PHASE_SECS=10
THREADS=2
BUILD=1
KEEP=0
QUICK=0
VARIANTS="cpm kamailio"
CPM_BIN=""
TAG=""
WAIT_IDLE=25

usage() { sed -n '2,/^set -euo/p' "$0" | grep '^#' | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
    case "$1" in
        --clean-rate) CLEAN_RATE="$2"; shift 2 ;;
        --phase-secs) PHASE_SECS="$2"; shift 2 ;;
        --threads) THREADS="$2"; shift 2 ;;
        --variants) VARIANTS="$2"; shift 2 ;;
        --cpm-bin) CPM_BIN="$2"; BUILD=0; shift 2 ;;
        --no-build) BUILD=0; shift ;;
        --wait-idle) WAIT_IDLE="$2"; shift 2 ;;
        --quick) QUICK=1; shift ;;
        --keep) KEEP=1; shift ;;
        --tag) TAG="$2"; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "unknown argument: $1" >&2; usage >&2; exit 2 ;;
    esac
done
for v in $VARIANTS; do
    case "$v" in cpm|kamailio) ;; *) echo "unknown variant $v" >&2; exit 2 ;; esac
done
[[ "$CLEAN_RATE" =~ ^[0-9]+$ && "$CLEAN_RATE" -ge 2 ]] || { echo "--clean-rate: a whole number >= 2" >&2; exit 2; }
[[ "$PHASE_SECS" =~ ^[0-9]+$ && "$PHASE_SECS" -ge 2 ]] || { echo "--phase-secs: a whole number >= 2" >&2; exit 2; }
if [ "$QUICK" = 1 ]; then CLEAN_RATE=1000; PHASE_SECS=4; fi


# ------------------------------------------------------------------ dependencies
need_pkgs=()
command -v sipp >/dev/null 2>&1 || need_pkgs+=(sip-tester)
if [[ " $VARIANTS " == *" kamailio "* ]]; then
    { command -v kamailio >/dev/null 2>&1 && command -v kamcmd >/dev/null 2>&1; } || need_pkgs+=(kamailio)
fi
if [ ${#need_pkgs[@]} -gt 0 ]; then
    log "installing ${need_pkgs[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
fi
for c in sipp python3 curl timeout; do command -v "$c" >/dev/null 2>&1 || die "$c not found"; done

# ------------------------------------------------------------------ process bookkeeping
PIDS=()
WORK=$(mktemp -d "${TMPDIR:-/tmp}/overload-bench.XXXXXX")
cleanup() {
    local rc=$? p
    for p in "${PIDS[@]}"; do stop_pid "$p" 3; done
    if [ "$KEEP" = 0 ] && [ "$rc" = 0 ]; then
        find "$WORK" -name '*_rtt.csv' -delete 2>/dev/null || true
        find "$WORK" -name 'cpm.db*' -delete 2>/dev/null || true
    fi
    log "work directory: $WORK"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

SIPP_LOAD_OPTS=(-buff_size 4194304 -max_recv_loops 10000 -max_sched_loops 10000 -nostdin)

# ------------------------------------------------------------------ servers (as bench/pager.sh)
SERVER_PID=""
SERVER_PORT=""
HTTP_PORT=""
start_kamailio() {
    local dir=$WORK/kamailio
    mkdir -p "$dir"
    SERVER_PORT=$(freeport --tcp)
    HTTP_PORT=""
    sed -e "s/KAM_PORT/$SERVER_PORT/g" -e "s#KAM_CTL#$dir/kam.ctl#g" \
        "$BENCH_DIR/kamailio.cfg.tmpl" >"$dir/kam.cfg"
    rm -f "$dir/kam.ctl" "$dir/kam.pid"
    kamailio -c -f "$dir/kam.cfg" >"$dir/check.log" 2>&1 || { cat "$dir/check.log" >&2; die "kamailio cfg check failed"; }
    kamailio -DD -E -f "$dir/kam.cfg" -n "$THREADS" -m 1024 -M 32 -P "$dir/kam.pid" -w "$dir" \
        >>"$dir/kamailio.log" 2>&1 &
    SERVER_PID=$!
    PIDS+=("$SERVER_PID")
    local i
    for ((i = 0; i < 100; i++)); do
        kamcmd -s "unix:$dir/kam.ctl" core.version >/dev/null 2>&1 && break
        kill -0 "$SERVER_PID" 2>/dev/null || { cat "$dir/kamailio.log" >&2; die "kamailio exited"; }
        sleep 0.1
    done
    [ "$i" -lt 100 ] || die "kamailio not ready after 10 s"
    log "kamailio ready on 127.0.0.1:$SERVER_PORT (pid $SERVER_PID, -n $THREADS)"
}
build_cpm() {
    if [ -n "$CPM_BIN" ]; then
        :
    elif [ "$BUILD" = 1 ]; then
        log "cargo build --release -p cpm"
        (cd "$REPO_ROOT" && cargo build --release -p cpm) >"$WORK/cargo-build.log" 2>&1 ||
            { tail -30 "$WORK/cargo-build.log" >&2; die "cargo build failed (log: $WORK/cargo-build.log)"; }
        CPM_BIN=$(cd "$REPO_ROOT" && cargo metadata --format-version 1 --no-deps 2>/dev/null |
            python3 -c 'import json,sys;print(json.load(sys.stdin)["target_directory"])')/release/cpm
    else
        CPM_BIN=${CARGO_TARGET_DIR:-$REPO_ROOT/target}/release/cpm
    fi
    [ -x "$CPM_BIN" ] || die "$CPM_BIN not found"
}
start_cpm() {
    local dir=$WORK/cpm u
    mkdir -p "$dir/data"
    for u in alice bob; do
        "$CPM_BIN" admin user add "$u@localhost" --password "${u}pw" --data-dir "$dir/data" \
            >>"$dir/admin.log" 2>&1 || { cat "$dir/admin.log" >&2; die "cpm admin user add $u failed"; }
    done
    # One source address carries the whole load: lift the per-source limits (as bench/pager.sh);
    # overload control itself keeps its defaults. CPM_EXTRA_TOML: more configuration.
    printf '[limits]\nrequests_per_sec_per_source = 1000000\nburst_per_source = 1000000\nudp_packets_per_sec_per_source = 0\n' >"$dir/cpm.toml"
    [ -z "${CPM_EXTRA_TOML:-}" ] || printf '%b\n' "$CPM_EXTRA_TOML" >>"$dir/cpm.toml"
    SERVER_PORT=$(freeport --tcp)
    HTTP_PORT=$(freeport --tcp)
    "$CPM_BIN" serve --domain localhost --sip-listen "127.0.0.1:$SERVER_PORT" \
        --http-listen "127.0.0.1:$HTTP_PORT" --data-dir "$dir/data" --threads "$THREADS" \
        --config "$dir/cpm.toml" >>"$dir/cpm.log" 2>&1 &
    SERVER_PID=$!
    PIDS+=("$SERVER_PID")
    local i
    for ((i = 0; i < 100; i++)); do
        curl -sf --max-time 1 "http://127.0.0.1:$HTTP_PORT/health" >/dev/null 2>&1 && break
        kill -0 "$SERVER_PID" 2>/dev/null || { tail -30 "$dir/cpm.log" >&2; die "cpm serve exited"; }
        sleep 0.1
    done
    [ "$i" -lt 100 ] || { tail -30 "$dir/cpm.log" >&2; die "cpm not healthy after 10 s"; }
    log "cpm ready on 127.0.0.1:$SERVER_PORT (pid $SERVER_PID, --threads $THREADS, http $HTTP_PORT)"
}
stop_server() {
    stop_pid "$SERVER_PID" 10
    untrack "$SERVER_PID"
    SERVER_PID=""
}
metrics() { if [ -n "$HTTP_PORT" ]; then $PY metrics "http://127.0.0.1:$HTTP_PORT/metrics"; else echo '{}'; fi; }

register() {  # register DIR CSV USER LOCAL_PORT: REGISTER (digest when challenged) from that port
    local dir=$1 csv=$2 user=$3 port=$4
    timeout 15 sipp "127.0.0.1:$SERVER_PORT" -sf "$BENCH_DIR/sipp/register_auth.xml" -inf "$csv" \
        -au "$user" -ap "${user}pw" -i 127.0.0.1 -p "$port" -m 1 -nostdin -recv_timeout 5000 \
        -timeout 10 >"$dir/register-$user-$port.out" 2>&1 ||
        { tail -20 "$dir/register-$user-$port.out" >&2; die "REGISTER of $user from port $port failed"; }
}

# ------------------------------------------------------------------ one variant
PHASES=$WORK/phases.jsonl
: >"$PHASES"

phase() {  # phase VARIANT NAME RATE SECONDS: one SIPp UAC run at RATE/s for SECONDS
    local server=$1 name=$2 rate=$3 secs=$4 dir=$WORK/$1 sd m0 m1 t0 t1 rc=0 run
    sd=$dir/$name
    mkdir -p "$sd"
    run=$(printf '%x%04x' "$(date +%s)" "$RANDOM")
    m0=$(metrics)
    t0=$(date +%s.%N)
    # -l: enough concurrent calls for 5 s of the rate (the receive timeout): open loop.
    (cd "$sd" && exec timeout -k 5 $((secs + 40)) sipp "127.0.0.1:$SERVER_PORT" \
        -sf "$BENCH_DIR/sipp/uac_pager_overload.xml" -inf "$dir/alice.csv" -i 127.0.0.1 -p "$APORT" \
        -set run "$run" -r "$rate" -m $((rate * secs)) -l $((rate * 6 + 100)) -nd \
        "${SIPP_LOAD_OPTS[@]}" -recv_timeout 5000 -timeout $((secs + 30)) \
        -trace_stat -stf "$sd/uac.csv" -fd 1 -trace_rtt -rtt_freq 1000 \
        >"$sd/uac.out" 2>"$sd/uac.err") &
    local uacpid=$!
    PIDS+=("$uacpid")
    wait "$uacpid" || rc=$?
    untrack "$uacpid"
    t1=$(date +%s.%N)
    m1=$(metrics)
    [ "$rc" = 0 ] || [ "$rc" = 1 ] || log "  sipp UAC exit code $rc in $name (see $sd/uac.err)"
    kill -0 "$SERVER_PID" 2>/dev/null || die "$server died during $name"
    $OPY phase --server "$server" --name "$name" --rate "$rate" --secs "$secs" --t0 "$t0" --t1 "$t1" \
        --dir "$sd" --metrics0 "$m0" --metrics1 "$m1" --out "$PHASES"
    log "  $server $name: $(tail -1 "$PHASES" | $OPY brief)"
}

run_variant() {  # run_variant VARIANT
    local server=$1 dir=$WORK/$1 uport upid spid r=$CLEAN_RATE s=$PHASE_SECS
    mkdir -p "$dir"
    if [ "$server" = kamailio ]; then start_kamailio; else start_cpm; fi
    $OPY sample "$SERVER_PID" "$dir/memory.jsonl" &
    spid=$!
    PIDS+=("$spid")
    uport=$(freeport)
    APORT=$(freeport)
    printf 'SEQUENTIAL\nbob;localhost;%s;bobpw;000000000002;bob;bob\n' "$uport" >"$dir/bob.csv"
    printf 'SEQUENTIAL\nalice;localhost;%s;alicepw;000000000001;bob;alice\n' "$APORT" >"$dir/alice.csv"
    (cd "$dir" && exec sipp -sf "$BENCH_DIR/sipp/uas_pager.xml" -i 127.0.0.1 -p "$uport" \
        "${SIPP_LOAD_OPTS[@]}" -trace_stat -stf "$dir/uas.csv" -fd 1 >"$dir/uas.out" 2>&1) &
    upid=$!
    PIDS+=("$upid")
    sleep 0.3
    kill -0 "$upid" 2>/dev/null || { cat "$dir/uas.out" >&2; die "SIPp UAS did not start"; }
    register "$dir" "$dir/bob.csv" bob "$(freeport)"
    register "$dir" "$dir/alice.csv" alice "$APORT"
    log "== $server: cold start at $r/s, then $r, $((2 * r)), $((4 * r)) and $((r / 2))/s (${s}s each, recovery $((2 * s))s)"
    phase "$server" cold "$r" "$s"
    sleep 5
    phase "$server" 1x "$r" "$s"
    phase "$server" 2x $((2 * r)) "$s"
    phase "$server" 4x $((4 * r)) "$s"
    phase "$server" recovery $((r / 2)) $((2 * s))
    sleep 2
    stop_pid "$upid" 3
    untrack "$upid"
    stop_server
    stop_pid "$spid" 3
    untrack "$spid"
}

# ------------------------------------------------------------------ main
log "work directory: $WORK"
LOAD_BEFORE=$(loadavg)
[[ " $VARIANTS " == *" cpm "* ]] && build_cpm
first=1
for server in $VARIANTS; do
    [ "$first" = 1 ] || sleep 10
    first=0
    if [ "$WAIT_IDLE" != 0 ]; then
        if busy=$($PY idle --max-pct "$WAIT_IDLE" --timeout 600); then
            log "machine CPU use before $server: $busy % of a core"
        else
            log "machine still busy before $server ($busy % of a core after 10 min): running anyway"
        fi
    fi
    run_variant "$server"
done

DATE=$(date +%Y-%m-%d)
mkdir -p "$BENCH_DIR/results"
BASE=$BENCH_DIR/results/overload-$DATE
[ "$QUICK" = 1 ] && BASE=$BASE-quick
[ -n "$TAG" ] && BASE=$BASE-$TAG
MD=$BASE.md
n=2
while [ -e "$MD" ]; do MD=$BASE-$n.md; n=$((n + 1)); done
SVG=${MD%.md}.svg
# Each probe may fail (sipp -v exits 99): `|| true`, so that set -e keeps out of it.
SIPP_V=$(sipp -v 2>&1 | grep -o 'SIPp v[^ ]*' | head -1 | tr -d '\r' || true)
KAM_V=$(kamailio -v 2>/dev/null | sed -n 's/^version: kamailio //p' | cut -d' ' -f1 || true)
CPM_V=$([ -n "$CPM_BIN" ] && "$CPM_BIN" --version 2>/dev/null || echo n/a)
GIT_V=$(git -C "$REPO_ROOT" log -1 --format='%h %cd' --date=format:'%Y-%m-%d %H:%M' 2>/dev/null || echo n/a)
[ -z "$(git -C "$REPO_ROOT" status --porcelain --untracked-files=no 2>/dev/null || true)" ] ||
    GIT_V="$GIT_V (tracked files modified)"
HEADERS=(
    --header "- machine: \`nproc\` = $(nproc); CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'); load average before/after: $LOAD_BEFORE / $(loadavg) (the machine is shared)"
    --header "- versions: $SIPP_V; kamailio $KAM_V; $CPM_V"
    --header "- repository at run time: $GIT_V"
    --header "- parity: cpm \`--threads $THREADS\` (full durable pager path, fsync per commit); Kamailio \`-n $THREADS -m 1024 -M 32\` (relay, nothing stored); UDP on 127.0.0.1; clean rate R = $CLEAN_RATE/s, ${PHASE_SECS} s per phase; 2xx response times from SIPp (-trace_rtt, 4 ms clock ticks)"
)
$OPY report --phases "$PHASES" --work "$WORK" --clean-rate "$CLEAN_RATE" --md "$MD" --svg "$SVG" \
    --date "$(date '+%Y-%m-%d %H:%M %Z')" "${HEADERS[@]}"
log "report written to $MD (plot $SVG)"
