#!/usr/bin/env bash
# SIP core benchmark: `cpm serve` vs Kamailio 5.6 on the same machine, same run, same SIPp load.
#
#   bench/sip-core.sh [--only cpm|kamailio|direct] [--servers "cpm kamailio direct"] [--quick] [--rates "500 1000 ..."] [--duration S]
#                     [--message-rates "..."] [--call-rates "..."] [--threads N] [--probe-rate R]
#                     [--hold-ms MS] [--no-build] [--keep] [--scenarios "message call"]
#
# Scenarios (SIPp 3.6.1 UAC -> server under test -> SIPp UAS registered as bob):
#   message  MESSAGE alice -> bob, UAS answers 200                 (bench/sipp/uac_message.xml)
#   call     INVITE/200/ACK/BYE/200, ACK and BYE along the Record-Route set (bench/sipp/uac_call.xml)
# Ramp per server and scenario: steps of increasing offered rate, each DURATION seconds
# (-m rate*DURATION); stop at the first step that is not clean (see bench/sipbench.py `step`).
# The load generator (127.0.0.1) is a trusted peer on both servers: no digest.
# Servers (default all three, in this order per scenario): cpm, kamailio, and direct: no server,
# the SIPp UAC talks to the SIPp UAS itself (same scenarios, same ramp), which measures the load
# generator's own ceiling on this machine in the same run (a relay cannot be measured above it).
#
# Output: Markdown tables on stdout and in bench/results/sip-core-<date>.md; raw files (SIPp
# stats, logs, per-step JSON) in a work directory under ${TMPDIR:-/tmp} (path printed).
#
# Requirements: sipp (sip-tester), kamailio (installed with apt-get when missing), python3,
# curl, cargo (for the cpm half). Traffic stays on 127.0.0.1; every process started here is
# stopped by PID on exit.
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$BENCH_DIR/lib.sh"
REPO_ROOT=$(cd "$BENCH_DIR/.." && pwd)
PY="python3 $BENCH_DIR/sipbench.py"

ONLY=""
SERVERS_ARG="cpm kamailio direct"
QUICK=0
RATES_MESSAGE=""
RATES_CALL=""
DURATION=""
THREADS=2
PROBE_RATE=100
BUILD=1
KEEP=0
SCENARIOS="message call"
CALL_HOLD_MS=0

usage() { sed -n '2,/^set -euo/p' "$0" | grep '^#' | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
    case "$1" in
        --only) ONLY="$2"; shift 2 ;;
        --servers) SERVERS_ARG="$2"; shift 2 ;;
        --quick) QUICK=1; shift ;;
        --rates) RATES_MESSAGE="$2"; RATES_CALL="$2"; shift 2 ;;
        --message-rates) RATES_MESSAGE="$2"; shift 2 ;;
        --call-rates) RATES_CALL="$2"; shift 2 ;;
        --duration) DURATION="$2"; shift 2 ;;
        --threads) THREADS="$2"; shift 2 ;;
        --probe-rate) PROBE_RATE="$2"; shift 2 ;;
        --scenarios) SCENARIOS="$2"; shift 2 ;;
        --hold-ms) CALL_HOLD_MS="$2"; shift 2 ;;
        --no-build) BUILD=0; shift ;;
        --keep) KEEP=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "unknown argument: $1" >&2; usage >&2; exit 2 ;;
    esac
done
case "$ONLY" in ""|cpm|kamailio|direct) ;; *) echo "--only cpm|kamailio|direct" >&2; exit 2 ;; esac
if [ "$QUICK" = 1 ]; then
    : "${RATES_MESSAGE:=500 1000 2000}" "${RATES_CALL:=500 1000 2000}"
    : "${DURATION:=5}"
else
    : "${RATES_MESSAGE:=500 1000 2000 4000 6000 8000 10000 12000 14000 16000 20000 24000 28000 32000 36000 40000 48000 56000 64000}"
    # a call is ~3x the proxy work of a MESSAGE (INVITE/100/200/ACK/BYE/200): finer steps
    : "${RATES_CALL:=500 1000 1500 2000 2500 3000 3500 4000 5000 6000 8000 10000 12000 16000 20000 24000}"
    : "${DURATION:=10}"
fi
SERVERS=" ${ONLY:-$SERVERS_ARG} "
for s in $SERVERS; do
    case "$s" in cpm|cpm1|kamailio|direct) ;; *) echo "unknown server $s" >&2; exit 2 ;; esac
done


# ------------------------------------------------------------------ dependencies
need_pkgs=()
command -v sipp >/dev/null 2>&1 || need_pkgs+=(sip-tester)
if [[ " $SERVERS " == *" kamailio "* ]]; then
    { command -v kamailio >/dev/null 2>&1 && command -v kamcmd >/dev/null 2>&1; } || need_pkgs+=(kamailio)
fi
if [ ${#need_pkgs[@]} -gt 0 ]; then
    log "installing ${need_pkgs[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
fi
for c in sipp python3 curl timeout; do command -v "$c" >/dev/null 2>&1 || die "$c not found"; done

# ------------------------------------------------------------------ process bookkeeping
PIDS=()
WORK=$(mktemp -d "${TMPDIR:-/tmp}/sip-core-bench.XXXXXX")
cleanup() {
    local rc=$? p
    for p in "${PIDS[@]}"; do stop_pid "$p" 3; done
    if [ "$KEEP" = 0 ] && [ "$rc" = 0 ]; then
        find "$WORK" -name '*_rtt.csv' -delete 2>/dev/null || true
    fi
    log "work directory: $WORK"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM


SIPP_LOAD_OPTS=(-buff_size 4194304 -max_recv_loops 10000 -max_sched_loops 10000 -nostdin)

# ------------------------------------------------------------------ servers
SERVER_PID=""
SERVER_PORT=""
start_kamailio() {
    local dir=$WORK/kamailio
    mkdir -p "$dir"
    SERVER_PORT=$(freeport --tcp)
    sed -e "s/KAM_PORT/$SERVER_PORT/g" -e "s#KAM_CTL#$dir/kam.ctl#g" \
        "$BENCH_DIR/kamailio.cfg.tmpl" >"$dir/kam.cfg"
    grep -q 'record_route()' "$dir/kam.cfg" || die "kamailio cfg has no record_route()"
    rm -f "$dir/kam.ctl" "$dir/kam.pid"
    kamailio -c -f "$dir/kam.cfg" >"$dir/check.log" 2>&1 || { cat "$dir/check.log" >&2; die "kamailio cfg check failed"; }
    # -n: UDP workers = cpm worker threads; -m 1024: 256 MB gives artificial 500s (peers README)
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
    log "kamailio $(kamailio -v | sed -n 's/^version: //p' | head -1) ready on 127.0.0.1:$SERVER_PORT (pid $SERVER_PID, -n $THREADS)"
}
kam_shm() {  # Kamailio shared memory in use / max used / size (MB)
    kamcmd -s "unix:$WORK/kamailio/kam.ctl" core.shmmem m 2>/dev/null |
        awk '/real_used|max_used|total/ {gsub(/[^0-9]/, "", $2); v[$1] = $2}
             END {printf "shm MB used %s, max used %s of %s", v["real_used:"], v["max_used:"], v["total:"]}'
}
kam_stats() {  # kam_stats SCENARIO: a few core counters (shows that ACK/BYE traversed the proxy)
    local re='core:rcv_requests_(invite|ack|bye|register) |core:rcv_replies_2xx_(invite|bye) '
    [ "$1" = message ] && re='core:rcv_requests_(message|register) |core:rcv_replies_2xx_message '
    kamcmd -s "unix:$WORK/kamailio/kam.ctl" stats.get_statistics core: 2>/dev/null |
        grep -E "$re" | sed 's/^core://' | tr -d ' ' | tr '\n' ' '
}

CPM_BIN=$REPO_ROOT/target/release/cpm
build_cpm() {
    if [ "$BUILD" = 1 ]; then
        log "cargo build --release -p cpm"
        (cd "$REPO_ROOT" && cargo build --release -p cpm) >"$WORK/cargo-build.log" 2>&1 ||
            { tail -30 "$WORK/cargo-build.log" >&2; die "cargo build failed (log: $WORK/cargo-build.log)"; }
        CPM_BIN=$(cd "$REPO_ROOT" && cargo metadata --format-version 1 --no-deps 2>/dev/null |
            python3 -c 'import json,sys;print(json.load(sys.stdin)["target_directory"])')/release/cpm
    fi
    [ -x "$CPM_BIN" ] || die "$CPM_BIN not found"
    local help
    help=$("$CPM_BIN" serve --help 2>&1) || die "$CPM_BIN serve --help failed: $help"
    [[ "$help" == *--trusted-peer* && "$help" == *--threads* ]] ||
        die "$CPM_BIN serve lacks --trusted-peer or --threads"
}
start_cpm() {
    local dir=$WORK/cpm u hport threads=${1:-$THREADS}
    if [ ! -d "$dir/data" ]; then
        mkdir -p "$dir/data"
        for u in alice bob; do
            "$CPM_BIN" admin user add "$u@localhost" --password "${u}pw" --data-dir "$dir/data" \
                >>"$dir/admin.log" 2>&1 || { cat "$dir/admin.log" >&2; die "cpm admin user add $u failed"; }
        done
    fi
    SERVER_PORT=$(freeport --tcp)
    hport=$(freeport --tcp)
    "$CPM_BIN" serve --domain localhost --sip-listen "127.0.0.1:$SERVER_PORT" \
        --http-listen "127.0.0.1:$hport" --data-dir "$dir/data" --trusted-peer 127.0.0.1 \
        --threads "$threads" >>"$dir/cpm.log" 2>&1 &
    SERVER_PID=$!
    PIDS+=("$SERVER_PID")
    local i
    for ((i = 0; i < 100; i++)); do
        curl -sf --max-time 1 "http://127.0.0.1:$hport/health" >/dev/null 2>&1 && break
        kill -0 "$SERVER_PID" 2>/dev/null || { tail -30 "$dir/cpm.log" >&2; die "cpm serve exited"; }
        sleep 0.1
    done
    [ "$i" -lt 100 ] || { tail -30 "$dir/cpm.log" >&2; die "cpm not healthy after 10 s"; }
    log "cpm ready on 127.0.0.1:$SERVER_PORT (pid $SERVER_PID, --threads $threads, http $hport)"
}
start_cpm1() {  # one Node shard (--threads 1): the A/B of using every core, in the same run
    start_cpm 1
}
start_direct() {  # no server: run_scenario points the UAC at the UAS
    SERVER_PID=""
    SERVER_PORT=""
    log "direct: SIPp UAC -> SIPp UAS, no server (the load generator's ceiling)"
}
stop_server() {
    [ -n "$SERVER_PID" ] || return 0
    stop_pid "$SERVER_PID" 10
    untrack "$SERVER_PID"
    SERVER_PID=""
}

# ------------------------------------------------------------------ one scenario ramp
RESULTS=$WORK/results.jsonl
: >"$RESULTS"

register_bob() {  # register_bob DIR UAS_PORT
    local dir=$1 uport=$2 rport
    rport=$(freeport)
    timeout 15 sipp "127.0.0.1:$SERVER_PORT" -sf "$BENCH_DIR/sipp/register.xml" -inf "$dir/bob.csv" \
        -i 127.0.0.1 -p "$rport" -m 1 -nostdin -recv_timeout 5000 -timeout 10 \
        >"$dir/register.out" 2>&1
}

run_scenario() {  # run_scenario SERVER SCENARIO
    local server=$1 scen=$2 dir uport aport upid rate calls limit step=0 rc
    dir=$WORK/$server/$scen
    mkdir -p "$dir"
    uport=$(freeport)
    aport=$(freeport)
    printf 'SEQUENTIAL\nbob;localhost;%s;bobpw;000000000002;bob;bob\n' "$uport" >"$dir/bob.csv"
    printf 'SEQUENTIAL\nalice;localhost;%s;alicepw;000000000001;bob;alice\n' "$aport" >"$dir/alice.csv"

    # the UAS stays up for the whole ramp; its stat CSV is read after each step
    (cd "$dir" && exec sipp -sf "$BENCH_DIR/sipp/uas_$scen.xml" -i 127.0.0.1 -p "$uport" \
        "${SIPP_LOAD_OPTS[@]}" -trace_stat -stf "$dir/uas.csv" -fd 1 >"$dir/uas.out" 2>&1) &
    upid=$!
    PIDS+=("$upid")
    sleep 0.5
    kill -0 "$upid" 2>/dev/null || { cat "$dir/uas.out" >&2; die "SIPp UAS did not start"; }
    if [ "$server" = direct ]; then
        # The UAS is the "server": its port is the UAC's destination, its process is measured.
        SERVER_PORT=$uport
        SERVER_PID=$upid
    fi

    local rates=$RATES_MESSAGE
    [ "$scen" = call ] && rates=$RATES_CALL
    log "== $server / $scen: UAS on $uport, ramp: $rates (${DURATION}s each)"
    for rate in $rates; do
        step=$((step + 1))
        local sd=$dir/step-$rate snap0 snap1 uas0 uas1 usnap0 usnap1 ppid uacpid extra=()
        mkdir -p "$sd"
        # (re-)register bob -> UAS before every step: the binding never expires mid-ramp
        [ "$server" = direct ] || register_bob "$dir" "$uport" || { tail -20 "$dir/register.out" >&2; die "REGISTER of bob failed on $server"; }
        calls=$((rate * DURATION))
        limit=$((rate * 2 > 200 ? rate * 2 : 200))
        [ "$scen" = call ] && extra=(-d "$CALL_HOLD_MS")
        [ "$scen" = call ] && [ "$CALL_HOLD_MS" -gt 0 ] && limit=$((limit + rate * CALL_HOLD_MS / 1000 * 2))
        uas0=$($PY uasnap "$dir/uas.csv")
        usnap0=$($PY procsnap "$upid")
        snap0=$($PY procsnap "$SERVER_PID" --ports "server=$SERVER_PORT,uas=$uport,uac=$aport")
        $PY probe --server "127.0.0.1:$SERVER_PORT" --kind "$scen" --rate "$PROBE_RATE" \
            --duration "$DURATION" --out "$sd/probe.json" >"$sd/probe.log" 2>&1 &
        ppid=$!
        PIDS+=("$ppid")
        rc=0
        # The UAC runs in the background and is waited for, so that a signal to this script is
        # handled at once (the cleanup trap stops it by PID). `times` before/after: the shell's
        # children CPU grows by the UAC's alone here (load-generator saturation check).
        times >"$sd/uac.times0"
        (cd "$sd" && exec timeout -k 5 $((DURATION + 45)) sipp "127.0.0.1:$SERVER_PORT" \
            -sf "$BENCH_DIR/sipp/uac_$scen.xml" -inf "$dir/alice.csv" -i 127.0.0.1 -p "$aport" \
            -r "$rate" -m "$calls" -l "$limit" "${extra[@]}" "${SIPP_LOAD_OPTS[@]}" \
            -recv_timeout 5000 -timeout $((DURATION + 35)) \
            -trace_stat -stf "$sd/uac.csv" -fd 1 -trace_rtt -rtt_freq 1000 \
            >"$sd/uac.out" 2>"$sd/uac.err") &
        uacpid=$!
        PIDS+=("$uacpid")
        wait "$uacpid" || rc=$?
        untrack "$uacpid"
        times >"$sd/uac.times1"
        snap1=$($PY procsnap "$SERVER_PID" --ports "server=$SERVER_PORT,uas=$uport,uac=$aport" --rcvbuf)
        usnap1=$($PY procsnap "$upid")
        wait "$ppid" 2>/dev/null || true
        untrack "$ppid"
        sleep 2   # let late UAS-side retransmissions / stats land (UAS dumps stats every second)
        uas1=$($PY uasnap "$dir/uas.csv")
        [ "$rc" = 0 ] || [ "$rc" = 1 ] || log "sipp UAC exit code $rc (see $sd/uac.err)"
        kill -0 "$SERVER_PID" 2>/dev/null || die "$server died during the $rate/s step (logs in $WORK/$server)"
        rc=0
        local info=""
        [ "$server" = kamailio ] && info=$(kam_shm)
        $PY step --server "$server" --scenario "$scen" --rate "$rate" --calls "$calls" \
            --duration "$DURATION" --stat "$sd/uac.csv" --rtt "$(ls "$sd"/*_rtt.csv 2>/dev/null | head -1)" \
            --probe "$sd/probe.json" --snap0 "$snap0" --snap1 "$snap1" --uas0 "$uas0" --uas1 "$uas1" \
            --uas-snap0 "$usnap0" --uas-snap1 "$usnap1" --uac-times "$sd/uac.times0,$sd/uac.times1" \
            --server-info "$info" \
            --out "$RESULTS" || rc=$?
        if [ "$server" = kamailio ]; then log "    kamailio: $(kam_stats "$scen") $info"; fi
        if [ "$rc" != 0 ]; then
            [ "$rc" = 3 ] || die "step evaluation failed"
            break
        fi
        sleep 1
    done
    stop_pid "$upid" 3
    untrack "$upid"
    [ "$server" != direct ] || SERVER_PID=""
    local counters=""
    [ "$server" = kamailio ] && counters=$(kam_stats "$scen")
    $PY uasdone --server "$server" --scenario "$scen" --screen "$dir/uas.out" --csv "$dir/uas.csv" \
        --counters "$counters" --out "$RESULTS"
}

# ------------------------------------------------------------------ main
log "work directory: $WORK"
log "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), load avg $(cut -d' ' -f1-3 /proc/loadavg)"
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
[[ " $SERVERS " == *" cpm "* || " $SERVERS " == *" cpm1 "* ]] && build_cpm
# scenario-major order (cpm message, kamailio message, cpm call, kamailio call): the two ramps that
# are compared run back to back, so a change in the shared machine's load skews them less.
for scen in $SCENARIOS; do
    for server in $SERVERS; do
        # a fresh server per scenario: nothing carried over from the previous ramp's overload
        "start_$server"
        run_scenario "$server" "$scen"
        stop_server
    done
done

DATE=$(date +%Y-%m-%d)
mkdir -p "$BENCH_DIR/results"
MD=$BENCH_DIR/results/sip-core-$DATE.md
[ "$QUICK" = 1 ] && MD=$BENCH_DIR/results/sip-core-$DATE-quick.md
[ "$ONLY" != "" ] && MD=${MD%.md}-only-$ONLY.md
$PY report --results "$RESULTS" --md "$MD" --date "$(date '+%Y-%m-%d %H:%M %Z')" \
    --header "- machine: \`nproc\` = $(nproc); CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'); kernel $(uname -r); load average before/after: $LOAD_BEFORE / $(cut -d' ' -f1-3 /proc/loadavg)" \
    --header "- versions: $(sipp -v 2>&1 | grep -o 'SIPp v[^ ]*' | head -1 | tr -d '\r'); kamailio $(command -v kamailio >/dev/null && kamailio -v | sed -n 's/^version: kamailio //p' | cut -d' ' -f1); cpm: $([[ " $SERVERS " == *" cpm "* ]] && echo "$("$CPM_BIN" --version 2>/dev/null), binary $CPM_BIN built $(date -r "$CPM_BIN" '+%Y-%m-%d %H:%M:%S')" || echo n/a)" \
    --header "- parity: cpm \`--threads $THREADS\`; Kamailio \`-n $THREADS -m 1024 -M 32\` (UDP workers = cpm worker threads); both: registrar + transaction-stateful relay, 127.0.0.1 trusted (no digest), UDP" \
    --header "- ramp (/s): MESSAGE $RATES_MESSAGE; calls $RATES_CALL; ${DURATION} s per step (\`-m rate*${DURATION}\`), stop at the first unclean step; latency probe ${PROBE_RATE}/s; call hold ${CALL_HOLD_MS} ms; mode: $([ "$QUICK" = 1 ] && echo quick || echo normal)$([ -n "$ONLY" ] && echo ", only $ONLY")"
log "report written to $MD"
