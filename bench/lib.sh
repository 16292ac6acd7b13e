# Shell helpers every bench/*.sh script sources (after setting BENCH_DIR and PY):
# logging, stopping the processes a script started (by PID), free ports, the load average.
# A script keeps its own PIDS array and cleanup trap; these only act on what it passes.

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

stop_pid() {  # stop_pid PID [grace seconds]: TERM, wait, KILL
    local pid=$1 grace=${2:-5} i
    kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < grace * 10; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        log "pid $pid did not stop on SIGTERM, sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}

# untrack PID: forget a process the script stopped itself.
untrack() { local p keep=(); for p in "${PIDS[@]}"; do [ "$p" = "$1" ] || keep+=("$p"); done; PIDS=("${keep[@]}"); }

# freeport [--tcp]: a free port on 127.0.0.1 (bench/sipbench.py).
freeport() { $PY freeport "$@"; }
loadavg() { cut -d' ' -f1-3 /proc/loadavg; }
