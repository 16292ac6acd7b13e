#!/usr/bin/env python3
"""Helpers for bench/registrations.sh (python3 standard library only; reuses bench/sipbench.py).

Subcommands:
  provision DB --count N    create the accounts u1..uN@DOMAIN in cpm's user table (cpm.db)
  sample --first F --last L --k K --out CSV
                            a SIPp RANDOM injection file of K users drawn from uF..uL
  mem PID [--kam-ctl SOCK]  JSON: memory of PID and its descendants (VmRSS, Pss, Private, from
                            /proc/PID/smaps_rollup), CPU ticks, machine CPU; Kamailio's shared
                            memory (kamcmd core.shmmem) with --kam-ctl
  sippstat CSV...           JSON: the SIPp -trace_stat files of one phase merged (200s, failures,
                            retransmissions, elapsed time, rate over time, response times)
  probe ...                 MESSAGE latency probe with microsecond resolution to random users
                            (sipbench.Probe, see its doc: SIPp's own timer has 4 ms ticks)
  dbinfo DATADIR            JSON: sizes of cpm.db / -wal / -shm, rows of users and bindings
  cpm-held URL              JSON: cpm_registrations, cpm_store_queue_depth, ... from /metrics
  kam-held SOCK             JSON: usrloc statistics of a Kamailio (kamcmd)
  phase ...                 one record of a phase (fill / lookup) from the files above
  report ...                the Markdown report of bench/registrations.sh
"""

import argparse
import hashlib
import json
import os
import random
import re
import sqlite3
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sipbench  # noqa: E402  (read-only helpers: Probe, pct, read_stat_last, cpu_all, ...)


# --------------------------------------------------------------------------- provision
def cmd_provision(a):
    """Accounts u<first>..u<first+count-1>@domain, with the same four HA1 values that
    `cpm admin user add` stores (crates/cpm-store/src/sqlite/users.rs: MD5 and SHA-256 of
    `username:realm:password` for the user part and for the whole AOR). The schema must exist
    (the script creates one account with `cpm admin user add` first). One transaction."""
    t0 = time.monotonic()
    con = sqlite3.connect(a.db, timeout=30)
    realm = a.realm or a.domain
    pw = a.password
    now = int(time.time())

    def rows():
        for i in range(a.first, a.first + a.count):
            user = f"{a.prefix}{i}"
            aor = f"{user}@{a.domain}"
            yield (
                aor, realm,
                hashlib.md5(f"{user}:{realm}:{pw}".encode()).hexdigest(),
                hashlib.md5(f"{aor}:{realm}:{pw}".encode()).hexdigest(),
                hashlib.sha256(f"{user}:{realm}:{pw}".encode()).hexdigest(),
                hashlib.sha256(f"{aor}:{realm}:{pw}".encode()).hexdigest(),
                now,
            )

    with con:
        con.executemany(
            "INSERT OR IGNORE INTO users (aor, realm, ha1_md5_user, ha1_md5_aor, "
            "ha1_sha256_user, ha1_sha256_aor, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)", rows())
    n = con.execute("SELECT COUNT(*) FROM users").fetchone()[0]
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    print(json.dumps({"users": n, "seconds": round(time.monotonic() - t0, 1)}))
    return 0


# --------------------------------------------------------------------------- sample
def cmd_sample(a):
    rnd = random.Random(a.seed)
    span = a.last - a.first + 1
    k = min(a.k, span)
    picks = rnd.sample(range(a.first, a.last + 1), k)
    with open(a.out, "w") as f:
        f.write("RANDOM\n")
        for i in picks:
            f.write(f"{a.prefix}{i};{a.domain}\n")
    return 0


# --------------------------------------------------------------------------- mem
ROLLUP_KEYS = ("Rss", "Pss", "Pss_Anon", "Pss_File", "Pss_Shmem", "Shared_Clean", "Shared_Dirty",
               "Private_Clean", "Private_Dirty", "Anonymous", "Swap")


def kam_shm(ctl):
    """Kamailio's shared memory pool in KB (`core.shmmem k`: MB or bytes overflow 32 bits in
    kamcmd's output at -m 4096)."""
    try:
        out = subprocess.run(["kamcmd", "-s", f"unix:{ctl}", "core.shmmem", "k"],
                             capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    v = {}
    for m in re.finditer(r"(\w+):\s*(-?\d+)", out):
        v[m.group(1)] = int(m.group(2))
    return {"shm_" + k + "_kb": v[k] for k in ("total", "used", "real_used", "max_used",
                                               "fragments") if k in v}


def mem_snapshot(pid, kam_ctl=""):
    procs = sipbench._tree(pid)
    tot = {k: 0 for k in ROLLUP_KEYS}
    ticks = vmrss = n = 0
    for p in procs:
        try:
            with open(f"/proc/{p}/stat") as f:
                s = f.read()
            rest = s[s.rindex(")") + 2:].split()
            ticks += int(rest[11]) + int(rest[12])
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        vmrss += int(line.split()[1])
            with open(f"/proc/{p}/smaps_rollup") as f:
                for line in f:
                    k, _, rest_ = line.partition(":")
                    if k in tot:
                        tot[k] += int(rest_.split()[0])
            n += 1
        except (OSError, ValueError, IndexError):
            continue
    snap = {"t": time.time(), "nproc": n, "ticks": ticks, "hz": os.sysconf("SC_CLK_TCK"),
            "vmrss_kb": vmrss, "cpu_all": sipbench.cpu_all()}
    for k, v in tot.items():
        snap[k.lower() + "_kb"] = v
    snap["private_kb"] = tot["Private_Clean"] + tot["Private_Dirty"]
    if kam_ctl:
        snap.update(kam_shm(kam_ctl))
    return snap


def cmd_mem(a):
    print(json.dumps(mem_snapshot(a.pid, a.kam_ctl)))
    return 0


# --------------------------------------------------------------------------- sippstat
def _rows(path):
    try:
        with open(path, encoding="latin-1") as f:
            lines = [l.rstrip("\r\n") for l in f if l.strip()]
    except OSError:
        return []
    if len(lines) < 2:
        return []
    head = lines[0].split(";")
    return [dict(zip(head, l.split(";"))) for l in lines[1:]]


def _ms(v):
    """SIPp duration "HH:MM:SS:uuuuuu" -> ms."""
    try:
        h, m, s, us = v.split(":")
        return (int(h) * 3600 + int(m) * 60 + int(s)) * 1000 + int(us) / 1000.0
    except (ValueError, AttributeError):
        return None


def repartition(last):
    """[(label, count)] of ResponseTimeRepartition1 buckets (cumulative columns)."""
    out = []
    for k, v in last.items():
        if k.startswith("ResponseTimeRepartition1_"):
            try:
                out.append((k.split("_", 1)[1], int(v or 0)))
            except ValueError:
                pass
    return out


def bucket_pct(rep, q):
    """Upper bound label of the bucket that holds quantile q."""
    total = sum(c for _, c in rep)
    if not total:
        return None
    acc = 0
    for label, c in rep:
        acc += c
        if acc >= q * total:
            return label
    return rep[-1][0]


def sippstat(paths, window):
    per = []
    for p in paths:
        rows = _rows(p)
        if rows:
            per.append(rows)
    out = {"files": len(paths), "parsed": len(per)}
    if not per:
        return out
    lasts = [r[-1] for r in per]
    start = min(sipbench._epoch(r[0]["StartTime"]) for r in per)
    end = max(sipbench._epoch(l["CurrentTime"]) for l in lasts)
    ok = sum(sipbench._int(l, "SuccessfulCall(C)") for l in lasts)
    out.update(
        start=start, end=end, elapsed_s=round(end - start, 3),
        created=sum(sipbench._int(l, "OutgoingCall(C)") for l in lasts),
        successful=ok,
        failed=sum(sipbench._int(l, "FailedCall(C)") for l in lasts),
        retrans=sum(sipbench._int(l, "Retransmissions(C)") for l in lasts),
        dead_msgs=sum(sipbench._int(l, "DeadCallMsgs(C)") for l in lasts),
        out_of_call_msgs=sum(sipbench._int(l, "OutOfCallMsgs(C)") for l in lasts),
    )
    out["rate"] = round(ok / out["elapsed_s"], 1) if out["elapsed_s"] > 0 else 0.0
    fails = {}
    for l in lasts:
        for k in l:
            if k.startswith("Failed") and k.endswith("(C)") and k != "FailedCall(C)":
                v = sipbench._int(l, k)
                if v:
                    fails[k[6:-3]] = fails.get(k[6:-3], 0) + v
    out["fail_kinds"] = fails
    # response time: mean over processes weighted by their 200s; buckets summed
    w = [(sipbench._int(l, "SuccessfulCall(C)"), _ms(l.get("ResponseTime1(C)"))) for l in lasts]
    num = sum(n * m for n, m in w if m is not None)
    den = sum(n for n, m in w if m is not None)
    out["rt_mean_ms"] = round(num / den, 2) if den else None
    rep = {}
    order = []
    for l in lasts:
        for label, c in repartition(l):
            if label not in rep:
                order.append(label)
            rep[label] = rep.get(label, 0) + c
    rep_l = [(k, rep[k]) for k in order]
    out["repartition"] = rep_l
    out["rt_p50_bucket"] = bucket_pct(rep_l, 0.50)
    out["rt_p99_bucket"] = bucket_pct(rep_l, 0.99)
    # rate over time: the processes' cumulative 200s summed at every `window` seconds
    series = []
    curves = [[(sipbench._epoch(r["CurrentTime"]), sipbench._int(r, "SuccessfulCall(C)"),
                sipbench._int(r, "Retransmissions(C)"), sipbench._int(r, "FailedCall(C)"))
               for r in rows] for rows in per]

    def at(curve, t):
        v = (0, 0, 0)
        for tt, s, rt, f in curve:
            if tt <= t:
                v = (s, rt, f)
            else:
                break
        return v

    t, prev = start, (0, 0, 0)
    while t < end + window:
        t = min(t + window, end)
        vals = [at(c, t) for c in curves]
        cur = tuple(sum(v[i] for v in vals) for i in range(3))
        dt = window if t - start >= window or not series else t - start
        series.append({"t_s": round(t - start, 1), "held": cur[0],
                       "rate": round((cur[0] - prev[0]) / max(dt, 1e-9), 1),
                       "retrans": cur[1] - prev[1], "failed": cur[2] - prev[2]})
        prev = cur
        if t >= end:
            break
    out["series"] = series
    return out


def cmd_sippstat(a):
    print(json.dumps(sippstat(a.csv, a.window)))
    return 0


# --------------------------------------------------------------------------- probe
def cmd_probe(a):
    host, port = a.server.rsplit(":", 1)
    users = []
    with open(a.users) as f:
        for line in f:
            line = line.strip()
            if line and ";" in line:
                users.append(line.split(";")[0])
    p = sipbench.Probe((host, int(port)), "probe", users[0], a.domain, a.port)
    rnd = random.Random(a.seed)
    samples, errors = [], {}
    interval = 1.0 / a.rate
    start = time.monotonic()
    end = start + a.duration
    i = 0
    while True:
        due = start + i * interval
        now = time.monotonic()
        if due >= end:
            break
        if due > now:
            time.sleep(due - now)
        i += 1
        p.to = rnd.choice(users)
        ms, err = p.message(a.timeout)
        if ms is not None:
            samples.append(round(ms, 4))
        if err is not None:
            errors[str(err)] = errors.get(str(err), 0) + 1
    samples.sort()
    out = {"sent": i, "ok": len(samples), "errors": errors,
           "p50_ms": sipbench.pct(samples, 0.50), "p90_ms": sipbench.pct(samples, 0.90),
           "p99_ms": sipbench.pct(samples, 0.99), "max_ms": samples[-1] if samples else None,
           "samples_ms": samples}
    with open(a.out, "w") as f:
        json.dump(out, f)
    return 0


# --------------------------------------------------------------------------- db / held
def cmd_dbinfo(a):
    out = {}
    for suf in ("", "-wal", "-shm"):
        pth = os.path.join(a.datadir, "cpm.db" + suf)
        out["bytes" + suf.replace("-", "_")] = os.path.getsize(pth) if os.path.exists(pth) else 0
    out["bytes_total"] = out["bytes"] + out["bytes_wal"] + out["bytes_shm"]
    try:
        con = sqlite3.connect(f"file:{os.path.join(a.datadir, 'cpm.db')}?mode=ro", uri=True,
                              timeout=30)
        out["users"] = con.execute("SELECT COUNT(*) FROM users").fetchone()[0]
        out["bindings"] = con.execute("SELECT COUNT(*) FROM bindings").fetchone()[0]
        out["page_size"] = con.execute("PRAGMA page_size").fetchone()[0]
        out["page_count"] = con.execute("PRAGMA page_count").fetchone()[0]
        try:
            # per-table pages (needs SQLITE_ENABLE_DBSTAT_VTAB; optional)
            rows = con.execute("SELECT name, SUM(pgsize) FROM dbstat GROUP BY name").fetchall()
            out["table_bytes"] = {n: b for n, b in rows}
        except sqlite3.Error:
            pass
        con.close()
    except sqlite3.Error as e:
        out["error"] = str(e)
    print(json.dumps(out))
    return 0


CPM_GAUGES = ("cpm_registrations", "cpm_store_queue_depth", "cpm_registrations_accepted_total",
              "cpm_user_lookups_total", "cpm_store_ops_total", "cpm_store_batches_total",
              "cpm_sip_local_failures_total", "cpm_sip_requests_received_total",
              "cpm_sip_transactions", "cpm_sip_send_failures_total", "cpm_messages_forwarded_total",
              "cpm_sip_rate_limited_total", "cpm_udp_flood_dropped_total", "cpm_store_in_flight",
              "cpm_store_failed_batches_total", "cpm_pf_in_progress", "cpm_sip_parse_errors_total")


def cpm_metrics(url):
    import urllib.request
    out = {}
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            text = r.read().decode()
    except OSError:
        return out
    for line in text.splitlines():
        if line.startswith("cpm_"):
            parts = line.split()
            if len(parts) == 2:
                try:
                    out[parts[0]] = float(parts[1])
                except ValueError:
                    pass
    return out


def cmd_cpm_held(a):
    m = cpm_metrics(a.url)
    out = {k: int(m[k]) for k in CPM_GAUGES if k in m}
    for k, v in m.items():
        if k.startswith("cpm_overload") or k.startswith("cpm_store_commit_seconds"):
            out[k] = v
    out["held"] = out.get("cpm_registrations")
    print(json.dumps(out))
    return 0


def kam_stats(ctl, group):
    try:
        txt = subprocess.run(["kamcmd", "-s", f"unix:{ctl}", "stats.get_statistics", group],
                             capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    out = {}
    for line in txt.splitlines():
        if "=" in line:
            k, v = line.split("=", 1)
            try:
                out[k.strip()] = int(v.strip())
            except ValueError:
                pass
    return out


def cmd_kam_held(a):
    out = kam_stats(a.ctl, "usrloc:")
    core = kam_stats(a.ctl, "core:")
    for k in ("core:rcv_requests_register", "core:rcv_requests_message",
              "core:rcv_replies_2xx_message", "core:drop_requests", "core:err_requests"):
        if k in core:
            out[k] = core[k]
    sl = kam_stats(a.ctl, "sl:")
    for k in ("sl:200_replies", "sl:4xx_replies", "sl:5xx_replies", "sl:sent_err_replies"):
        if k in sl:
            out[k] = sl[k]
    out["held"] = out.get("usrloc:location_contacts")
    print(json.dumps(out))
    return 0


# --------------------------------------------------------------------------- phase
def _load(path):
    if not path:
        return None
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _times_children(path):
    """bash `times`, line 2 = children's user and system CPU ("0m1.234s 0m0.567s"), s."""
    try:
        with open(path) as f:
            ch = f.read().split("\n")[1].split()
        tot = 0.0
        for t in ch[:2]:
            m, s_ = t.rstrip("s").split("m")
            tot += int(m) * 60 + float(s_)
        return tot
    except (OSError, IndexError, ValueError):
        return None


def cmd_phase(a):
    """One record: a fill (REGISTERs) or a lookup (MESSAGEs) phase of one server."""
    rec = {"type": a.kind, "server": a.server, "label": a.label, "offered_rate": a.rate,
           "procs": a.procs, "expected": a.expected}
    rec["sipp"] = sippstat(a.csv, a.window) if a.csv else {}
    s0, s1 = _load(a.snap0), _load(a.snap1)
    if s0 and s1:
        wall = s1["t"] - s0["t"]
        cpu_s = (s1["ticks"] - s0["ticks"]) / s0["hz"]
        rec["server_cpu_s"] = round(cpu_s, 2)
        rec["server_cpu_pct"] = round(100.0 * cpu_s / wall, 1) if wall > 0 else None
        rec["machine_cpu_pct"] = round(100.0 * (s1["cpu_all"] - s0["cpu_all"]) / s0["hz"] / wall, 1) \
            if wall > 0 else None
        ok = rec["sipp"].get("successful") or 0
        rec["server_cpu_us_per_req"] = round(1e6 * cpu_s / ok, 1) if ok else None
        rec["wall_s"] = round(wall, 2)
    t0, t1 = _times_children(a.times0) if a.times0 else None, _times_children(a.times1) if a.times1 else None
    if t0 is not None and t1 is not None:
        el = rec["sipp"].get("elapsed_s") or 0
        rec["sipp_cpu_s"] = round(t1 - t0, 2)
        rec["sipp_cpu_pct_per_proc"] = round(100.0 * (t1 - t0) / el / max(a.procs, 1), 1) if el else None
    pr = _load(a.probe)
    if pr:
        pr.pop("samples_ms", None)
        rec["probe"] = pr
    uas0, uas1 = _load(a.uas0), _load(a.uas1)
    if uas0 is not None and uas1 is not None:
        rec["uas"] = {k: uas1.get(k, 0) - uas0.get(k, 0) for k in uas1}
    if a.held:
        rec["held"] = _load(a.held)
    h0 = _load(a.held0) if a.held0 else None
    if h0 is not None and rec.get("held"):
        # counters moved during the phase (cpm: store ops and commits, user lookups; Kamailio:
        # requests and replies)
        rec["counters"] = {k: v - h0.get(k, 0) for k, v in rec["held"].items()
                           if isinstance(v, (int, float)) and k != "held"
                           and (k.endswith("_total") or k.startswith(("core:", "sl:")))
                           and v - h0.get(k, 0)}
        rec["held0"] = h0.get("held")
    if rec.get("wall_s") and rec["sipp"].get("successful"):
        rec["rate_wall"] = round(rec["sipp"]["successful"] / rec["wall_s"], 1)
    rec["window"] = a.window_sipp
    if a.load:
        rec["load"] = a.load
    with open(a.out, "a") as f:
        f.write(json.dumps(rec) + "\n")
    sp = rec["sipp"]
    line = (f"  {a.server} {a.kind} {a.label}: {sp.get('successful')} x 200 in {sp.get('elapsed_s')} s "
            f"= {sp.get('rate')}/s, failed {sp.get('failed')} {sp.get('fail_kinds') or ''}, "
            f"retrans {sp.get('retrans')}, server cpu {rec.get('server_cpu_pct')} % "
            f"({rec.get('server_cpu_us_per_req')} us/req), sipp cpu/proc {rec.get('sipp_cpu_pct_per_proc')} %")
    if pr:
        line += f", probe p50/p99 {pr.get('p50_ms')}/{pr.get('p99_ms')} ms ({pr.get('ok')}/{pr.get('sent')})"
    print(line)
    return 0


def cmd_server(a):
    """The memory / store record of one server."""
    rec = {"type": "server", "server": a.server, "count": a.count,
           "mem0": _load(a.mem0), "mem1": _load(a.mem1), "mem2": _load(a.mem2),
           "db0": _load(a.db0), "db1": _load(a.db1),
           "held": _load(a.held), "held2": _load(a.held2), "notes": a.note}
    with open(a.out, "a") as f:
        f.write(json.dumps(rec) + "\n")
    return 0


# --------------------------------------------------------------------------- report
def _f(v, nd=1):
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.{nd}f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def _mb(kb):
    return None if kb is None else kb / 1024.0


def mem_figures(srv):
    """(rss0_kb, rss1_kb, bytes/binding by RSS, by PSS, by shm+private, details)."""
    m0, m1 = srv.get("mem0") or {}, srv.get("mem1") or {}
    held = (srv.get("held") or {}).get("held") or 0
    d = {}
    if not m0 or not m1 or not held:
        return d
    for k in ("vmrss_kb", "pss_kb", "private_kb", "pss_anon_kb", "pss_shmem_kb"):
        if k in m0 and k in m1:
            d[k] = (m0[k], m1[k], 1024.0 * (m1[k] - m0[k]) / held)
    if "shm_real_used_kb" in m0 and "shm_real_used_kb" in m1:
        d["shm_real_used_kb"] = (m0["shm_real_used_kb"], m1["shm_real_used_kb"],
                                 1024.0 * (m1["shm_real_used_kb"] - m0["shm_real_used_kb"]) / held)
    return d


def cmd_report(a):
    recs = []
    with open(a.results) as f:
        for line in f:
            if line.strip():
                recs.append(json.loads(line))
    servers = []
    for r in recs:
        if r["server"] not in servers:
            servers.append(r["server"])
    by = {s: {"fill": [], "lookup": [], "server": None} for s in servers}
    for r in recs:
        if r["type"] == "server":
            by[r["server"]]["server"] = r
        elif r["type"] in ("fill", "lookup"):
            by[r["server"]][r["type"]].append(r)

    L = [f"# Registrations at scale: cpm vs Kamailio usrloc ({a.date})", ""]
    L += a.header
    L.append("")
    L += ["## Summary", ""]
    verdict = {}
    cols = {}
    for s in servers:
        b = by[s]
        srv = b["server"] or {}
        held = (srv.get("held") or {}).get("held")
        fill = [r for r in b["fill"] if r["label"] == "bulk"]
        fill = fill[0] if fill else {}
        sp = fill.get("sipp", {})
        mf = mem_figures(srv)
        rss, pss = mf.get("vmrss_kb"), mf.get("pss_kb")
        shm, priv = mf.get("shm_real_used_kb"), mf.get("private_kb")
        lk = {r["label"]: r for r in b["lookup"]}
        db0, db1 = srv.get("db0") or {}, srv.get("db1") or {}
        cnt = fill.get("counters") or {}
        c = {}
        c["bindings held after the fill"] = _f(held)
        c["bulk REGISTERs: 200 / sent"] = f"{_f(sp.get('successful'))} / {_f(sp.get('created'))}"
        c["fill time, s (SIPp first send to last answer; script wall)"] = \
            f"{_f(sp.get('elapsed_s'))}; {_f(fill.get('wall_s'))}"
        c["REGISTER/s (200s / SIPp elapsed; / wall)"] = f"**{_f(sp.get('rate'), 0)}**; {_f(fill.get('rate_wall'), 0)}"
        fk = sp.get("fail_kinds") or {}
        c["failed REGISTERs; retransmissions"] = (
            f"{_f(sp.get('failed'))}{(' (' + ', '.join(f'{k}: {v}' for k, v in fk.items()) + ')') if fk else ''}"
            f"; {_f(sp.get('retrans'))}")
        c["REGISTER response time: mean ms; p50 / p99 bucket"] = \
            f"{_f(sp.get('rt_mean_ms'), 2)}; {sp.get('rt_p50_bucket') or '-'} / {sp.get('rt_p99_bucket') or '-'}"
        c["server CPU during the fill: % of a core; us / REGISTER"] = \
            f"{_f(fill.get('server_cpu_pct'))}; {_f(fill.get('server_cpu_us_per_req'))}"
        c["SIPp CPU during the fill, % of a core per process (processes)"] = \
            f"{_f(fill.get('sipp_cpu_pct_per_proc'))} ({fill.get('procs', '-')})"
        ok = sp.get("successful") or 0
        if "cpm_store_ops_total" in cnt and ok:
            c["store: ops / REGISTER; ops / commit; user lookups / REGISTER"] = (
                f"{cnt['cpm_store_ops_total'] / ok:.2f}; "
                f"{cnt['cpm_store_ops_total'] / max(cnt.get('cpm_store_batches_total', 0), 1):.1f}; "
                f"{cnt.get('cpm_user_lookups_total', 0) / ok:.2f}")
        else:
            c["store: ops / REGISTER; ops / commit; user lookups / REGISTER"] = "none (memory only)" \
                if s == "kamailio" else "-"
        c["RSS before -> after, MB (sum over processes)"] = \
            f"{_f(_mb(rss[0]) if rss else None)} -> {_f(_mb(rss[1]) if rss else None)}"
        c["**bytes / binding: RSS**"] = f"**{_f(rss[2], 0) if rss else '-'}**"
        pss_s = _f(pss[2], 0) if pss else "-"
        if shm:
            pss_s += f" (shm pool {_f(shm[2], 0)}; private {_f(priv[2], 0) if priv else '-'})"
        c["bytes / binding: PSS"] = pss_s
        if db1:
            growth = (db1.get("bytes_total", 0) - db0.get("bytes_total", 0)) / held if held else None
            c["DB files before -> after, MB; bytes / binding"] = (
                f"{_f(db0.get('bytes_total', 0) / 1048576)} -> {_f(db1.get('bytes_total', 0) / 1048576)}; "
                f"{_f(growth, 0)}")
        else:
            c["DB files before -> after, MB; bytes / binding"] = "none"

        def lat(r):
            if not r or not r.get("probe"):
                return "-"
            pr = r["probe"]
            return f"{_f(pr.get('p50_ms'), 3)} / {_f(pr.get('p99_ms'), 3)}"

        def msgs(r):
            if not r:
                return "-"
            fsp = r.get("sipp", {})
            pr = r.get("probe") or {}
            return (f"{_f(fsp.get('successful'))} / {_f(fsp.get('created'))}; "
                    f"{_f(pr.get('ok'))} / {_f(pr.get('sent'))}")

        few, full = lk.get("few"), lk.get("all")
        few_n = _f(few.get("expected")) if few else "few"
        c[f"lookup p50 / p99 ms (probe), {few_n} held"] = lat(few)
        c[f"**lookup p50 / p99 ms (probe), {_f(held)} held**"] = f"**{lat(full)}**"
        c["lookup MESSAGE 200 / sent (SIPp; probe), few held"] = msgs(few)
        c["lookup MESSAGE 200 / sent (SIPp; probe), all held"] = msgs(full)
        c["server CPU us / MESSAGE, few -> all held"] = (
            f"{_f(few.get('server_cpu_us_per_req')) if few else '-'} -> "
            f"{_f(full.get('server_cpu_us_per_req')) if full else '-'}")
        cols[s] = c
        verdict[s] = {"rate": sp.get("rate"), "bpb": rss[2] if rss else None, "held": held}
    # the lookup rows name the number held, which may differ: align them by position
    L.append("| measure | " + " | ".join(servers) + " |")
    L.append("|---|" + "---:|" * len(servers))
    keys = {s: list(cols[s].keys()) for s in servers}
    for i in range(max(len(v) for v in keys.values())):
        name = keys[servers[0]][i] if i < len(keys[servers[0]]) else ""
        L.append(f"| {name} | " + " | ".join(
            cols[s][keys[s][i]] if i < len(keys[s]) else "-" for s in servers) + " |")
    L.append("")
    # targets
    L += ["## Targets", ""]
    c, k = verdict.get("cpm"), verdict.get("kamailio")
    if c:
        ok = c["bpb"] is not None and c["bpb"] <= 2048 and (c["held"] or 0) >= a.count
        L.append(f"- cpm <= 2 KB per registration with {a.count:,} held: "
                 f"{_f(c['bpb'], 0)} bytes per binding (RSS delta / bindings held, {_f(c['held'])} held) -> "
                 f"**{'met' if ok else 'NOT met'}**")
    if c and k and c["rate"] and k["rate"]:
        L.append(f"- cpm REGISTER/s >= Kamailio's: {_f(c['rate'])}/s vs {_f(k['rate'])}/s "
                 f"({c['rate'] / k['rate']:.2f}x) -> **{'met' if c['rate'] >= k['rate'] else 'NOT met'}**")
    elif c:
        L.append("- REGISTER/s vs Kamailio: Kamailio not run (--variants)")
    L.append("")

    for s in servers:
        b = by[s]
        srv = b["server"] or {}
        L += [f"## {s}", ""]
        for n in srv.get("notes") or []:
            L.append(f"- {n}")
        if srv.get("notes"):
            L.append("")
        L += ["### REGISTER phases", "",
              "| phase | offered /s | procs | 200s | elapsed s | REGISTER/s | failed | retrans | "
              "mean rt ms | p50 / p99 bucket (ms) | server CPU % | server CPU us / REGISTER | "
              "SIPp CPU % / proc | machine CPU % |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|"]
        for r in b["fill"]:
            sp = r.get("sipp", {})
            fk = sp.get("fail_kinds") or {}
            failed = _f(sp.get("failed")) + (f" ({', '.join(f'{k}: {v}' for k, v in fk.items())})" if fk else "")
            L.append(f"| {r['label']} | {_f(r['offered_rate'])} | {r['procs']} | {_f(sp.get('successful'))} "
                     f"| {_f(sp.get('elapsed_s'))} | {_f(sp.get('rate'))} | {failed} | {_f(sp.get('retrans'))} "
                     f"| {_f(sp.get('rt_mean_ms'), 2)} | {sp.get('rt_p50_bucket') or '-'} / {sp.get('rt_p99_bucket') or '-'} "
                     f"| {_f(r.get('server_cpu_pct'))} | {_f(r.get('server_cpu_us_per_req'))} "
                     f"| {_f(r.get('sipp_cpu_pct_per_proc'))} | {_f(r.get('machine_cpu_pct'))} |")
        L.append("")
        bulk = [r for r in b["fill"] if r["label"] == "bulk"]
        if bulk and bulk[0].get("sipp", {}).get("series"):
            ser = bulk[0]["sipp"]["series"]
            # at most ~20 rows: merge windows
            step = max(1, (len(ser) + 19) // 20)
            L += ["REGISTER/s over the bulk phase (answered 200s; held = bulk 200s so far):", "",
                  "| t (s) | held (bulk) | REGISTER/s | retrans | failed |", "|---:|---:|---:|---:|---:|"]
            prev_t, prev_h = 0.0, 0
            for i in range(step - 1, len(ser) + step - 1, step):
                row = ser[min(i, len(ser) - 1)]
                chunk = ser[i - step + 1:i + 1]
                dt = row["t_s"] - prev_t
                rate = (row["held"] - prev_h) / dt if dt > 0 else 0
                L.append(f"| {row['t_s']:.0f} | {row['held']:,} | {rate:,.0f} | "
                         f"{sum(c['retrans'] for c in chunk)} | {sum(c['failed'] for c in chunk)} |")
                prev_t, prev_h = row["t_s"], row["held"]
                if i >= len(ser) - 1:
                    break
            L.append("")
            rep = bulk[0]["sipp"].get("repartition") or []
            if rep:
                L.append("REGISTER response times (SIPp repartition, ms, 4 ms clock ticks): "
                         + ", ".join(f"{lab}: {c:,}" for lab, c in rep))
                L.append("")
        L += ["### Lookup: MESSAGE to random registered users", "",
              "| held | offered /s | sent | 200s | failed | retrans | MESSAGE/s | SIPp p50 / p99 bucket (ms) "
              "| probe p50 / p90 / p99 / max ms | probe ok / sent | server CPU % | server CPU us / MESSAGE | UAS 200s |",
              "|---|---:|---:|---:|---:|---:|---:|---|---|---:|---:|---:|---:|"]
        for r in b["lookup"]:
            sp = r.get("sipp", {})
            pr = r.get("probe") or {}
            fk = sp.get("fail_kinds") or {}
            failed = _f(sp.get("failed")) + (f" ({', '.join(f'{k}: {v}' for k, v in fk.items())})" if fk else "")
            errs = pr.get("errors") or {}
            held = r.get("expected")
            L.append(f"| {r['label']} ({_f(held)}) | {_f(r['offered_rate'])} | {_f(sp.get('created'))} "
                     f"| {_f(sp.get('successful'))} | {failed} | {_f(sp.get('retrans'))} | {_f(sp.get('rate'))} "
                     f"| {sp.get('rt_p50_bucket') or '-'} / {sp.get('rt_p99_bucket') or '-'} "
                     f"| {_f(pr.get('p50_ms'), 3)} / {_f(pr.get('p90_ms'), 3)} / {_f(pr.get('p99_ms'), 3)} / {_f(pr.get('max_ms'), 3)} "
                     f"| {_f(pr.get('ok'))} / {_f(pr.get('sent'))}{(' ' + json.dumps(errs)) if errs else ''} "
                     f"| {_f(r.get('server_cpu_pct'))} | {_f(r.get('server_cpu_us_per_req'))} "
                     f"| {_f((r.get('uas') or {}).get('SuccessfulCall(C)'))} |")
        L.append("")
        mf = mem_figures(srv)
        if mf:
            L += ["### Memory (whole process tree; before = server up with 0 bindings, after = all held)", "",
                  "| measure | before MB | after MB | delta MB | bytes / binding |", "|---|---:|---:|---:|---:|"]
            names = {"vmrss_kb": "VmRSS (sum over processes)", "pss_kb": "Pss (sum; shared pages split)",
                     "private_kb": "Private_Clean + Private_Dirty (sum)", "pss_anon_kb": "Pss_Anon",
                     "pss_shmem_kb": "Pss_Shmem (Kamailio's shm pool)",
                     "shm_real_used_kb": "Kamailio shm real_used (core.shmmem)"}
            for k, (v0, v1, bpb) in mf.items():
                L.append(f"| {names.get(k, k)} | {_f(_mb(v0))} | {_f(_mb(v1))} | {_f(_mb(v1 - v0))} | {_f(bpb, 0)} |")
            m1 = srv.get("mem1") or {}
            L.append("")
            L.append(f"Processes: {m1.get('nproc')}.")
            L.append("")
        db0, db1 = srv.get("db0"), srv.get("db1")
        if db1:
            L += ["### Store (cpm.db)", "",
                  "| when | cpm.db MB | -wal MB | users | bindings | tables (MB) |", "|---|---:|---:|---:|---:|---|"]
            for name, d in (("before (accounts provisioned)", db0 or {}), ("after (all held)", db1)):
                tb = d.get("table_bytes") or {}
                tbs = ", ".join(f"{n} {b / 1048576:.1f}" for n, b in sorted(tb.items(), key=lambda x: -x[1])[:5])
                L.append(f"| {name} | {_f(d.get('bytes', 0) / 1048576)} | {_f(d.get('bytes_wal', 0) / 1048576)} "
                         f"| {_f(d.get('users'))} | {_f(d.get('bindings'))} | {tbs or '-'} |")
            if db0 and db1 and db1.get("bindings"):
                L.append("")
                L.append(f"Store growth per binding: {(db1['bytes_total'] - db0.get('bytes_total', 0)) / db1['bindings']:.0f} bytes "
                         f"(cpm.db + -wal + -shm, after / before the registrations).")
            L.append("")
        held = srv.get("held") or {}
        if held:
            L.append("Server counters at the end: " + ", ".join(f"`{k}` {v}" for k, v in held.items() if k != "held"))
            L.append("")
    L += ["## Raw data", "", f"- work directory: `{a.work}`", ""]
    text = "\n".join(L) + "\n"
    if a.md:
        with open(a.md, "w") as f:
            f.write(text)
    sys.stdout.write(text)
    return 0


# --------------------------------------------------------------------------- main
def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sp = ap.add_subparsers(dest="cmd", required=True)
    p = sp.add_parser("provision")
    p.add_argument("db")
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--first", type=int, default=1)
    p.add_argument("--prefix", default="u")
    p.add_argument("--domain", default="localhost")
    p.add_argument("--realm", default="")
    p.add_argument("--password", default="regbench")
    p.set_defaults(f=cmd_provision)
    p = sp.add_parser("sample")
    p.add_argument("--first", type=int, required=True)
    p.add_argument("--last", type=int, required=True)
    p.add_argument("--k", type=int, required=True)
    p.add_argument("--prefix", default="u")
    p.add_argument("--domain", default="localhost")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", required=True)
    p.set_defaults(f=cmd_sample)
    p = sp.add_parser("mem")
    p.add_argument("pid", type=int)
    p.add_argument("--kam-ctl", default="")
    p.set_defaults(f=cmd_mem)
    p = sp.add_parser("sippstat")
    p.add_argument("csv", nargs="+")
    p.add_argument("--window", type=float, default=10.0)
    p.set_defaults(f=cmd_sippstat)
    p = sp.add_parser("probe")
    p.add_argument("--server", required=True)
    p.add_argument("--users", required=True, help="the SIPp CSV of sampled users")
    p.add_argument("--domain", default="localhost")
    p.add_argument("--rate", type=float, default=100.0)
    p.add_argument("--duration", type=float, required=True)
    p.add_argument("--timeout", type=float, default=2.0)
    p.add_argument("--seed", type=int, default=2)
    p.add_argument("--port", type=int, default=0, help="local UDP port (0: any)")
    p.add_argument("--out", required=True)
    p.set_defaults(f=cmd_probe)
    p = sp.add_parser("dbinfo")
    p.add_argument("datadir")
    p.set_defaults(f=cmd_dbinfo)
    p = sp.add_parser("cpm-held")
    p.add_argument("url")
    p.set_defaults(f=cmd_cpm_held)
    p = sp.add_parser("kam-held")
    p.add_argument("ctl")
    p.set_defaults(f=cmd_kam_held)
    p = sp.add_parser("phase")
    p.add_argument("--kind", choices=["fill", "lookup"], required=True)
    p.add_argument("--server", required=True)
    p.add_argument("--label", required=True)
    p.add_argument("--rate", type=int, default=0)
    p.add_argument("--procs", type=int, default=1)
    p.add_argument("--expected", type=int, default=0)
    p.add_argument("--csv", nargs="*", default=[])
    p.add_argument("--window", type=float, default=10.0)
    p.add_argument("--window-sipp", type=int, default=0, help="SIPp -l per process")
    for k in ("snap0", "snap1", "times0", "times1", "probe", "uas0", "uas1", "held0", "held", "load"):
        p.add_argument("--" + k, default="")
    p.add_argument("--out", required=True)
    p.set_defaults(f=cmd_phase)
    p = sp.add_parser("server")
    p.add_argument("--server", required=True)
    p.add_argument("--count", type=int, default=0)
    for k in ("mem0", "mem1", "mem2", "db0", "db1", "held", "held2"):
        p.add_argument("--" + k, default="")
    p.add_argument("--note", action="append", default=[])
    p.add_argument("--out", required=True)
    p.set_defaults(f=cmd_server)
    p = sp.add_parser("report")
    p.add_argument("--results", required=True)
    p.add_argument("--md", default="")
    p.add_argument("--date", required=True)
    p.add_argument("--count", type=int, default=1000000)
    p.add_argument("--work", default="")
    p.add_argument("--header", action="append", default=[])
    p.set_defaults(f=cmd_report)
    a = ap.parse_args()
    return a.f(a)


if __name__ == "__main__":
    sys.exit(main())
