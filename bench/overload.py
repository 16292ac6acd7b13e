#!/usr/bin/env python3
"""Helpers for bench/overload.sh (python3 standard library only; reuses bench/sipbench.py).

Subcommands:
  sample PID OUT       JSON lines {t, rss_kb, pss_kb} of PID and its descendants every second,
                       until PID exits (VmRSS and PSS summed over the process tree)
  phase ...            one JSON record of a phase from its SIPp files (per-second rows too)
  brief                a one-line summary of the record read on stdin
  report ...           the Markdown report and the SVG plot
"""

import argparse
import glob
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sipbench  # noqa: E402  (snapshot, read_rtt, pct, metrics_delta, _epoch, _int)


# --------------------------------------------------------------------------- sample
def cmd_sample(a):
    with open(a.out, "a") as f:
        while True:
            try:
                os.kill(a.pid, 0)
            except OSError:
                return 0
            s = sipbench.snapshot(a.pid)
            f.write(json.dumps({"t": s["t"], "rss_kb": s["rss_kb"], "pss_kb": s["pss_kb"]}) + "\n")
            f.flush()
            time.sleep(a.interval)


# --------------------------------------------------------------------------- phase
def stat_rows(path):
    """Every data row of a SIPp -trace_stat CSV as a dict."""
    try:
        with open(path, encoding="latin-1") as f:
            lines = [l.rstrip("\r\n") for l in f if l.strip()]
    except OSError:
        return []
    if len(lines) < 2:
        return []
    head = lines[0].split(";")
    return [dict(zip(head, l.split(";"))) for l in lines[1:]]


# Failure counters of SIPp 3.6.1 that mean "no final answer in time".
TIMEOUTS = ("FailedTimeoutOnRecv", "FailedMaxUDPRetrans")


def cmd_phase(a):
    rows = stat_rows(os.path.join(a.dir, "uac.csv"))
    i = sipbench._int
    last = rows[-1] if rows else {}
    per_second = []
    for r in rows:
        try:
            t = sipbench._epoch(r["CurrentTime"])
        except (KeyError, ValueError, IndexError):
            continue
        fail = i(r, "FailedCall(P)")
        rej = i(r, "FailedCallRejected(P)")
        tmo = sum(i(r, k + "(P)") for k in TIMEOUTS)
        per_second.append({"t": t, "sent": i(r, "OutgoingCall(P)"), "ok": i(r, "SuccessfulCall(P)"),
                           "rejected": rej, "timeouts": tmo, "other": fail - rej - tmo,
                           "retrans": i(r, "Retransmissions(P)")})
    rtt_files = sorted(glob.glob(os.path.join(a.dir, "*_rtt.csv")))
    rtt = sipbench.read_rtt(rtt_files[0]) if rtt_files else []
    m0, m1 = json.loads(a.metrics0 or "{}"), json.loads(a.metrics1 or "{}")
    fail = i(last, "FailedCall(C)")
    rej = i(last, "FailedCallRejected(C)")
    tmo = sum(i(last, k + "(C)") for k in TIMEOUTS)
    rec = {
        "server": a.server, "phase": a.name, "rate": a.rate, "secs": a.secs,
        "t0": a.t0, "t1": a.t1,
        "sent": i(last, "OutgoingCall(C)"), "ok": i(last, "SuccessfulCall(C)"),
        "rejected": rej, "timeouts": tmo, "other": fail - rej - tmo,
        "retrans": i(last, "Retransmissions(C)"),
        "p50_ms": sipbench.pct(rtt, 0.50), "p99_ms": sipbench.pct(rtt, 0.99),
        "rtt_n": len(rtt),
        "metrics": overload_metrics(m0, m1),
        "per_second": per_second,
    }
    with open(a.out, "a") as f:
        f.write(json.dumps(rec) + "\n")
    return 0


def overload_metrics(m0, m1):
    """cpm's overload counters over the phase (increase), its gauges at the end."""
    if not m0 or not m1:
        return {}
    out = {k: m1.get(k, 0) - m0.get(k, 0) for k in
           ("cpm_overload_refused_total", "cpm_overload_periods_total")}
    for k in ("cpm_sip_transactions", "cpm_store_in_flight", "cpm_store_queue_depth"):
        if k in m1:
            out[k + " (end)"] = m1[k]
    return out


def goodput(r):
    return r["ok"] / r["secs"]


def offered(r):
    return r["sent"] / r["secs"]


def cmd_brief(_a):
    r = json.loads(sys.stdin.readline())
    print(f"offered {offered(r):.0f}/s, 2xx {goodput(r):.0f}/s, 503 {r['rejected']}, "
          f"timeouts {r['timeouts']}, other failures {r['other']}, retransmissions {r['retrans']}, "
          f"2xx p50/p99 {fmt_ms(r['p50_ms'])}/{fmt_ms(r['p99_ms'])} ms")
    return 0


# --------------------------------------------------------------------------- report
def fmt_ms(v):
    return "-" if v is None else f"{v:.0f}" if v >= 10 else f"{v:.1f}"


def memory(work, server):
    out = []
    try:
        with open(os.path.join(work, server, "memory.jsonl")) as f:
            for line in f:
                try:
                    out.append(json.loads(line))
                except ValueError:
                    pass
    except OSError:
        pass
    return out


def mem_kb(samples, server):
    # cpm: one process, VmRSS. Kamailio: PSS of all its processes (its shared memory segment
    # is mapped by every child; RSS would count it once per process).
    return [(s["t"], s["pss_kb"] if server == "kamailio" else s["rss_kb"]) for s in samples]


def clean_after(r, rate):
    """Seconds from the start of the phase until every later second is clean: no 503, no
    timeout or other failure, no retransmission, and 2xx >= 90 % of the offered rate (the
    last, partial, row of SIPp's stats excepted). None if it never is."""
    rows = r["per_second"]
    if len(rows) < 3:
        return None
    body = rows[1:-1]  # row 0 is SIPp's start (all zero), the last is partial
    start = r["t0"]
    ok_from = None
    for row in body:
        clean = (row["rejected"] == 0 and row["timeouts"] == 0 and row["other"] == 0
                 and row["retrans"] == 0 and row["ok"] >= 0.9 * rate)
        if clean and ok_from is None:
            ok_from = row["t"] - 1.0  # the row covers the second before its time
        elif not clean:
            ok_from = None
    return None if ok_from is None else max(0.0, ok_from - start)


def cmd_report(a):
    recs = []
    with open(a.phases) as f:
        for line in f:
            if line.strip():
                recs.append(json.loads(line))
    servers = []
    for r in recs:
        if r["server"] not in servers:
            servers.append(r["server"])
    R = a.clean_rate
    lines = [f"# Overload benchmark, {a.date}", ""]
    lines += a.header
    lines += ["", f"R = {R}/s (the clean rate of cpm's full durable path, bench/pager.sh). "
              "Goodput = 2xx/s over the phase; the target is >= 90 % of R "
              f"({0.9 * R:.0f}/s) under 2R and 4R and at a cold start.", ""]
    lines += ["| server | phase | offered /s | sent /s | 2xx /s | % of R | 503 | timeouts | "
              "other failures | retrans. | 2xx p50 / p99 ms | memory max MB | clean after |",
              "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for s in servers:
        mem = mem_kb(memory(a.work, s), s)
        for r in (x for x in recs if x["server"] == s):
            m = [kb for t, kb in mem if r["t0"] - 0.5 <= t <= r["t1"] + 0.5]
            ca = clean_after(r, r["rate"]) if r["phase"] in ("recovery", "cold") else None
            ca_s = ("-" if r["phase"] not in ("recovery", "cold")
                    else "never" if ca is None else f"{ca:.0f} s")
            lines.append(
                f"| {s} | {r['phase']} | {r['rate']} | {offered(r):.0f} | {goodput(r):.0f} | "
                f"{100 * goodput(r) / R:.0f} % | {r['rejected']} | {r['timeouts']} | {r['other']} | "
                f"{r['retrans']} | {fmt_ms(r['p50_ms'])} / {fmt_ms(r['p99_ms'])} | "
                f"{(max(m) / 1024 if m else 0):.0f} | {ca_s} |")
    cpm_lines = []
    for r in (x for x in recs if x["server"] == "cpm"):
        md = r.get("metrics") or {}
        if md:
            cpm_lines.append(f"- cpm {r['phase']}: " + ", ".join(
                f"`{k}` {'' if '(end)' in k else '+'}{v:.0f}" for k, v in md.items()))
    if cpm_lines:
        lines += ["", "cpm's own counters per phase (/metrics):", ""] + cpm_lines
    lines += ["", f"Plot: `{os.path.basename(a.svg)}` (goodput against offered load; goodput "
              "and 503/s over time).", ""]
    svg(recs, servers, R, a.svg)
    text = "\n".join(lines) + "\n"
    with open(a.md, "w") as f:
        f.write(text)
    sys.stdout.write(text)
    return 0


COLORS = {"cpm": "#1f5fbf", "kamailio": "#d9731a"}


def svg(recs, servers, R, path):
    W, H = 1000, 420
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" '
           f'font-family="sans-serif" font-size="12">',
           f'<rect width="{W}" height="{H}" fill="white"/>']

    def axes(x0, y0, w, h, xmax, ymax, xlabel, ylabel, title):
        out.append(f'<text x="{x0 + w / 2}" y="{y0 - 12}" text-anchor="middle" '
                   f'font-weight="bold">{title}</text>')
        out.append(f'<line x1="{x0}" y1="{y0 + h}" x2="{x0 + w}" y2="{y0 + h}" stroke="black"/>')
        out.append(f'<line x1="{x0}" y1="{y0}" x2="{x0}" y2="{y0 + h}" stroke="black"/>')
        for k in range(6):
            xv, yv = xmax * k / 5, ymax * k / 5
            px, py = x0 + w * k / 5, y0 + h - h * k / 5
            out.append(f'<text x="{px}" y="{y0 + h + 15}" text-anchor="middle">{xv:.0f}</text>')
            out.append(f'<text x="{x0 - 5}" y="{py + 4}" text-anchor="end">{yv:.0f}</text>')
            out.append(f'<line x1="{x0}" y1="{py}" x2="{x0 + w}" y2="{py}" stroke="#ddd"/>')
        out.append(f'<text x="{x0 + w / 2}" y="{y0 + h + 32}" text-anchor="middle">{xlabel}</text>')
        out.append(f'<text x="{x0 - 45}" y="{y0 + h / 2}" text-anchor="middle" '
                   f'transform="rotate(-90 {x0 - 45} {y0 + h / 2})">{ylabel}</text>')

    # Left: goodput against offered load (sent/s), the ramp's phases.
    x0, y0, w, h = 70, 40, 380, 300
    ramp = [r for r in recs if r["phase"] in ("1x", "2x", "4x", "recovery")]
    xmax = max([offered(r) for r in ramp] + [4 * R]) * 1.05
    ymax = max([goodput(r) for r in recs] + [R]) * 1.15
    axes(x0, y0, w, h, xmax, ymax, "offered (MESSAGE/s sent)", "goodput (2xx/s)",
         "Goodput against offered load")

    def X(v):
        return x0 + w * v / xmax

    def Y(v):
        return y0 + h - h * v / ymax
    out.append(f'<line x1="{X(0)}" y1="{Y(0)}" x2="{X(min(xmax, ymax))}" y2="{Y(min(xmax, ymax))}" '
               f'stroke="#999" stroke-dasharray="4 3"/>')
    out.append(f'<line x1="{X(0)}" y1="{Y(0.9 * R)}" x2="{X(xmax)}" y2="{Y(0.9 * R)}" '
               f'stroke="#2a2" stroke-dasharray="6 3"/>')
    out.append(f'<text x="{X(xmax) - 4}" y="{Y(0.9 * R) - 4}" text-anchor="end" fill="#2a2">'
               f'90 % of R = {0.9 * R:.0f}/s</text>')
    for s in servers:
        pts = sorted((offered(r), goodput(r), r["phase"]) for r in ramp if r["server"] == s)
        c = COLORS.get(s, "black")
        if pts:
            out.append('<polyline fill="none" stroke="%s" stroke-width="2" points="%s"/>'
                       % (c, " ".join(f"{X(p[0]):.1f},{Y(p[1]):.1f}" for p in pts)))
        for ox, gy, ph in pts:
            out.append(f'<circle cx="{X(ox):.1f}" cy="{Y(gy):.1f}" r="4" fill="{c}"/>')
            out.append(f'<text x="{X(ox) + 6:.1f}" y="{Y(gy) - 6:.1f}" fill="{c}">{ph}</text>')
        for r in recs:
            if r["server"] == s and r["phase"] == "cold":
                out.append(f'<rect x="{X(offered(r)) - 4:.1f}" y="{Y(goodput(r)) - 4:.1f}" '
                           f'width="8" height="8" fill="none" stroke="{c}" stroke-width="2"/>')
    # Right: goodput and 503/s over time, the ramp (1x start = 0).
    x0b = 560
    tl = {}
    for s in servers:
        rs = [r for r in ramp if r["server"] == s]
        if not rs:
            continue
        start = min(r["t0"] for r in rs)
        pts = []
        for r in rs:
            for row in r["per_second"]:
                pts.append((row["t"] - start, row["ok"], row["rejected"]))
        tl[s] = sorted(pts)
    tmax = max([p[0] for v in tl.values() for p in v] + [1]) * 1.02
    ymax2 = max([max(p[1], p[2]) for v in tl.values() for p in v] + [R]) * 1.1
    axes(x0b, y0, w, h, tmax, ymax2, "seconds (phases 1x, 2x, 4x, recovery)", "per second",
         "2xx/s (solid) and 503/s (dashed) over time")

    def X2(v):
        return x0b + w * v / tmax

    def Y2(v):
        return y0 + h - h * v / ymax2
    for s, pts in tl.items():
        c = COLORS.get(s, "black")
        out.append('<polyline fill="none" stroke="%s" stroke-width="2" points="%s"/>'
                   % (c, " ".join(f"{X2(t):.1f},{Y2(ok):.1f}" for t, ok, _ in pts)))
        out.append('<polyline fill="none" stroke="%s" stroke-width="1.5" stroke-dasharray="5 3" '
                   'points="%s"/>' % (c, " ".join(f"{X2(t):.1f},{Y2(rj):.1f}" for t, _, rj in pts)))
    # Legend.
    ly = H - 30
    lx = 70
    for s in servers:
        c = COLORS.get(s, "black")
        out.append(f'<line x1="{lx}" y1="{ly}" x2="{lx + 25}" y2="{ly}" stroke="{c}" stroke-width="3"/>')
        out.append(f'<text x="{lx + 30}" y="{ly + 4}">{s}</text>')
        lx += 120
    out.append(f'<text x="{lx}" y="{ly + 4}">points: phases of the ramp; square: cold start at R; '
               f'grey dashes: goodput = offered</text>')
    out.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sp = ap.add_subparsers(dest="cmd", required=True)
    p = sp.add_parser("sample")
    p.add_argument("pid", type=int)
    p.add_argument("out")
    p.add_argument("--interval", type=float, default=1.0)
    p.set_defaults(f=cmd_sample)
    p = sp.add_parser("phase")
    for k in ("server", "name", "dir", "metrics0", "metrics1", "out"):
        p.add_argument("--" + k, required=k not in ("metrics0", "metrics1"), default="")
    p.add_argument("--rate", type=int, required=True)
    p.add_argument("--secs", type=float, required=True)
    p.add_argument("--t0", type=float, required=True)
    p.add_argument("--t1", type=float, required=True)
    p.set_defaults(f=cmd_phase)
    p = sp.add_parser("brief")
    p.set_defaults(f=cmd_brief)
    p = sp.add_parser("report")
    p.add_argument("--phases", required=True)
    p.add_argument("--work", required=True)
    p.add_argument("--clean-rate", type=int, required=True)
    p.add_argument("--md", required=True)
    p.add_argument("--svg", required=True)
    p.add_argument("--date", default="")
    p.add_argument("--header", action="append", default=[])
    p.set_defaults(f=cmd_report)
    a = ap.parse_args()
    return a.f(a)


if __name__ == "__main__":
    sys.exit(main())
