#!/usr/bin/env bash
# CPM pager benchmark: cpm's full durable pager path vs Kamailio 5.6's plain MESSAGE relay on the
# same machine, same run, same SIPp load.
#
#   bench/pager.sh [--quick] [--variants "cpm kamailio cpm-normal"] [--rates "1000 2000 ..."]
#                  [--duration S] [--threads N] [--probe-rate R] [--cpm-bin PATH] [--no-build]
#                  [--wait-idle PCT] [--keep] [--tag NAME]
#
# --wait-idle PCT: before each ramp, wait (up to 10 min) until the machine's CPU use stays
# under PCT % of a core over 5 s (default 25; 0 = do not wait). The machine is shared: the
# report flags steps during which other processes used more than 30 % of a core.
#
# Variants (each on a freshly started server with a fresh data directory):
#   cpm          `cpm serve --threads N`, default store (`synchronous = "full"`: fsync per commit).
#                Every MESSAGE carries the CPM msg ICSI, so the core routes it UAC -> core -> PF
#                (cpm=orig: record in alice's history, SQLite commit) -> core -> PF (cpm=term:
#                record in bob's history, commit) -> core -> UAS; the 200 comes back only after
#                the commits. The UAC is alice's registered device (REGISTER with digest from
#                the UAC's own port before each step): the core takes its MESSAGEs as alice's
#                (registered flow, no digest per request) and asserts her identity.
#   cpm-normal   the same with `--config` `[store] synchronous = "normal"`.
#   cpm1        the same as cpm with `--threads 1`: one Node shard (the node before sharding,
#                for the A/B of using every core in the same run).
#   cpm-trusted  the same store as cpm, but 127.0.0.1 is a trusted peer (`--trusted-peer`) and
#                the UAC's P-Asserted-Identity is kept (as behind a P-CSCF). Up to 38f11a8 the
#                core then routed only through the terminating PF (one record per message);
#                since then it runs the asserted user's originating services too (full path).
#   kamailio     Kamailio 5.6 reference registrar + tm relay (bench/kamailio.cfg.tmpl, `-n N
#                -m 1024 -M 32`): the same MESSAGEs and REGISTERs, relayed, nothing stored.
# Load: SIPp 3.6.1 UAC (bench/sipp/uac_pager.xml) -> server -> SIPp UAS registered as bob
# (bench/sipp/uas_pager.xml, answers 200, sends no IMDN). Ramp: steps of increasing offered
# rate, DURATION seconds each (-m rate*DURATION); stop at the first step that is not clean
# (bench/sipbench.py `step`: no failed call, no retransmission, >= 95 % of the offered rate).
# Latency: bench/sipbench.py probe --kind pager (100 pager MESSAGEs/s as alice, registered
# from the probe's port). cpm's /metrics is read before and after each step (PF counters,
# store ops / commits = group-commit batch size); after each cpm ramp the history in
# DATA/cpm.db is counted (two records per answered message expected).
#
# Output: Markdown on stdout and in bench/results/pager-<date>[-quick][-TAG].md (-2, -3... when
# that file exists); raw files (SIPp stats, node logs, per-step JSON) in a work directory under
# ${TMPDIR:-/tmp} (path printed). The cpm data directory lives there too: fsync cost depends on
# that file system (printed in the report).
#
# Requirements: sipp (sip-tester), kamailio, python3, curl, cargo (unless --cpm-bin or
# --no-build with a built target/release/cpm). Traffic stays on 127.0.0.1; every process
# started here is stopped by PID on exit.
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$BENCH_DIR/lib.sh"
REPO_ROOT=$(cd "$BENCH_DIR/.." && pwd)
PY="python3 $BENCH_DIR/sipbench.py"

QUICK=0
RATES=""
DURATION=""
THREADS=2
PROBE_RATE=100
BUILD=1
KEEP=0
VARIANTS="cpm kamailio cpm-normal"
CPM_BIN=""
TAG=""
WAIT_IDLE=25

usage() { sed -n '2,/^set -euo/p' "$0" | grep '^#' | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) QUICK=1; shift ;;
        --rates) RATES="$2"; shift 2 ;;
        --duration) DURATION="$2"; shift 2 ;;
        --threads) THREADS="$2"; shift 2 ;;
        --probe-rate) PROBE_RATE="$2"; shift 2 ;;
        --variants) VARIANTS="$2"; shift 2 ;;
        --cpm-bin) CPM_BIN="$2"; BUILD=0; shift 2 ;;
        --no-build) BUILD=0; shift ;;
        --keep) KEEP=1; shift ;;
        --tag) TAG="$2"; shift 2 ;;
        --wait-idle) WAIT_IDLE="$2"; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "unknown argument: $1" >&2; usage >&2; exit 2 ;;
    esac
done
for v in $VARIANTS; do
    case "$v" in cpm|cpm1|cpm-normal|cpm-trusted|kamailio) ;; *) echo "unknown variant $v" >&2; exit 2 ;; esac
done
if [ "$QUICK" = 1 ]; then
    : "${RATES:=500 1000 2000}" "${DURATION:=5}"
else
    : "${RATES:=1000 2000 3000 4000 5000 6000 7000 8000 9000 10000 11000 12000 13000 14000 16000 20000}" "${DURATION:=10}"
fi


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
WORK=$(mktemp -d "${TMPDIR:-/tmp}/pager-bench.XXXXXX")
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

# ------------------------------------------------------------------ servers
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
    log "kamailio $(kamailio -v | sed -n 's/^version: //p' | head -1) ready on 127.0.0.1:$SERVER_PORT (pid $SERVER_PID, -n $THREADS)"
}
kam_shm() {
    kamcmd -s "unix:$WORK/kamailio/kam.ctl" core.shmmem m 2>/dev/null |
        awk '/real_used|max_used|total/ {gsub(/[^0-9]/, "", $2); v[$1] = $2}
             END {printf "shm MB used %s, max used %s of %s", v["real_used:"], v["max_used:"], v["total:"]}'
}
kam_stats() {
    kamcmd -s "unix:$WORK/kamailio/kam.ctl" stats.get_statistics core: 2>/dev/null |
        grep -E 'core:rcv_requests_(message|register) |core:rcv_replies_2xx_message ' |
        sed 's/^core://' | tr -d ' ' | tr '\n' ' '
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
    local help
    help=$("$CPM_BIN" serve --help 2>&1) || die "$CPM_BIN serve --help failed: $help"
    [[ "$help" == *--trusted-peer* && "$help" == *--threads* && "$help" == *--config* ]] ||
        die "$CPM_BIN serve lacks --trusted-peer, --threads or --config"
}
start_cpm() {  # start_cpm VARIANT
    local variant=$1 dir=$WORK/$1 u extra=() threads=$THREADS
    [ "$variant" = cpm1 ] && threads=1
    mkdir -p "$dir/data"
    for u in alice bob; do
        "$CPM_BIN" admin user add "$u@localhost" --password "${u}pw" --data-dir "$dir/data" \
            >>"$dir/admin.log" 2>&1 || { cat "$dir/admin.log" >&2; die "cpm admin user add $u failed"; }
    done
    # The load comes from one address (the SIPp UAC on 127.0.0.1): lift the per-source limits
    # that protect a node on the open internet (the ramp goes far above their defaults).
    printf '[limits]\nrequests_per_sec_per_source = 1000000\nburst_per_source = 1000000\nudp_packets_per_sec_per_source = 0\n' >"$dir/cpm.toml"
    # CPM_EXTRA_TOML: more configuration for an experiment (appended as is).
    [ -z "${CPM_EXTRA_TOML:-}" ] || printf '%b\n' "$CPM_EXTRA_TOML" >>"$dir/cpm.toml"
    extra=(--config "$dir/cpm.toml")
    case "$variant" in
        cpm-normal)
            printf '[store]\nsynchronous = "normal"\n' >>"$dir/cpm.toml" ;;
        cpm-trusted) extra+=(--trusted-peer 127.0.0.1) ;;
    esac
    SERVER_PORT=$(freeport --tcp)
    HTTP_PORT=$(freeport --tcp)
    "$CPM_BIN" serve --domain localhost --sip-listen "127.0.0.1:$SERVER_PORT" \
        --http-listen "127.0.0.1:$HTTP_PORT" --data-dir "$dir/data" --threads "$threads" \
        "${extra[@]}" >>"$dir/cpm.log" 2>&1 &
    SERVER_PID=$!
    PIDS+=("$SERVER_PID")
    local i
    for ((i = 0; i < 100; i++)); do
        curl -sf --max-time 1 "http://127.0.0.1:$HTTP_PORT/health" >/dev/null 2>&1 && break
        kill -0 "$SERVER_PID" 2>/dev/null || { tail -30 "$dir/cpm.log" >&2; die "cpm serve exited"; }
        sleep 0.1
    done
    [ "$i" -lt 100 ] || { tail -30 "$dir/cpm.log" >&2; die "cpm not healthy after 10 s"; }
    local sync
    sync=$("$CPM_BIN" serve "${extra[@]}" --print-config 2>/dev/null | sed -n 's/^synchronous = //p')
    log "$variant ready on 127.0.0.1:$SERVER_PORT (pid $SERVER_PID, --threads $threads, http $HTTP_PORT, store.synchronous $sync${extra[*]:+, ${extra[*]}})"
}
stop_server() {
    stop_pid "$SERVER_PID" 10
    untrack "$SERVER_PID"
    SERVER_PID=""
}
cpm_metrics() { if [ -n "$HTTP_PORT" ]; then $PY metrics "http://127.0.0.1:$HTTP_PORT/metrics"; fi; }

# ------------------------------------------------------------------ one ramp
RESULTS=$WORK/results.jsonl
: >"$RESULTS"
LOG_NOTES=()

register() {  # register DIR CSV USER LOCAL_PORT: REGISTER (digest when challenged) from that port
    local dir=$1 csv=$2 user=$3 port=$4
    timeout 15 sipp "127.0.0.1:$SERVER_PORT" -sf "$BENCH_DIR/sipp/register_auth.xml" -inf "$csv" \
        -au "$user" -ap "${user}pw" -i 127.0.0.1 -p "$port" -m 1 -nostdin -recv_timeout 5000 \
        -timeout 10 >"$dir/register-$user-$port.out" 2>&1 ||
        { tail -20 "$dir/register-$user-$port.out" >&2; die "REGISTER of $user from port $port failed"; }
}

run_ramp() {  # run_ramp VARIANT
    local server=$1 dir uport aport pport upid rate calls limit rc
    dir=$WORK/$server/pager
    mkdir -p "$dir"
    uport=$(freeport)
    aport=$(freeport)
    pport=$(freeport)
    printf 'SEQUENTIAL\nbob;localhost;%s;bobpw;000000000002;bob;bob\n' "$uport" >"$dir/bob.csv"
    printf 'SEQUENTIAL\nalice;localhost;%s;alicepw;000000000001;bob;alice\n' "$aport" >"$dir/alice.csv"
    printf 'SEQUENTIAL\nalice;localhost;%s;alicepw;000000000003;bob;alice\n' "$pport" >"$dir/probe.csv"

    (cd "$dir" && exec sipp -sf "$BENCH_DIR/sipp/uas_pager.xml" -i 127.0.0.1 -p "$uport" \
        "${SIPP_LOAD_OPTS[@]}" -trace_stat -stf "$dir/uas.csv" -fd 1 >"$dir/uas.out" 2>&1) &
    upid=$!
    PIDS+=("$upid")
    sleep 0.5
    kill -0 "$upid" 2>/dev/null || { cat "$dir/uas.out" >&2; die "SIPp UAS did not start"; }

    log "== $server / pager: UAS on $uport, UAC on $aport, probe on $pport, ramp: $RATES (${DURATION}s each)"
    for rate in $RATES; do
        local sd=$dir/step-$rate snap0 snap1 uas0 uas1 usnap0 usnap1 m0 m1 ppid uacpid load run
        mkdir -p "$sd"
        # (re-)register before every step: bob -> UAS, alice -> the UAC's and the probe's ports
        register "$dir" "$dir/bob.csv" bob "$(freeport)"
        register "$dir" "$dir/alice.csv" alice "$aport"
        register "$dir" "$dir/probe.csv" alice "$pport"
        calls=$((rate * DURATION))
        limit=$((rate * 2 > 200 ? rate * 2 : 200))
        run=$(printf '%x%04x' "$(date +%s)" "$RANDOM")
        load=$(loadavg)
        uas0=$($PY uasnap "$dir/uas.csv")
        usnap0=$($PY procsnap "$upid")
        m0=$(cpm_metrics)
        snap0=$($PY procsnap "$SERVER_PID" --ports "server=$SERVER_PORT,uas=$uport,uac=$aport")
        $PY probe --server "127.0.0.1:$SERVER_PORT" --kind pager --port "$pport" --rate "$PROBE_RATE" \
            --duration "$DURATION" --out "$sd/probe.json" >"$sd/probe.log" 2>&1 &
        ppid=$!
        PIDS+=("$ppid")
        rc=0
        times >"$sd/uac.times0"
        (cd "$sd" && exec timeout -k 5 $((DURATION + 45)) sipp "127.0.0.1:$SERVER_PORT" \
            -sf "$BENCH_DIR/sipp/uac_pager.xml" -inf "$dir/alice.csv" -i 127.0.0.1 -p "$aport" \
            -set run "$run" -r "$rate" -m "$calls" -l "$limit" "${SIPP_LOAD_OPTS[@]}" \
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
        sleep 2   # late UAS-side retransmissions / stats; the store queue drains
        m1=$(cpm_metrics)
        uas1=$($PY uasnap "$dir/uas.csv")
        [ "$rc" = 0 ] || [ "$rc" = 1 ] || log "sipp UAC exit code $rc (see $sd/uac.err)"
        kill -0 "$SERVER_PID" 2>/dev/null || die "$server died during the $rate/s step (logs in $WORK/$server)"
        rc=0
        local info=""
        [ "$server" = kamailio ] && info=$(kam_shm)
        log "  step $rate/s: load average $load"
        $PY step --server "$server" --scenario pager --rate "$rate" --calls "$calls" \
            --duration "$DURATION" --stat "$sd/uac.csv" --rtt "$(ls "$sd"/*_rtt.csv 2>/dev/null | head -1)" \
            --probe "$sd/probe.json" --snap0 "$snap0" --snap1 "$snap1" --uas0 "$uas0" --uas1 "$uas1" \
            --uas-snap0 "$usnap0" --uas-snap1 "$usnap1" --uac-times "$sd/uac.times0,$sd/uac.times1" \
            --server-info "$info" --metrics0 "$m0" --metrics1 "$m1" --load "$load" \
            --out "$RESULTS" || rc=$?
        if [ "$server" = kamailio ]; then log "    kamailio: $(kam_stats) $info"; fi
        if [ "$rc" != 0 ]; then
            [ "$rc" = 3 ] || die "step evaluation failed"
            break
        fi
        sleep 1
    done
    stop_pid "$upid" 3
    untrack "$upid"
    local counters="" logf nerr
    if [ "$server" = kamailio ]; then
        counters=$(kam_stats)
        logf=$WORK/kamailio/kamailio.log
    else
        logf=$WORK/$server/cpm.log
        sleep 1
        local summary
        nerr=$(grep -c -E 'ERROR|WARN' "$logf" || true)
        summary="$nerr ERROR/WARN lines"
        [ "$nerr" = 0 ] || summary="$summary, first: $(grep -m1 -E 'ERROR|WARN' "$logf" | sed 's/\x1b\[[0-9;]*m//g' | cut -c1-200)"
        $PY history "$WORK/$server/data/cpm.db" --server "$server" --metrics "$(cpm_metrics)" \
            --log-summary "$summary" --out "$RESULTS" >"$dir/history.json"
        log "    history: $(cat "$dir/history.json" | cut -c1-400)"
    fi
    nerr=$(grep -c -i -E 'error|warn' "$logf" || true)
    LOG_NOTES+=("$server log ($logf): $nerr lines matching error/warn")
    $PY uasdone --server "$server" --scenario pager --screen "$dir/uas.out" --csv "$dir/uas.csv" \
        --counters "$counters" --out "$RESULTS"
}

# ------------------------------------------------------------------ main
log "work directory: $WORK"
LOAD_BEFORE=$(loadavg)
log "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), load avg $LOAD_BEFORE"
[[ " $VARIANTS " == *" cpm"* ]] && build_cpm
first=1
for server in $VARIANTS; do
    # let the machine settle after the previous ramp's overloaded step
    [ "$first" = 1 ] || sleep 10
    first=0
    if [ "$WAIT_IDLE" != 0 ]; then
        if busy=$($PY idle --max-pct "$WAIT_IDLE" --timeout 600); then
            log "machine CPU use before the $server ramp: $busy % of a core"
        else
            log "machine still busy before the $server ramp ($busy % of a core after 10 min): running anyway"
        fi
    fi
    if [ "$server" = kamailio ]; then start_kamailio; else start_cpm "$server"; fi
    run_ramp "$server"
    stop_server
done

DATE=$(date +%Y-%m-%d)
mkdir -p "$BENCH_DIR/results"
BASE=$BENCH_DIR/results/pager-$DATE
[ "$QUICK" = 1 ] && BASE=$BASE-quick
[ -n "$TAG" ] && BASE=$BASE-$TAG
MD=$BASE.md
n=2
while [ -e "$MD" ]; do MD=$BASE-$n.md; n=$((n + 1)); done
FS=$(df -PT "$WORK" | awk 'NR == 2 {print $2 " on " $1}')
HEADERS=(
    --header "- machine: \`nproc\` = $(nproc); CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'); kernel $(uname -r); load average before/after: $LOAD_BEFORE / $(loadavg) (the machine is shared with other builds)"
    --header "- versions: $(sipp -v 2>&1 | grep -o 'SIPp v[^ ]*' | head -1 | tr -d '\r'); kamailio $(command -v kamailio >/dev/null && kamailio -v | sed -n 's/^version: kamailio //p' | cut -d' ' -f1); cpm: $([ -n "$CPM_BIN" ] && echo "$("$CPM_BIN" --version 2>/dev/null), binary $CPM_BIN built $(date -r "$CPM_BIN" '+%Y-%m-%d %H:%M:%S')" || echo n/a)"
    --header "- repository at run time: $(git -C "$REPO_ROOT" log -1 --format='%h %cd' --date=format:'%Y-%m-%d %H:%M' 2>/dev/null || echo n/a)$([ -n "$(git -C "$REPO_ROOT" status --porcelain --untracked-files=no 2>/dev/null)" ] && echo ' (tracked files modified)')"
    --header "- parity: cpm \`--threads $THREADS\`; Kamailio \`-n $THREADS -m 1024 -M 32\`; UDP on 127.0.0.1; cpm's data directory on $FS"
    --header "- ramp (/s): $RATES; ${DURATION} s per step, stop at the first unclean step; latency probe ${PROBE_RATE}/s; variants in run order: $VARIANTS; mode: $([ "$QUICK" = 1 ] && echo quick || echo normal)"
)
for l in "${LOG_NOTES[@]}"; do HEADERS+=(--header "- $l"); done
$PY pager-report --results "$RESULTS" --md "$MD" --date "$(date '+%Y-%m-%d %H:%M %Z')" "${HEADERS[@]}"
log "report written to $MD"
