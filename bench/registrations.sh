#!/usr/bin/env bash
# Registrations at scale: N bindings on one `cpm serve` node vs Kamailio 5.6 usrloc, same run,
# same SIPp load. Measures memory per binding, REGISTER/s during the fill, and the cost of a
# location lookup (MESSAGE to random registered users) with few and with N bindings held.
#
#   bench/registrations.sh [--count N] [--quick] [--procs P] [--rate R] [--window W]
#                          [--variants "cpm kamailio"] [--few F] [--lookup-rate R]
#                          [--lookup-duration S] [--probe-rate R] [--expires S]
#                          [--kam-hash-size H] [--threads N] [--cpm-bin PATH] [--no-build]
#                          [--keep] [--tag NAME]
#
#   --count N           bindings to hold (default 1,000,000): users u1..uN, one binding each
#   --quick             --count 20000, shorter lookup phases
#   --procs P           SIPp processes registering in parallel (default 2)
#   --rate R            offered REGISTER/s, total over the processes (default 0: as fast as the
#                       server answers, each process keeping at most W REGISTERs outstanding)
#   --window W          most outstanding REGISTERs per SIPp process (SIPp -l; default 100)
#   --few F             bindings of the "few held" phase (default 1000; 0 = skip it)
#   --lookup-rate R     MESSAGE/s of a lookup phase (SIPp, default 1000) for --lookup-duration
#                       seconds (default 20; quick 10), plus a probe at --probe-rate (default
#                       100/s) that times each MESSAGE with microsecond resolution
#   --expires S         Expires of every REGISTER (default 7200); cpm's [registrar]
#                       max_expires/default_expires and Kamailio's max_expires are set to it
#   --kam-hash-size H   usrloc hash_size for Kamailio (2^H slots; default 16; 0 = the
#                       template's, i.e. Kamailio's default 10)
#
# Flow per variant (each on a fresh server and data directory):
#   1. a SIPp UAS (bench/sipp/uas_message.xml) on port U: every binding's Contact is
#      sip:uN@127.0.0.1:U, so a lookup MESSAGE relayed by the server ends there;
#   2. cpm: the accounts u1..uN are written into cpm.db (bench/regbench.py provision: a trusted
#      peer's REGISTER needs no digest, but the user must exist: the core asks the user
#      directory, and an unknown AOR gets 404); then `cpm serve --trusted-peer 127.0.0.1
#      --config` with [registrar] max_devices_per_user = 1 and the expiry above.
#      kamailio: bench/kamailio.cfg.tmpl (no auth), `-m 4096 -M 32 -n THREADS`;
#   3. memory before (VmRSS, Pss of the process tree; Kamailio's shm pool);
#   4. "few": F REGISTERs (u1..uF), then a lookup phase to random users among them;
#   5. "bulk": uF+1..uN over P SIPp processes (bench/sipp/reg_bulk.xml: one REGISTER per call);
#   6. wait for the server to settle (cpm: store queue empty, bindings in cpm.db, transactions
#      past RFC 3261 Timer J, 32 s; Kamailio: tm's 5 s wait timer), then memory after, DB size;
#   7. "all": the lookup phase again, to random users among all N.
#
# Output: Markdown on stdout and in bench/results/registrations-<date>[-quick][-TAG].md (-2, -3...
# when that file exists); raw files in a work directory under ${TMPDIR:-/tmp} (path printed).
#
# Locking: the machine is shared with other benchmarks that take /tmp/bench.lock around whole
# runs. Run this as `flock /tmp/bench.lock bench/registrations.sh ...`; started without that
# lock, the script takes it itself (it sees the lock file among its open descriptors when
# started under flock(1)).
#
# Requirements: sipp (sip-tester), kamailio + kamcmd, python3, curl, cargo (unless --cpm-bin or
# --no-build). Traffic stays on 127.0.0.1; every process started here is stopped by PID on exit.
set -euo pipefail

ORIG_ARGS=${*:+ $*}
BENCH_LOCK=/tmp/bench.lock
held_lock=0
for fd in /proc/$$/fd/*; do
    [ "$(readlink "$fd" 2>/dev/null)" = "$BENCH_LOCK" ] && held_lock=1 && break
done
if [ "$held_lock" = 0 ]; then
    echo "taking $BENCH_LOCK (waits while another benchmark runs)" >&2
    exec flock "$BENCH_LOCK" "$0" "$@"
fi

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$BENCH_DIR/lib.sh"
REPO_ROOT=$(cd "$BENCH_DIR/.." && pwd)
PY="python3 $BENCH_DIR/sipbench.py"
RB="python3 $BENCH_DIR/regbench.py"

COUNT=""
QUICK=0
PROCS=2
RATE=0
WINDOW=100
FEW=1000
LOOKUP_RATE=1000
LOOKUP_DURATION=""
PROBE_RATE=100
EXPIRES=7200
KAM_HASH=16
THREADS=2
VARIANTS="cpm kamailio"
CPM_BIN=""
BUILD=1
KEEP=0
TAG=""
DOMAIN=localhost

usage() { sed -n '2,/^set -euo/p' "$0" | grep '^#' | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
    case "$1" in
        --count) COUNT="$2"; shift 2 ;;
        --quick) QUICK=1; shift ;;
        --procs) PROCS="$2"; shift 2 ;;
        --rate) RATE="$2"; shift 2 ;;
        --window) WINDOW="$2"; shift 2 ;;
        --few) FEW="$2"; shift 2 ;;
        --lookup-rate) LOOKUP_RATE="$2"; shift 2 ;;
        --lookup-duration) LOOKUP_DURATION="$2"; shift 2 ;;
        --probe-rate) PROBE_RATE="$2"; shift 2 ;;
        --expires) EXPIRES="$2"; shift 2 ;;
        --kam-hash-size) KAM_HASH="$2"; shift 2 ;;
        --threads) THREADS="$2"; shift 2 ;;
        --variants) VARIANTS="$2"; shift 2 ;;
        --cpm-bin) CPM_BIN="$2"; BUILD=0; shift 2 ;;
        --no-build) BUILD=0; shift ;;
        --keep) KEEP=1; shift ;;
        --tag) TAG="$2"; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "unknown argument: $1" >&2; usage >&2; exit 2 ;;
    esac
done
for v in $VARIANTS; do
    case "$v" in cpm|kamailio) ;; *) echo "unknown variant $v" >&2; exit 2 ;; esac
done
if [ "$QUICK" = 1 ]; then
    : "${COUNT:=20000}" "${LOOKUP_DURATION:=10}"
else
    : "${COUNT:=1000000}" "${LOOKUP_DURATION:=20}"
fi
for n in COUNT PROCS RATE WINDOW FEW LOOKUP_RATE LOOKUP_DURATION PROBE_RATE EXPIRES KAM_HASH THREADS; do
    [[ "${!n}" =~ ^[0-9]+$ ]] || { echo "--${n,,} must be a non-negative integer" >&2; exit 2; }
done
[ "$PROCS" -ge 1 ] && [ "$WINDOW" -ge 1 ] || { echo "--procs and --window must be at least 1" >&2; exit 2; }
[ "$FEW" -lt "$COUNT" ] || { echo "--few must be below --count" >&2; exit 2; }
[ "$EXPIRES" -ge 60 ] || { echo "--expires must be at least 60" >&2; exit 2; }


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
WORK=$(mktemp -d "${TMPDIR:-/tmp}/registrations-bench.XXXXXX")
cleanup() {
    local rc=$? p
    for p in "${PIDS[@]}"; do stop_pid "$p" 3; done
    if [ "$KEEP" = 0 ] && [ "$rc" = 0 ]; then
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
KAM_CTL=""
start_kamailio() {
    local dir=$WORK/kamailio
    mkdir -p "$dir"
    SERVER_PORT=$(freeport --tcp)
    HTTP_PORT=""
    KAM_CTL=$dir/kam.ctl
    sed -e "s/KAM_PORT/$SERVER_PORT/g" -e "s#KAM_CTL#$KAM_CTL#g" \
        -e "s/^modparam(\"registrar\", \"max_expires\", [0-9]*)/modparam(\"registrar\", \"max_expires\", $EXPIRES)/" \
        "$BENCH_DIR/kamailio.cfg.tmpl" >"$dir/kam.cfg"
    if [ "$KAM_HASH" != 0 ]; then
        sed -i "s/^modparam(\"usrloc\", \"timer_procs\", 1)/&\nmodparam(\"usrloc\", \"hash_size\", $KAM_HASH)/" "$dir/kam.cfg"
        grep -q '"hash_size"' "$dir/kam.cfg" || die "could not set usrloc hash_size in $dir/kam.cfg"
    fi
    grep -q "\"max_expires\", $EXPIRES)" "$dir/kam.cfg" || die "could not set registrar max_expires in $dir/kam.cfg"
    rm -f "$KAM_CTL" "$dir/kam.pid"
    kamailio -c -f "$dir/kam.cfg" >"$dir/check.log" 2>&1 || { cat "$dir/check.log" >&2; die "kamailio cfg check failed"; }
    kamailio -DD -E -f "$dir/kam.cfg" -n "$THREADS" -m 4096 -M 32 -P "$dir/kam.pid" -w "$dir" \
        >>"$dir/kamailio.log" 2>&1 &
    SERVER_PID=$!
    PIDS+=("$SERVER_PID")
    local i
    for ((i = 0; i < 100; i++)); do
        kamcmd -s "unix:$KAM_CTL" core.version >/dev/null 2>&1 && break
        kill -0 "$SERVER_PID" 2>/dev/null || { cat "$dir/kamailio.log" >&2; die "kamailio exited"; }
        sleep 0.1
    done
    [ "$i" -lt 100 ] || die "kamailio not ready after 10 s"
    log "kamailio $(kamailio -v | sed -n 's/^version: kamailio //p' | cut -d' ' -f1) ready on 127.0.0.1:$SERVER_PORT (pid $SERVER_PID, -n $THREADS -m 4096 -M 32, usrloc hash_size $([ "$KAM_HASH" = 0 ] && echo default || echo "$KAM_HASH"))"
}

build_cpm() {
    if [ -n "$CPM_BIN" ]; then
        :
    elif [ "$BUILD" = 1 ] && ! pgrep -x cargo >/dev/null 2>&1; then
        log "cargo build --release -p cpm"
        (cd "$REPO_ROOT" && cargo build --release -p cpm) >"$WORK/cargo-build.log" 2>&1 ||
            { tail -30 "$WORK/cargo-build.log" >&2; die "cargo build failed (log: $WORK/cargo-build.log)"; }
        CPM_BIN=$(cd "$REPO_ROOT" && cargo metadata --format-version 1 --no-deps 2>/dev/null |
            python3 -c 'import json,sys;print(json.load(sys.stdin)["target_directory"])')/release/cpm
    else
        [ "$BUILD" = 1 ] && log "cargo is running elsewhere: using the built binary as is"
        CPM_BIN=${CARGO_TARGET_DIR:-$REPO_ROOT/target}/release/cpm
    fi
    [ -x "$CPM_BIN" ] || die "$CPM_BIN not found"
    local help
    help=$("$CPM_BIN" serve --help 2>&1) || die "$CPM_BIN serve --help failed: $help"
    [[ "$help" == *--trusted-peer* && "$help" == *--threads* && "$help" == *--config* ]] ||
        die "$CPM_BIN serve lacks --trusted-peer, --threads or --config"
}
start_cpm() {
    local dir=$WORK/cpm prov
    mkdir -p "$dir/data"
    # the schema (and one account that is not part of the test) through the admin CLI, then
    # the accounts u1..uN in one SQLite transaction
    "$CPM_BIN" admin user add "seed@$DOMAIN" --password regbench --data-dir "$dir/data" \
        >>"$dir/admin.log" 2>&1 || { cat "$dir/admin.log" >&2; die "cpm admin user add failed"; }
    log "provisioning $COUNT accounts in $dir/data/cpm.db"
    prov=$($RB provision "$dir/data/cpm.db" --count "$COUNT" --domain "$DOMAIN") || die "provision failed"
    log "  $prov"
    NOTES_CPM+=("accounts: seed@$DOMAIN (cpm admin user add) + u1..u$COUNT written by regbench.py provision: $prov")
    # Registrar sized for the test: one device per user, every REGISTER's Expires accepted.
    # The load comes from one trusted address; per-source limits do not apply to trusted peers,
    # but are lifted anyway as in pager.sh. The transaction table holds every REGISTER until
    # Timer J (32 s): at R REGISTER/s that is 32 R entries, above the default admission cap
    # (500,000) from 15,600/s on, so the cap is raised (the test is the registrar's, not
    # admission control's).
    cat >"$dir/cpm.toml" <<EOF
[registrar]
max_devices_per_user = 1
max_expires = $EXPIRES
default_expires = $EXPIRES

[limits]
requests_per_sec_per_source = 1000000
burst_per_source = 1000000
udp_packets_per_sec_per_source = 0

[overload]
max_transactions = 5000000
EOF
    [ -z "${CPM_EXTRA_TOML:-}" ] || printf '%b\n' "$CPM_EXTRA_TOML" >>"$dir/cpm.toml"
    SERVER_PORT=$(freeport --tcp)
    HTTP_PORT=$(freeport --tcp)
    "$CPM_BIN" serve --domain "$DOMAIN" --sip-listen "127.0.0.1:$SERVER_PORT" \
        --http-listen "127.0.0.1:$HTTP_PORT" --data-dir "$dir/data" --threads "$THREADS" \
        --trusted-peer 127.0.0.1 --config "$dir/cpm.toml" >>"$dir/cpm.log" 2>&1 &
    SERVER_PID=$!
    PIDS+=("$SERVER_PID")
    local i
    for ((i = 0; i < 300; i++)); do
        curl -sf --max-time 1 "http://127.0.0.1:$HTTP_PORT/health" >/dev/null 2>&1 && break
        kill -0 "$SERVER_PID" 2>/dev/null || { tail -30 "$dir/cpm.log" >&2; die "cpm serve exited"; }
        sleep 0.1
    done
    [ "$i" -lt 300 ] || { tail -30 "$dir/cpm.log" >&2; die "cpm not healthy after 30 s"; }
    "$CPM_BIN" serve --config "$dir/cpm.toml" --print-config >"$dir/effective.toml" 2>&1 || true
    log "cpm ready on 127.0.0.1:$SERVER_PORT (pid $SERVER_PID, --threads $THREADS, http $HTTP_PORT, --trusted-peer 127.0.0.1, config $dir/cpm.toml)"
}
stop_server() {
    stop_pid "$SERVER_PID" 10
    untrack "$SERVER_PID"
    SERVER_PID=""
}
held() {  # JSON: bindings held and counters of the server
    if [ "$1" = kamailio ]; then $RB kam-held "$KAM_CTL"; else $RB cpm-held "http://127.0.0.1:$HTTP_PORT/metrics"; fi
}
mem() {  # mem VARIANT OUTFILE
    if [ "$1" = kamailio ]; then $RB mem "$SERVER_PID" --kam-ctl "$KAM_CTL" >"$2"; else $RB mem "$SERVER_PID" >"$2"; fi
}
held_n() { python3 -c 'import json,sys; print(json.load(sys.stdin).get("held") or 0)'; }

# ------------------------------------------------------------------ phases
RESULTS=$WORK/results.jsonl
: >"$RESULTS"
UAS_PORT=""
UAS_PID=""

fill() {  # fill VARIANT LABEL FIRST N: register u<FIRST>..u<FIRST+N-1> over PROCS processes
    local server=$1 label=$2 first=$3 n=$4 dir procs i share base done_ rate_i port timeout_s
    dir=$WORK/$server/fill-$label
    mkdir -p "$dir"
    procs=$PROCS
    [ "$n" -lt $((procs * 100)) ] && procs=1
    local pids=() csvs=() rc
    if [ "$RATE" -gt 0 ]; then
        rate_i=$(( (RATE + procs - 1) / procs ))
        timeout_s=$(( n / RATE + 120 ))
    else
        rate_i=1000000
        timeout_s=3600
    fi
    log "== $server / fill $label: u$first..u$((first + n - 1)) ($n) over $procs SIPp process(es), $([ "$RATE" -gt 0 ] && echo "$RATE/s offered" || echo "unthrottled") , at most $WINDOW outstanding per process"
    held "$server" >"$dir/held0.json"
    mem "$server" "$dir/snap0.json"
    times >"$dir/times0"
    done_=0
    for ((i = 0; i < procs; i++)); do
        share=$(( n / procs + (i < n % procs ? 1 : 0) ))
        base=$(( first - 1 + done_ ))
        done_=$((done_ + share))
        port=$(freeport)
        (cd "$dir" && exec timeout -k 5 $((timeout_s + 30)) sipp "127.0.0.1:$SERVER_PORT" \
            -sf "$BENCH_DIR/sipp/reg_bulk.xml" -i 127.0.0.1 -p "$port" \
            -set base "$base" -set contact_port "$UAS_PORT" -set expires "$EXPIRES" -set domain "$DOMAIN" \
            -r "$rate_i" -rp 1000 -m "$share" -l "$WINDOW" "${SIPP_LOAD_OPTS[@]}" \
            -recv_timeout 10000 -timeout "$timeout_s" \
            -trace_stat -stf "$dir/reg-$i.csv" -fd 1 >"$dir/reg-$i.out" 2>"$dir/reg-$i.err") &
        pids+=($!)
        PIDS+=($!)
        csvs+=("$dir/reg-$i.csv")
    done
    for p in "${pids[@]}"; do
        rc=0
        wait "$p" || rc=$?
        untrack "$p"
        [ "$rc" = 0 ] || [ "$rc" = 1 ] || log "  a SIPp registering process exited with $rc (see $dir/reg-*.err)"
    done
    mem "$server" "$dir/snap1.json"
    times >"$dir/times1"
    held "$server" >"$dir/held1.json"
    kill -0 "$SERVER_PID" 2>/dev/null || die "$server died during fill $label (logs in $WORK/$server)"
    $RB phase --kind fill --server "$server" --label "$label" --rate "$RATE" --procs "$procs" \
        --window-sipp "$WINDOW" --expected "$n" --csv "${csvs[@]}" --snap0 "$dir/snap0.json" \
        --snap1 "$dir/snap1.json" --times0 "$dir/times0" --times1 "$dir/times1" \
        --held0 "$dir/held0.json" --held "$dir/held1.json" --load "$(loadavg)" --out "$RESULTS" >&2
}

lookup() {  # lookup VARIANT LABEL LAST: MESSAGEs to random users among u1..u<LAST>
    local server=$1 label=$2 last=$3 dir k calls lpid ppid rc port pport
    dir=$WORK/$server/lookup-$label
    mkdir -p "$dir"
    k=$(( last < 100000 ? last : 100000 ))
    $RB sample --first 1 --last "$last" --k "$k" --domain "$DOMAIN" --out "$dir/users.csv"
    calls=$((LOOKUP_RATE * LOOKUP_DURATION))
    port=$(freeport)
    pport=$(freeport)
    log "== $server / lookup $label: $LOOKUP_RATE MESSAGE/s for ${LOOKUP_DURATION}s to random users of $k drawn from u1..u$last, probe $PROBE_RATE/s"
    held "$server" >"$dir/held0.json"
    $PY uasnap "$WORK/$server/uas.csv" >"$dir/uas0.json"
    mem "$server" "$dir/snap0.json"
    times >"$dir/times0"
    $RB probe --server "127.0.0.1:$SERVER_PORT" --users "$dir/users.csv" --domain "$DOMAIN" \
        --port "$pport" --rate "$PROBE_RATE" --duration "$LOOKUP_DURATION" --out "$dir/probe.json" \
        >"$dir/probe.log" 2>&1 &
    ppid=$!
    PIDS+=("$ppid")
    (cd "$dir" && exec timeout -k 5 $((LOOKUP_DURATION + 60)) sipp "127.0.0.1:$SERVER_PORT" \
        -sf "$BENCH_DIR/sipp/reg_message.xml" -inf "$dir/users.csv" -i 127.0.0.1 -p "$port" \
        -r "$LOOKUP_RATE" -m "$calls" -l $((LOOKUP_RATE * 2 > 200 ? LOOKUP_RATE * 2 : 200)) \
        "${SIPP_LOAD_OPTS[@]}" -recv_timeout 5000 -timeout $((LOOKUP_DURATION + 40)) \
        -trace_stat -stf "$dir/msg.csv" -fd 1 >"$dir/msg.out" 2>"$dir/msg.err") &
    lpid=$!
    PIDS+=("$lpid")
    rc=0
    wait "$lpid" || rc=$?
    untrack "$lpid"
    wait "$ppid" 2>/dev/null || true
    untrack "$ppid"
    mem "$server" "$dir/snap1.json"
    times >"$dir/times1"
    sleep 1
    $PY uasnap "$WORK/$server/uas.csv" >"$dir/uas1.json"
    held "$server" >"$dir/held1.json"
    [ "$rc" = 0 ] || [ "$rc" = 1 ] || log "  SIPp lookup UAC exited with $rc (see $dir/msg.err)"
    kill -0 "$SERVER_PID" 2>/dev/null || die "$server died during lookup $label (logs in $WORK/$server)"
    $RB phase --kind lookup --server "$server" --label "$label" --rate "$LOOKUP_RATE" --procs 1 \
        --expected "$last" --csv "$dir/msg.csv" --snap0 "$dir/snap0.json" --snap1 "$dir/snap1.json" \
        --times0 "$dir/times0" --times1 "$dir/times1" --probe "$dir/probe.json" \
        --uas0 "$dir/uas0.json" --uas1 "$dir/uas1.json" --held0 "$dir/held0.json" \
        --held "$dir/held1.json" --load "$(loadavg)" --out "$RESULTS" >&2
}

settle() {  # settle VARIANT EXPECTED: wait until the server holds EXPECTED and its queues drained
    local server=$1 want=$2 t0 h i
    t0=$(date +%s)
    log "  settling: waiting for $want bindings, drained queues$([ "$server" = cpm ] && echo ", Timer J (32 s) of the last REGISTERs")"
    for ((i = 0; i < 600; i++)); do
        h=$(held "$server")
        if [ "$server" = cpm ]; then
            python3 - "$h" "$want" "$(( $(date +%s) - t0 ))" <<'EOF' && break
import json, sys
h, want, el = json.loads(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
ok = (h.get("held") or 0) >= want and h.get("cpm_store_queue_depth", 0) == 0 \
    and h.get("cpm_store_in_flight", 0) == 0 and el >= 34
sys.exit(0 if ok else 1)
EOF
        else
            [ "$(echo "$h" | held_n)" -ge "$want" ] && [ $(( $(date +%s) - t0 )) -ge 10 ] && break
        fi
        sleep 1
    done
    log "  settled after $(( $(date +%s) - t0 )) s: $(echo "$h" | cut -c1-300)"
}

run_variant() {  # run_variant VARIANT
    local server=$1 dir few_last
    dir=$WORK/$server
    mkdir -p "$dir"
    UAS_PORT=$(freeport)
    (cd "$dir" && exec sipp -sf "$BENCH_DIR/sipp/uas_message.xml" -i 127.0.0.1 -p "$UAS_PORT" \
        "${SIPP_LOAD_OPTS[@]}" -trace_stat -stf "$dir/uas.csv" -fd 1 >"$dir/uas.out" 2>&1) &
    UAS_PID=$!
    PIDS+=("$UAS_PID")
    sleep 0.5
    kill -0 "$UAS_PID" 2>/dev/null || { cat "$dir/uas.out" >&2; die "SIPp UAS did not start"; }
    if [ "$server" = kamailio ]; then start_kamailio; else start_cpm; fi
    sleep 3
    mem "$server" "$dir/mem0.json"
    held "$server" >"$dir/held-start.json"
    [ "$server" = cpm ] && $RB dbinfo "$dir/data" >"$dir/db0.json"
    few_last=0
    if [ "$FEW" -gt 0 ]; then
        fill "$server" few 1 "$FEW"
        settle "$server" "$FEW"
        lookup "$server" few "$FEW"
        few_last=$FEW
    fi
    fill "$server" bulk $((few_last + 1)) $((COUNT - few_last))
    settle "$server" "$COUNT"
    mem "$server" "$dir/mem1.json"
    held "$server" >"$dir/held1.json"
    if [ "$server" = cpm ]; then
        $RB dbinfo "$dir/data" >"$dir/db1.json"
        log "  store: $(cut -c1-300 "$dir/db1.json")"
    fi
    lookup "$server" all "$COUNT"
    mem "$server" "$dir/mem2.json"
    held "$server" >"$dir/held2.json"
    local notes=() logf nerr
    if [ "$server" = kamailio ]; then
        logf=$dir/kamailio.log
        notes+=("kamailio 5.6 \`-n $THREADS -m 4096 -M 32\`, bench/kamailio.cfg.tmpl with registrar max_expires $EXPIRES$([ "$KAM_HASH" = 0 ] && echo "" || echo " and usrloc hash_size $KAM_HASH (2^$KAM_HASH slots)")")
    else
        logf=$dir/cpm.log
        notes+=("${NOTES_CPM[@]}")
        notes+=("config: $(grep -v '^\s*$' "$dir/cpm.toml" | tr '\n' ' ')")
    fi
    nerr=$(grep -c -i -E 'error|warn' "$logf" || true)
    notes+=("server log ($logf): $nerr lines matching error/warn$([ "$nerr" = 0 ] || echo ", first: $(grep -m1 -i -E 'error|warn' "$logf" | sed 's/\x1b\[[0-9;]*m//g' | cut -c1-200)")")
    local args=(--server "$server" --count "$COUNT" --mem0 "$dir/mem0.json" --mem1 "$dir/mem1.json"
        --mem2 "$dir/mem2.json" --held "$dir/held1.json" --held2 "$dir/held2.json" --out "$RESULTS")
    [ "$server" = cpm ] && args+=(--db0 "$dir/db0.json" --db1 "$dir/db1.json")
    for n in "${notes[@]}"; do args+=(--note "$n"); done
    $RB server "${args[@]}"
    stop_server
    stop_pid "$UAS_PID" 3
    untrack "$UAS_PID"
}

# ------------------------------------------------------------------ main
NOTES_CPM=()
T_START=$(date +%s)
log "work directory: $WORK"
LOAD_BEFORE=$(loadavg)
log "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), load avg $LOAD_BEFORE"
[[ " $VARIANTS " == *" cpm "* ]] && build_cpm
first=1
for server in $VARIANTS; do
    [ "$first" = 1 ] || sleep 5
    first=0
    run_variant "$server"
done
WALL=$(( $(date +%s) - T_START ))

DATE=$(date +%Y-%m-%d)
mkdir -p "$BENCH_DIR/results"
BASE=$BENCH_DIR/results/registrations-$DATE
[ "$QUICK" = 1 ] && BASE=$BASE-quick
[ -n "$TAG" ] && BASE=$BASE-$TAG
MD=$BASE.md
n=2
while [ -e "$MD" ]; do MD=$BASE-$n.md; n=$((n + 1)); done
FS=$(df -PT "$WORK" | awk 'NR == 2 {print $2 " on " $1}')
CMDLINE="bench/registrations.sh${ORIG_ARGS:-}"
HEADERS=(
    --header "- machine: \`nproc\` = $(nproc); CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'); kernel $(uname -r); $(free -g | awk '/^Mem:/ {print $2 " GB RAM"}'); load average before/after: $LOAD_BEFORE / $(loadavg) (the machine is shared with other builds)"
    --header "- versions: $(sipp -v 2>&1 | grep -o 'SIPp v[^ ]*' | head -1 | tr -d '\r'); kamailio $(command -v kamailio >/dev/null && kamailio -v | sed -n 's/^version: kamailio //p' | cut -d' ' -f1); cpm: $([ -n "$CPM_BIN" ] && echo "$("$CPM_BIN" --version 2>/dev/null), binary $CPM_BIN built $(date -r "$CPM_BIN" '+%Y-%m-%d %H:%M:%S')" || echo n/a)"
    --header "- repository at run time: $(git -C "$REPO_ROOT" log -1 --format='%h %cd' --date=format:'%Y-%m-%d %H:%M' 2>/dev/null || echo n/a)$([ -n "$(git -C "$REPO_ROOT" status --porcelain --untracked-files=no 2>/dev/null)" ] && echo ' (tracked files modified)')"
    --header "- parity: cpm \`--threads $THREADS --trusted-peer 127.0.0.1\`; Kamailio \`-n $THREADS -m 4096 -M 32\`$([ "$KAM_HASH" = 0 ] || echo ", usrloc hash_size $KAM_HASH"); UDP on 127.0.0.1; cpm's data directory on $FS"
    --header "- load: $COUNT bindings (users u1..u$COUNT, one Contact each, Expires $EXPIRES); \"few\" phase $FEW bindings; bulk fill over $PROCS SIPp process(es), $([ "$RATE" -gt 0 ] && echo "$RATE REGISTER/s offered in total" || echo "unthrottled"), at most $WINDOW REGISTERs outstanding per process; lookups: $LOOKUP_RATE MESSAGE/s for $LOOKUP_DURATION s + a probe at $PROBE_RATE/s; variants in run order: $VARIANTS; mode: $([ "$QUICK" = 1 ] && echo quick || echo normal)"
    --header "- command: \`$CMDLINE\`; wall time of the whole run: ${WALL} s"
)
$RB report --results "$RESULTS" --md "$MD" --date "$(date '+%Y-%m-%d %H:%M %Z')" --count "$COUNT" \
    --work "$WORK" "${HEADERS[@]}"
log "report written to $MD (run took ${WALL} s)"
