#!/usr/bin/env bash
# CPM session (MSRP) benchmark, issue 13: chat messages/s through PF A -> PF B of one
# `cpm serve`, every message durably stored; bytes per idle session; the raw loopback TCP
# reference of the same run.
#
#   bench/msrp.sh [--quick] [--rates "1000 2000 ..."] [--duration S] [--senders N]
#                 [--window W] [--size BYTES] [--max-p99-ms MS] [--threads N]
#                 [--idle-senders N] [--idle-sessions S] [--no-perf] [--bin-dir DIR]
#                 [--no-build] [--wait-idle PCT] [--keep] [--tag NAME]
#
# Load generator: crates/cpm-bench (`cpm-bench chat|idle|tcp`), N sender users and N receiver
# users in one process, each user our own sans-IO client core (cpm-client) over its own UDP
# socket: REGISTER with digest, INVITE with an SDP offer for MSRP (the PFs anchor the media:
# sender ══ PF A ══ PF B ══ receiver: two TCP connections and an in-process pipe per
# session), ACK, MSRP SENDs,
# BYE. Each sender has one session to its receiver and keeps at most W messages in flight
# in it; the ramp offers each rate for DURATION seconds, paced per sender. A message's latency
# is the sender's SEND -> MSRP 200, which PF A sends only after PF B answered, and PF B only
# after it stored the message (PF A stored it first): both users' histories committed
# (SQLite, `synchronous = "full"`). The receiver's client answers every SEND with 200 and
# sends the delivery notification the message asks for back in the session (as `cpm client`
# does), so each chat message is two SENDs through both PFs. A step is clean with no
# failure, every message answered, >= 95 % of the offered messages sent and p99 <= MAX_P99;
# the ramp stops at the first unclean step. /proc gives the node's and the generator's CPU.
#
# Idle sessions: a fresh node; IDLE_SENDERS senders open IDLE_SESSIONS sessions each to as
# many receivers; the node's RSS is read once every user is registered and no session exists,
# then 40 s after the last session came up (past the 32 s INVITE transactions and forks are
# kept: what is left is the sessions' own state), then 40 s after their BYEs. Twice on the same node
# (cycle 2 tells allocator reuse from a leak). The node's MSRP transport takes at most
# `[transport] msrp_max_connections` (50,000) connection ends; one session holds four in the
# node (sender's, the in-process PF A -> PF B pipe's two ends, receiver's).
#
# Reference: `cpm-bench tcp`, raw loopback TCP in one process with N connections, W
# messages in flight each and the chat SENDs' average on-wire size (the ramp measures it), a
# sink acknowledging each message with 32 bytes; nothing parsed, nothing stored.
#
# With perf (default when `perf` is installed): `perf record -F 499 -g` of the node during the
# whole ramp, its top symbols in the report (release builds have no frame pointers: the
# call graphs are shallow, the self time per symbol is what to read).
#
# File transfer: FT_MB MB through both PFs, three runs, next to one raw loopback TCP
# connection carrying 64 KiB messages (section 4). Not measured: Kamailio's msrp relay.
#
# Output: Markdown on stdout and in bench/results/msrp-<date>[-quick][-TAG].md (-2, -3...);
# raw files in a work directory under ${TMPDIR:-/tmp} (path printed). Traffic stays on
# 127.0.0.1; every process started here is stopped by PID on exit.
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$BENCH_DIR/lib.sh"
REPO_ROOT=$(cd "$BENCH_DIR/.." && pwd)
PY="python3 $BENCH_DIR/sipbench.py"
MPY="python3 $BENCH_DIR/msrpbench.py"

QUICK=0
RATES=""
DURATION=""
SENDERS=50
WINDOW=8
SIZE=100
MAX_P99=50
THREADS=""
IDLE_SENDERS=24
FT_MB=50
IDLE_SESSIONS=100
PERF=1
BIN_DIR=""
BUILD=1
WAIT_IDLE=25
KEEP=0
TAG=""

usage() { sed -n '2,/^set -euo/p' "$0" | grep '^#' | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) QUICK=1; shift ;;
        --rates) RATES="$2"; shift 2 ;;
        --duration) DURATION="$2"; shift 2 ;;
        --senders) SENDERS="$2"; shift 2 ;;
        --window) WINDOW="$2"; shift 2 ;;
        --size) SIZE="$2"; shift 2 ;;
        --max-p99-ms) MAX_P99="$2"; shift 2 ;;
        --threads) THREADS="$2"; shift 2 ;;
        --idle-senders) IDLE_SENDERS="$2"; shift 2 ;;
        --idle-sessions) IDLE_SESSIONS="$2"; shift 2 ;;
        --no-perf) PERF=0; shift ;;
        --bin-dir) BIN_DIR="$2"; BUILD=0; shift 2 ;;
        --no-build) BUILD=0; shift ;;
        --wait-idle) WAIT_IDLE="$2"; shift 2 ;;
        --keep) KEEP=1; shift ;;
        --tag) TAG="$2"; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "unknown argument: $1" >&2; usage >&2; exit 2 ;;
    esac
done
if [ "$QUICK" = 1 ]; then
    : "${RATES:=500 1000 2000}" "${DURATION:=3}"
    IDLE_SENDERS=4; IDLE_SESSIONS=25
else
    : "${RATES:=1000 2000 3000 4000 5000 6000 7000 8000 10000 12000 15000 20000 25000}" "${DURATION:=10}"
fi
for c in python3 curl; do command -v "$c" >/dev/null 2>&1 || die "$c not found"; done
command -v perf >/dev/null 2>&1 || PERF=0
# ~4 descriptors per session in the node, 2 in the generator.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# ------------------------------------------------------------------ process bookkeeping
PIDS=()
WORK=$(mktemp -d "${TMPDIR:-/tmp}/msrp-bench.XXXXXX")
cleanup() {
    local rc=$? p
    for p in "${PIDS[@]}"; do stop_pid "$p" 3; done
    if [ "$KEEP" = 0 ] && [ "$rc" = 0 ]; then
        find "$WORK" -name 'cpm.db*' -delete 2>/dev/null || true
        find "$WORK" -name 'perf.data*' -delete 2>/dev/null || true
    fi
    log "work directory: $WORK"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ------------------------------------------------------------------ binaries
if [ -n "$BIN_DIR" ]; then
    :
elif [ "$BUILD" = 1 ]; then
    log "cargo build --release -p cpm -p cpm-bench"
    (cd "$REPO_ROOT" && cargo build --release -p cpm -p cpm-bench) >"$WORK/cargo-build.log" 2>&1 ||
        { tail -30 "$WORK/cargo-build.log" >&2; die "cargo build failed (log: $WORK/cargo-build.log)"; }
    BIN_DIR=$(cd "$REPO_ROOT" && cargo metadata --format-version 1 --no-deps 2>/dev/null |
        python3 -c 'import json,sys;print(json.load(sys.stdin)["target_directory"])')/release
else
    BIN_DIR=${CARGO_TARGET_DIR:-$REPO_ROOT/target}/release
fi
CPM_BIN=$BIN_DIR/cpm
GEN_BIN=$BIN_DIR/cpm-bench
[ -x "$CPM_BIN" ] && [ -x "$GEN_BIN" ] || die "$CPM_BIN or $GEN_BIN not found"
"$CPM_BIN" serve --help 2>&1 | grep -q -- --msrp-listen || die "$CPM_BIN serve lacks --msrp-listen"

# ------------------------------------------------------------------ the node
SERVER_PID=""
SERVER_PORT=""
HTTP_PORT=""
start_cpm() {  # start_cpm NAME USERS: a fresh data directory with USERS senders and receivers
    local name=$1 users=$2 dir=$WORK/$1 i threads=()
    mkdir -p "$dir/data"
    for ((i = 0; i < users; i++)); do
        "$CPM_BIN" admin user add "snd$i@localhost" --password benchpw --data-dir "$dir/data" >>"$dir/admin.log" 2>&1 &&
            "$CPM_BIN" admin user add "rcv$i@localhost" --password benchpw --data-dir "$dir/data" >>"$dir/admin.log" 2>&1 ||
            { tail "$dir/admin.log" >&2; die "cpm admin user add failed"; }
    done
    # All users come from 127.0.0.1: lift the per-source limits meant for the open internet.
    printf '[limits]\nrequests_per_sec_per_source = 1000000\nburst_per_source = 1000000\nudp_packets_per_sec_per_source = 0\n' >"$dir/cpm.toml"
    [ -n "$THREADS" ] && threads=(--threads "$THREADS")
    SERVER_PORT=$(freeport --tcp)
    HTTP_PORT=$(freeport --tcp)
    MSRP_PORT=$(freeport --tcp)
    "$CPM_BIN" serve --domain localhost --sip-listen "127.0.0.1:$SERVER_PORT" \
        --msrp-listen "127.0.0.1:$MSRP_PORT" --http-listen "127.0.0.1:$HTTP_PORT" \
        --data-dir "$dir/data" --config "$dir/cpm.toml" "${threads[@]}" >>"$dir/cpm.log" 2>&1 &
    SERVER_PID=$!
    PIDS+=("$SERVER_PID")
    for ((i = 0; i < 100; i++)); do
        curl -sf --max-time 1 "http://127.0.0.1:$HTTP_PORT/health" >/dev/null 2>&1 && break
        kill -0 "$SERVER_PID" 2>/dev/null || { tail -30 "$dir/cpm.log" >&2; die "cpm serve exited"; }
        sleep 0.1
    done
    [ "$i" -lt 100 ] || die "cpm not healthy after 10 s"
    log "$name: cpm ready (pid $SERVER_PID, sip $SERVER_PORT, msrp $MSRP_PORT, ${THREADS:-default} threads, $users+$users users)"
}
stop_cpm() {
    stop_pid "$SERVER_PID" 10
    untrack "$SERVER_PID"
    SERVER_PID=""
}
wait_idle() {
    [ "$WAIT_IDLE" = 0 ] && return 0
    local busy
    if busy=$($PY idle --max-pct "$WAIT_IDLE" --timeout 600); then
        log "machine CPU use before $1: $busy % of a core"
    else
        log "machine still busy before $1 ($busy % of a core): running anyway"
    fi
}

RESULTS=$WORK/results.jsonl
: >"$RESULTS"
log "work directory: $WORK"
LOAD_BEFORE=$(loadavg)
log "machine: $(nproc) cores, load avg $LOAD_BEFORE"

# ------------------------------------------------------------------ 1. idle sessions
wait_idle "the idle-session test"
start_cpm idle "$IDLE_SENDERS"
for cycle in 1 2; do
    log "idle cycle $cycle: $IDLE_SENDERS senders x $IDLE_SESSIONS sessions"
    "$GEN_BIN" idle --server "127.0.0.1:$SERVER_PORT" --node-pid "$SERVER_PID" \
        --senders "$IDLE_SENDERS" --receivers "$IDLE_SENDERS" --sessions "$IDLE_SESSIONS" \
        2>"$WORK/idle/gen-$cycle.err" | sed "s/^{/{\"cycle\":$cycle,/" | tee -a "$RESULTS" >&2 ||
        die "cpm-bench idle failed (see $WORK/idle/gen-$cycle.err)"
    sleep 2
done
grep -h '"type":"idle"' "$RESULTS" >/dev/null || die "no idle result"
echo "{\"type\":\"node_log\",\"name\":\"idle\",\"warn_error_lines\":$(grep -c -E 'WARN|ERROR' "$WORK/idle/cpm.log" || true)}" >>"$RESULTS"
stop_cpm

# ------------------------------------------------------------------ 2. chat ramp
wait_idle "the chat ramp"
start_cpm chat "$SENDERS"
PERF_PID=""
if [ "$PERF" = 1 ]; then
    perf record -F 499 -g -p "$SERVER_PID" -o "$WORK/chat/perf.data" >"$WORK/chat/perf.log" 2>&1 &
    PERF_PID=$!
    PIDS+=("$PERF_PID")
fi
log "chat ramp: $SENDERS senders x 1 session, window $WINDOW, $SIZE-byte texts, rates $RATES (${DURATION}s each)"
"$GEN_BIN" chat --server "127.0.0.1:$SERVER_PORT" --node-pid "$SERVER_PID" \
    --senders "$SENDERS" --receivers "$SENDERS" --window "$WINDOW" --size "$SIZE" \
    --rates "$RATES" --duration "$DURATION" --max-p99-ms "$MAX_P99" \
    2>"$WORK/chat/gen.err" | tee -a "$RESULTS" >&2 || die "cpm-bench chat failed (see $WORK/chat/gen.err)"
if [ -n "$PERF_PID" ]; then
    kill -INT "$PERF_PID" 2>/dev/null || true
    wait "$PERF_PID" 2>/dev/null || true
    untrack "$PERF_PID"
    perf report -i "$WORK/chat/perf.data" --no-children --sort symbol --stdio 2>/dev/null |
        grep -E '^ +[0-9.]+%' | head -30 >"$WORK/chat/perf-top.txt" || true
    perf report -i "$WORK/chat/perf.data" --no-children --sort dso --stdio 2>/dev/null |
        grep -E '^ +[0-9.]+%' | head -8 >"$WORK/chat/perf-dso.txt" || true
fi
sleep 1
echo "{\"type\":\"history\",\"db\":$($PY history "$WORK/chat/data/cpm.db")}" >>"$RESULTS"
echo "{\"type\":\"node_log\",\"name\":\"chat\",\"warn_error_lines\":$(grep -c -E 'WARN|ERROR' "$WORK/chat/cpm.log" || true)}" >>"$RESULTS"
stop_cpm

# ------------------------------------------------------------------ 3. TCP reference
BYTES=$($MPY send-bytes "$RESULTS")
wait_idle "the TCP reference"
for i in 1 2 3; do
    "$GEN_BIN" tcp --conns "$SENDERS" --window "$WINDOW" --size "$BYTES" --duration 5 | tee -a "$RESULTS" >&2
done

# ------------------------------------------------------------------ 4. file transfer
# A FT_MB MB file from snd0 to rcv0 through both PFs (`cpm client send-file`, 64 KiB chunks,
# a window of 8; every chunk written to a media object at each PF before it is relayed, the
# SHA-1 checked, the file linked from both histories), saved by `listen --download-dir`:
# the time from the command's start to its exit (it exits after the last chunk's 200, which
# follows the receiver's). The reference: one raw loopback TCP connection carrying the same
# octets in 64 KiB messages, window 8 (`cpm-bench tcp`).
wait_idle "the file transfer"
start_cpm ft 1
mkdir -p "$WORK/ft/dl"
head -c $((FT_MB * 1024 * 1024)) /dev/urandom >"$WORK/ft/file.bin"
"$CPM_BIN" client --server "127.0.0.1:$SERVER_PORT" --user rcv0@localhost --password benchpw \
    --transport tcp listen --json --download-dir "$WORK/ft/dl" >"$WORK/ft/listen.out" 2>&1 &
LISTEN_PID=$!
PIDS+=("$LISTEN_PID")
for ((i = 0; i < 100; i++)); do
    grep -q '"registered"' "$WORK/ft/listen.out" 2>/dev/null && break
    sleep 0.1
done
for run in 1 2 3; do
    rm -f "$WORK/ft/dl"/*
    t0=$(date +%s.%N)
    "$CPM_BIN" client --server "127.0.0.1:$SERVER_PORT" --user snd0@localhost --password benchpw \
        --transport tcp send-file rcv0@localhost "$WORK/ft/file.bin" >"$WORK/ft/send-$run.out" 2>&1 ||
        die "send-file failed (see $WORK/ft/send-$run.out)"
    t1=$(date +%s.%N)
    for ((i = 0; i < 100; i++)); do
        [ -e "$WORK/ft/dl/file.bin" ] && break
        sleep 0.05
    done
    same=false
    cmp -s "$WORK/ft/file.bin" "$WORK/ft/dl/file.bin" && same=true
    echo "{\"type\":\"ft\",\"run\":$run,\"bytes\":$((FT_MB * 1024 * 1024)),\"secs\":$(printf '%.4f' "$(echo "$t1 - $t0" | bc)"),\"same\":$same}" | tee -a "$RESULTS" >&2
done
stop_pid "$LISTEN_PID" 5
untrack "$LISTEN_PID"
stop_cpm
for run in 1 2 3; do
    "$GEN_BIN" tcp --conns 1 --window 8 --size 65536 --duration 5 | sed 's/"type":"tcp"/"type":"tcp_bulk"/' | tee -a "$RESULTS" >&2
done

# ------------------------------------------------------------------ report
DATE=$(date +%Y-%m-%d)
mkdir -p "$BENCH_DIR/results"
BASE=$BENCH_DIR/results/msrp-$DATE
[ "$QUICK" = 1 ] && BASE=$BASE-quick
[ -n "$TAG" ] && BASE=$BASE-$TAG
MD=$BASE.md
n=2
while [ -e "$MD" ]; do MD=$BASE-$n.md; n=$((n + 1)); done
FS=$(df -PT "$WORK" | awk 'NR == 2 {print $2 " on " $1}')
$MPY report --results "$RESULTS" --md "$MD" --date "$(date '+%Y-%m-%d %H:%M %Z')" \
    --perf-top "$WORK/chat/perf-top.txt" --perf-dso "$WORK/chat/perf-dso.txt" \
    --header "- machine: \`nproc\` = $(nproc); CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'); kernel $(uname -r); load average before/after: $LOAD_BEFORE / $(loadavg) (shared machine)" \
    --header "- cpm: $("$CPM_BIN" --version 2>/dev/null), binary $CPM_BIN built $(date -r "$CPM_BIN" '+%Y-%m-%d %H:%M:%S'); \`--threads\` ${THREADS:-default ($(nproc) shards)}; store \`synchronous = \"full\"\`; data directory on $FS" \
    --header "- repository at run time: $(git -C "$REPO_ROOT" log -1 --format='%h %cd' --date=format:'%Y-%m-%d %H:%M' 2>/dev/null || echo n/a)$([ -n "$(git -C "$REPO_ROOT" status --porcelain --untracked-files=no 2>/dev/null)" ] && echo ' (tracked files modified)')" \
    --header "- chat: $SENDERS senders -> $SENDERS receivers, one session each, window $WINDOW, text $SIZE bytes; ramp (/s) $RATES, ${DURATION} s per step, clean = no failure, all answered, >= 95 % sent, p99 <= $MAX_P99 ms" \
    --header "- idle: $IDLE_SENDERS senders x $IDLE_SESSIONS sessions to $IDLE_SENDERS receivers, two cycles on one fresh node; mode: $([ "$QUICK" = 1 ] && echo quick || echo normal)"
log "report written to $MD"
