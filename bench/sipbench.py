#!/usr/bin/env python3
"""Helpers for bench/sip-core.sh (python3 standard library only).

Subcommands:
  freeport [--tcp]          print a port free on 127.0.0.1 for UDP (and TCP with --tcp)
  procsnap PID              JSON snapshot of PID and all its descendants: CPU ticks, VmRSS, Pss
  uasnap STATCSV            JSON: cumulative counters of the last line of a SIPp -trace_stat CSV
  probe ...                 low-rate latency probe with microsecond resolution (see below)
  step ...                  turn one ramp step's files into a JSON record (+ clean verdict)
  report ...                print the Markdown tables from the JSON records
  metrics URL               JSON of the cpm_* values of a Prometheus /metrics page (pager bench)
  history DBFILE            JSON: rows of cpm's message history by direction and state (pager bench)
  pager-report ...          the Markdown report of bench/pager.sh

Why a probe: SIPp 3.6.1 (Debian's sip-tester) takes response-time timestamps with
CLOCK_MONOTONIC_COARSE, i.e. in kernel ticks (4 ms with CONFIG_HZ=250), so its -trace_rtt values
and ResponseTimeRepartition buckets are multiples of a tick: sub-millisecond latencies read 0.
The probe sends its own transactions (MESSAGE, or INVITE/ACK/BYE) through the server under test
to the same SIPp UAS while SIPp applies the load, one at a time at a fixed low rate, and measures
from just before sendto() to the kernel receive timestamp (SO_TIMESTAMPNS) of the final response.
"""

import argparse
import json
import os
import random
import select
import socket
import struct
import sys
import time

SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)  # Linux value (asm-generic)


# --------------------------------------------------------------------------- freeport
def cmd_freeport(a):
    for _ in range(50):
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        u.bind(("127.0.0.1", 0))
        port = u.getsockname()[1]
        if a.tcp:
            t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                t.bind(("127.0.0.1", port))
            except OSError:
                u.close()
                t.close()
                continue
            t.close()
        u.close()
        print(port)
        return 0
    print("no free port found", file=sys.stderr)
    return 1


# --------------------------------------------------------------------------- procsnap
def _children_map():
    kids = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                s = f.read()
        except OSError:
            continue
        rest = s[s.rindex(")") + 2:].split()
        kids.setdefault(int(rest[1]), []).append(int(d))
    return kids


def _tree(pid):
    kids = _children_map()
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, []))
    return out


def snapshot(pid):
    ticks = rss = pss = n = 0
    for p in _tree(pid):
        try:
            with open(f"/proc/{p}/stat") as f:
                s = f.read()
            rest = s[s.rindex(")") + 2:].split()
            # fields 14 and 15 of stat (utime, stime); rest[0] is field 3 (state)
            ticks += int(rest[11]) + int(rest[12])
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        rss += int(line.split()[1])
            try:
                with open(f"/proc/{p}/smaps_rollup") as f:
                    for line in f:
                        if line.startswith("Pss:"):
                            pss += int(line.split()[1])
            except OSError:
                pass
            n += 1
        except (OSError, ValueError, IndexError):
            continue
    return {"t": time.time(), "ticks": ticks, "hz": os.sysconf("SC_CLK_TCK"),
            "rss_kb": rss, "pss_kb": pss, "nproc": n, "udp": udp_counters(),
            "cpu_all": cpu_all(), "psi_cpu_us": psi_cpu()}


def psi_cpu():
    """`some` total of /proc/pressure/cpu: microseconds in which a runnable task waited."""
    try:
        with open("/proc/pressure/cpu") as f:
            for line in f:
                if line.startswith("some "):
                    return int(line.rsplit("total=", 1)[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def cpu_all():
    """CPU time of every process on the machine, in clock ticks: utime + stime + cutime + cstime
    summed over /proc/PID/stat. The difference of two sums is the CPU used in between, exited
    processes included (their time moves to the parent that reaps them). Not /proc/stat: with
    tick accounting (HZ=250) and NO_HZ idle its busy jiffies miss short wake-ups, while a
    process's utime/stime are scaled to its precise run time."""
    tot = 0
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                st = f.read()
            rest = st[st.rindex(")") + 2:].split()
            tot += int(rest[11]) + int(rest[12]) + int(rest[13]) + int(rest[14])
        except (OSError, ValueError, IndexError):
            continue
    return tot


def udp_counters():
    """System-wide (network namespace) UDP counters from /proc/net/snmp."""
    try:
        with open("/proc/net/snmp") as f:
            rows = [l.split() for l in f if l.startswith("Udp:")]
        return {k: int(v) for k, v in zip(rows[0][1:], rows[1][1:])}
    except (OSError, IndexError, ValueError):
        return {}


def udp_socket_stats(ports):
    """{role: {"drops": n, "sockets": k}} for 127.0.0.1 UDP sockets bound to the given ports
    (summed over sockets sharing a port, e.g. SO_REUSEPORT), from /proc/net/udp."""
    want = {int(p): r for r, p in ports.items()}
    out = {r: {"drops": 0, "sockets": 0} for r in ports}
    try:
        with open("/proc/net/udp") as f:
            next(f)
            for line in f:
                parts = line.split()
                port = int(parts[1].split(":")[1], 16)
                if port in want:
                    o = out[want[port]]
                    o["drops"] += int(parts[-1])
                    o["sockets"] += 1
    except (OSError, ValueError, IndexError):
        pass
    return out


def udp_rcvbuf(port):
    """SO_RCVBUF (bytes, as the kernel reports it) of the UDP sockets on port, via `ss`."""
    import re
    import subprocess
    try:
        txt = subprocess.run(["ss", "-uamnH", f"sport = :{port}"], capture_output=True, text=True,
                             timeout=5).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [int(m) for m in re.findall(r"\brb(\d+)", txt)]


def cmd_procsnap(a):
    snap = snapshot(a.pid)
    if a.ports:
        ports = dict(kv.split("=", 1) for kv in a.ports.split(","))
        snap["socks"] = udp_socket_stats(ports)
        if a.rcvbuf and "server" in ports:
            snap["server_rcvbuf"] = udp_rcvbuf(ports["server"])
    print(json.dumps(snap))
    return 0


# --------------------------------------------------------------------------- SIPp stat CSV
def read_stat_last(path):
    """Header and last data line of a SIPp -trace_stat CSV as a dict (None if unusable)."""
    try:
        with open(path, encoding="latin-1") as f:
            lines = [l.rstrip("\r\n") for l in f if l.strip()]
    except OSError:
        return None
    if len(lines) < 2:
        return None
    head = lines[0].split(";")
    last = lines[-1].split(";")
    return dict(zip(head, last))


def _epoch(v):
    # "2026-11-25<TAB>14:47:51.654946<TAB>1795618071.654946"
    return float(v.split("\t")[-1])


def _int(d, k):
    try:
        return int(d.get(k, "0") or 0)
    except ValueError:
        return 0


def cmd_uasnap(a):
    d = read_stat_last(a.csv) or {}
    keys = ["IncomingCall(C)", "SuccessfulCall(C)", "FailedCall(C)", "Retransmissions(C)",
            "DeadCallMsgs(C)", "OutOfCallMsgs(C)"]
    print(json.dumps({k: _int(d, k) for k in keys}))
    return 0


def parse_screen(path):
    """Per-message rows of the last SIPp scenario screen in a captured stdout:
    [{"dir": "in"|"out", "msg": "INVITE", "count": n, "retrans": n, "unexpected": n}]."""
    try:
        with open(path, encoding="latin-1") as f:
            text = f.read().replace("\r", "\n")
    except OSError:
        return []
    i = text.rfind("Messages  Retrans")
    if i < 0:
        return []
    rows = []
    for line in text[i:].split("\n")[1:]:
        line = line.strip()
        if not line:
            continue
        if line.startswith("-----") and ("Screen" in line or "Terminated" in line):
            break
        parts = line.split()
        if parts[0] not in ("---------->", "<----------") or len(parts) < 3:
            continue
        nums = [int(x) for x in parts[2:] if x.isdigit()]
        row = {"dir": "in" if parts[0] == "---------->" else "out", "msg": parts[1],
               "count": nums[0] if nums else 0}
        if len(nums) > 1:
            row["retrans"] = nums[1]
        if len(nums) > 3:
            row["unexpected"] = nums[3]
        rows.append(row)
    return rows


def cmd_uasdone(a):
    """Append a record with the UAS's final per-message counts (whole ramp, probe included)."""
    rec = {"type": "uas_total", "server": a.server, "scenario": a.scenario,
           "screen": parse_screen(a.screen)}
    last = read_stat_last(a.csv) or {}
    rec["dead_call_msgs"] = _int(last, "DeadCallMsgs(C)")
    rec["failed"] = _int(last, "FailedCall(C)")
    if a.counters:
        rec["server_counters"] = a.counters
    with open(a.out, "a") as f:
        f.write(json.dumps(rec) + "\n")
    return 0


# --------------------------------------------------------------------------- probe
class Probe:
    def __init__(self, server, user_from, user_to, domain, port=0):
        self.server = server
        self.frm, self.to, self.domain = user_from, user_to, domain
        self.s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        # a fixed port for the pager probe: cpm takes its MESSAGEs as alice's because alice
        # registered from that address (a registered flow, no digest per request)
        self.s.bind(("127.0.0.1", port))
        self.s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        self.s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        self.lport = self.s.getsockname()[1]
        self.tag = "%08x" % random.getrandbits(32)
        self.n = 0
        self.record_routed = 0  # 200s to INVITE that carried Record-Route

    def _branch(self):
        return "z9hG4bK-probe-%x-%d" % (random.getrandbits(40), self.n)

    def _send(self, text):
        data = text.encode()
        t0 = time.time_ns()
        self.s.sendto(data, self.server)
        return t0

    def _recv(self, callid, cseq_method, deadline):
        """Next response of this call and method: (status, headers, kernel rx time ns)."""
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            r, _, _ = select.select([self.s], [], [], left)
            if not r:
                return None
            data, anc, _, _ = self.s.recvmsg(65535, socket.CMSG_SPACE(16))
            trx = None
            for lvl, typ, cd in anc:
                if lvl == socket.SOL_SOCKET and typ == SO_TIMESTAMPNS and len(cd) >= 16:
                    sec, nsec = struct.unpack("qq", cd[:16])
                    trx = sec * 1_000_000_000 + nsec
            if trx is None:
                trx = time.time_ns()
            text = data.decode("latin-1")
            head = text.split("\r\n\r\n", 1)[0].split("\r\n")
            if not head[0].startswith("SIP/2.0 "):
                continue  # a request (should not happen)
            hdrs = {}
            for line in head[1:]:
                if ":" in line:
                    k, v = line.split(":", 1)
                    hdrs.setdefault(k.strip().lower(), []).append(v.strip())
            cid = (hdrs.get("call-id") or hdrs.get("i") or [""])[0]
            cseq = (hdrs.get("cseq") or [""])[0]
            if cid != callid or not cseq.endswith(cseq_method):
                continue  # late answer of an earlier transaction
            status = int(head[0].split()[1])
            if status < 200:
                continue
            return status, hdrs, trx

    def _req(self, method, ruri, callid, cseq, to_tag="", routes=(), body="", ctype="",
             extra=()):
        self.n += 1
        lines = [
            f"{method} {ruri} SIP/2.0",
            f"Via: SIP/2.0/UDP 127.0.0.1:{self.lport};branch={self._branch()};rport",
        ]
        lines += [f"Route: {r}" for r in routes]
        lines += [
            "Max-Forwards: 70",
            f"From: <sip:{self.frm}@{self.domain}>;tag={self.tag}",
            f"To: <sip:{self.to}@{self.domain}>" + (f";tag={to_tag}" if to_tag else ""),
            f"Call-ID: {callid}",
            f"CSeq: {cseq} {method}",
            f"Contact: <sip:{self.frm}@127.0.0.1:{self.lport}>",
        ]
        lines += list(extra)
        if body:
            lines.append(f"Content-Type: {ctype}")
        lines.append(f"Content-Length: {len(body.encode()) if body else 0}")
        return "\r\n".join(lines) + "\r\n\r\n" + body

    def message(self, timeout):
        callid = "probe-%x-%d@127.0.0.1" % (random.getrandbits(32), self.n)
        ruri = f"sip:{self.to}@{self.domain}"
        t0 = self._send(self._req("MESSAGE", ruri, callid, 1, body="latency probe",
                                  ctype="text/plain"))
        r = self._recv(callid, "MESSAGE", time.monotonic() + timeout)
        if r is None or r[0] != 200:
            return None, (r[0] if r else "timeout")
        return (r[2] - t0) / 1e6, None

    def pager(self, timeout):
        """A CPM pager-mode MESSAGE (same headers and body shape as bench/sipp/uac_pager.xml)."""
        n = self.n
        callid = "probe-%x-%d@127.0.0.1" % (random.getrandbits(32), n)
        uniq = "%08x-%d" % (random.getrandbits(32), n)
        ruri = f"sip:{self.to}@{self.domain}"
        me, you = f"sip:{self.frm}@{self.domain}", f"sip:{self.to}@{self.domain}"
        text = "latency probe"
        cpim = (f"From: <{me}>\r\nTo: <{you}>\r\nDateTime: 2026-11-25T12:00:00Z\r\n"
                f"NS: imdn <urn:ietf:params:imdn>\r\nimdn.Message-ID: probe-{uniq}\r\n"
                f"imdn.Disposition-Notification: positive-delivery\r\n\r\n"
                f"Content-Type: text/plain; charset=utf-8\r\nContent-Length: {len(text)}\r\n\r\n{text}")
        extra = (
            f"P-Asserted-Identity: <{me}>",
            "P-Preferred-Service: urn:urn-7:3gpp-service.ims.icsi.oma.cpm.msg",
            'Accept-Contact: *;+g.3gpp.icsi-ref="urn%3Aurn-7%3A3gpp-service.ims.icsi.oma.cpm.msg"',
            f"Conversation-ID: 9c0be000-{uniq}",
            f"Contribution-ID: 9c1be000-{uniq}",
        )
        t0 = self._send(self._req("MESSAGE", ruri, callid, 1, body=cpim, ctype="message/cpim",
                                  extra=extra))
        r = self._recv(callid, "MESSAGE", time.monotonic() + timeout)
        if r is None or r[0] != 200:
            return None, (r[0] if r else "timeout")
        return (r[2] - t0) / 1e6, None

    def call(self, timeout):
        """INVITE -> 200 (measured), ACK and BYE along the Record-Route set, BYE -> 200."""
        callid = "probe-%x-%d@127.0.0.1" % (random.getrandbits(32), self.n)
        ruri = f"sip:{self.to}@{self.domain}"
        sdp = ("v=0\r\no=probe 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
               "m=audio 9 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n")
        t0 = self._send(self._req("INVITE", ruri, callid, 1, body=sdp, ctype="application/sdp"))
        r = self._recv(callid, "INVITE", time.monotonic() + timeout)
        if r is None:
            return None, "timeout"
        status, hdrs, trx = r
        to = (hdrs.get("to") or hdrs.get("t") or [""])[0]
        to_tag = to.split("tag=", 1)[1].split(";")[0] if "tag=" in to else ""
        if status != 200:
            # non-2xx: the ACK is hop-by-hop, same branch; skip it, the server retransmits a bit
            return None, status
        rr = []
        for v in hdrs.get("record-route", []):
            rr += [x.strip() for x in v.split(",") if x.strip()]
        routes = list(reversed(rr))
        self.record_routed += bool(rr)
        contact = (hdrs.get("contact") or hdrs.get("m") or [""])[0]
        target = contact[contact.find("<") + 1:contact.find(">")] if "<" in contact else contact
        self._send(self._req("ACK", target, callid, 1, to_tag=to_tag, routes=routes))
        tb = self._send(self._req("BYE", target, callid, 2, to_tag=to_tag, routes=routes))
        rb = self._recv(callid, "BYE", time.monotonic() + timeout)
        if rb is None or rb[0] != 200:
            return (trx - t0) / 1e6, "bye:" + (str(rb[0]) if rb else "timeout")
        return (trx - t0) / 1e6, None


def cmd_probe(a):
    host, port = a.server.rsplit(":", 1)
    p = Probe((host, int(port)), a.user_from, a.user_to, a.domain, a.port)
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
        if a.kind == "message":
            ms, err = p.message(a.timeout)
        elif a.kind == "pager":
            ms, err = p.pager(a.timeout)
        else:
            ms, err = p.call(a.timeout)
        if ms is not None and (err is None or a.kind == "call"):
            samples.append(round(ms, 4))
        if err is not None:
            errors[str(err)] = errors.get(str(err), 0) + 1
    with open(a.out, "w") as f:
        json.dump({"kind": a.kind, "sent": i, "samples_ms": samples, "errors": errors,
                   "record_routed": p.record_routed}, f)
    return 0


# --------------------------------------------------------------------------- cpm metrics
def cmd_metrics(a):
    """The cpm_* samples of a Prometheus text page as {name: value}; {} when unreachable."""
    import urllib.request
    out = {}
    try:
        with urllib.request.urlopen(a.url, timeout=5) as r:
            text = r.read().decode()
    except OSError:
        text = ""
    for line in text.splitlines():
        if line.startswith("cpm_"):
            parts = line.split()
            if len(parts) == 2:
                try:
                    out[parts[0]] = int(float(parts[1]))
                except ValueError:
                    pass
    out["t"] = time.time()
    print(json.dumps(out))
    return 0


METRIC_COUNTERS = {
    "pf_sent": "cpm_pf_messages_sent_total",
    "pf_received": "cpm_pf_messages_received_total",
    "pf_delivered": "cpm_pf_delivered_total",
    "pf_deferred": "cpm_pf_deferred_total",
    "pf_duplicates": "cpm_pf_duplicates_total",
    "store_failures": "cpm_pf_store_failures_total",
    "store_batches": "cpm_store_batches_total",
    "store_ops": "cpm_store_ops_total",
    "local_failures": "cpm_sip_local_failures_total",
    "auth_challenges": "cpm_auth_challenges_total",
}


def metrics_delta(m0, m1):
    d = {k: m1.get(v, 0) - m0.get(v, 0) for k, v in METRIC_COUNTERS.items()}
    d["avg_batch"] = round(d["store_ops"] / d["store_batches"], 2) if d["store_batches"] else None
    d["store_queue_end"] = m1.get("cpm_store_queue_depth", 0)
    d["pf_in_progress_end"] = m1.get("cpm_pf_in_progress", 0)
    d["transactions_end"] = m1.get("cpm_sip_transactions", 0)
    return d


def cmd_history(a):
    """Rows of cpm's message history (table `messages` of DATA_DIR/cpm.db) by direction and
    state, read-only; the node may still be running (WAL)."""
    import sqlite3
    out = {"path": a.db}
    try:
        con = sqlite3.connect(f"file:{a.db}?mode=ro", uri=True, timeout=10)
        rows = con.execute("SELECT direction, state, COUNT(*) FROM messages "
                           "GROUP BY direction, state").fetchall()
        out["rows"] = {f"{d}/{st}": n for d, st, n in rows}
        out["total"] = sum(n for _, _, n in rows)
        for d in ("sent", "received"):
            out[d] = sum(n for dd, _, n in rows if dd == d)
        out["distinct_message_ids"] = con.execute(
            "SELECT COUNT(DISTINCT message_id) FROM messages").fetchone()[0]
        con.close()
    except Exception as e:  # noqa: BLE001 - reported, not fatal
        out["error"] = str(e)
    if not a.out:
        print(json.dumps(out))
        return 0
    # pager bench: one record with the history, the PF counters of the whole ramp and the 200s
    # the UAC and the probe saw, to check "two records per answered message"
    rec = {"type": "history", "server": a.server, "db": out, "uac_ok": 0, "probe_ok": 0}
    with open(a.out) as f:
        for line in f:
            r = json.loads(line) if line.strip() else {}
            if r.get("server") == a.server and r.get("type") is None:
                rec["uac_ok"] += r.get("successful") or 0
                rec["probe_ok"] += r.get("probe_n") or 0
    if a.metrics:
        m = json.loads(a.metrics)
        rec["pf"] = {k: m.get(v, 0) for k, v in METRIC_COUNTERS.items()}
    if a.log_summary:
        rec["log"] = a.log_summary
    with open(a.out, "a") as f:
        f.write(json.dumps(rec) + "\n")
    print(json.dumps(rec))
    return 0


def cmd_idle(a):
    """Wait until the machine's CPU use (every process) stays under --max-pct (100 = one core)
    over a --window seconds sample, at most --timeout seconds; print the last sample."""
    hz = os.sysconf("SC_CLK_TCK")
    end = time.monotonic() + a.timeout
    while True:
        c0, t0 = cpu_all(), time.monotonic()
        time.sleep(a.window)
        pct_ = 100.0 * (cpu_all() - c0) / hz / (time.monotonic() - t0)
        # negative: a process tree ended whose reaper does not collect child times (e.g. an
        # init that ignores SIGCHLD): the sample says nothing, take another
        if 0 <= pct_ <= a.max_pct or time.monotonic() >= end:
            print(f"{pct_:.0f}")
            return 0 if 0 <= pct_ <= a.max_pct else 1


# --------------------------------------------------------------------------- step
def pct(sorted_vals, q):
    if not sorted_vals:
        return None
    k = max(0, min(len(sorted_vals) - 1, int(round(q * len(sorted_vals) + 0.5)) - 1))
    return sorted_vals[k]


def read_rtt(path, rtd_no=1):
    vals = []
    try:
        with open(path) as f:
            next(f, None)
            for line in f:
                parts = line.strip().split(";")
                if len(parts) >= 3 and parts[2] == str(rtd_no):
                    try:
                        vals.append(float(parts[1]))
                    except ValueError:
                        pass
    except OSError:
        return []
    vals.sort()
    return vals


def cmd_step(a):
    d = read_stat_last(a.stat)
    rec = {"server": a.server, "scenario": a.scenario, "offered": a.rate, "calls": a.calls,
           "duration_s": a.duration}
    reasons = []
    if d is None:
        reasons.append("no SIPp stats")
        rec.update(achieved=0.0, successful=0, failed=None, retrans=None)
    else:
        elapsed = _epoch(d["CurrentTime"]) - _epoch(d["StartTime"])
        ok = _int(d, "SuccessfulCall(C)")
        rec.update(
            elapsed_s=round(elapsed, 3),
            successful=ok,
            failed=_int(d, "FailedCall(C)"),
            retrans=_int(d, "Retransmissions(C)"),
            created=_int(d, "OutgoingCall(C)"),
            achieved=round(ok / elapsed, 1) if elapsed > 0 else 0.0,
        )
        fails = {k[:-3]: v for k in d if k.startswith("Failed") and k.endswith("(C)")
                 and k != "FailedCall(C)" for v in [_int(d, k)] if v}
        if fails:
            rec["fail_kinds"] = fails
        if rec["failed"]:
            reasons.append(f"FailedCall={rec['failed']}")
        if rec["retrans"]:
            reasons.append(f"Retransmissions={rec['retrans']}")
        if ok < a.calls:
            reasons.append(f"only {ok}/{a.calls} calls succeeded")
    if rec["achieved"] < 0.95 * a.rate:
        reasons.append(f"achieved {rec['achieved']:.0f}/s < 95% of {a.rate}/s")
    # UAS counters: delta over the step
    if a.uas0 and a.uas1:
        u0, u1 = json.loads(a.uas0), json.loads(a.uas1)
        du = {k: u1.get(k, 0) - u0.get(k, 0) for k in u1}
        rec["uas"] = du
        rec["late_msgs"] = du.get("DeadCallMsgs(C)", 0)
        if du.get("Retransmissions(C)", 0) > 0:
            reasons.append(f"UAS retransmissions={du['Retransmissions(C)']}")
        if du.get("FailedCall(C)", 0) > 0:
            reasons.append(f"UAS FailedCall={du['FailedCall(C)']}")
    # SIPp response times (kernel-tick resolution, see module doc)
    rtt = read_rtt(a.rtt) if a.rtt else []
    rec["sipp_rtt_n"] = len(rtt)
    rec["sipp_p50_ms"] = pct(rtt, 0.50)
    rec["sipp_p99_ms"] = pct(rtt, 0.99)
    if a.rtt2:
        rtt2 = read_rtt(a.rtt, 2)
        if rtt2:
            rec["sipp_bye_p99_ms"] = pct(rtt2, 0.99)
    # probe (microsecond resolution)
    try:
        with open(a.probe) as f:
            pr = json.load(f)
        ps = sorted(pr["samples_ms"])
        rec.update(probe_n=len(ps), probe_sent=pr["sent"], probe_errors=pr["errors"],
                   p50_ms=pct(ps, 0.50), p99_ms=pct(ps, 0.99))
        if a.scenario == "call":
            rec["probe_record_routed"] = pr.get("record_routed", 0)
    except (OSError, ValueError, KeyError):
        rec.update(probe_n=0, p50_ms=None, p99_ms=None)
    # server process
    s0, s1 = json.loads(a.snap0), json.loads(a.snap1)
    wall = s1["t"] - s0["t"]
    rec["cpu_pct"] = round(100.0 * (s1["ticks"] - s0["ticks"]) / s0["hz"] / wall, 1) if wall > 0 else None
    if isinstance(s0.get("cpu_all"), int) and isinstance(s1.get("cpu_all"), int) and wall > 0:
        # CPU used by every process over the step, 100 = one core (nproc * 100 = all busy)
        rec["machine_cpu_pct"] = round(100.0 * (s1["cpu_all"] - s0["cpu_all"]) / s0["hz"] / wall, 1)
    if s0.get("psi_cpu_us") is not None and s1.get("psi_cpu_us") is not None and wall > 0:
        # share of the step during which some runnable task waited for a CPU
        rec["cpu_pressure_pct"] = round((s1["psi_cpu_us"] - s0["psi_cpu_us"]) / 1e4 / wall, 1)
    rec["rss_mb"] = round(s1["rss_kb"] / 1024, 1)
    rec["pss_mb"] = round(s1["pss_kb"] / 1024, 1)
    rec["procs"] = s1["nproc"]
    k0, k1 = s0.get("socks", {}), s1.get("socks", {})
    for role in k1:
        rec[f"drops_{role}"] = k1[role]["drops"] - k0.get(role, {}).get("drops", 0)
    if s1.get("server_rcvbuf"):
        rec["server_rcvbuf"] = s1["server_rcvbuf"]
    u0, u1 = s0.get("udp", {}), s1.get("udp", {})
    rec["udp_rcvbuf_drops"] = u1.get("RcvbufErrors", 0) - u0.get("RcvbufErrors", 0)
    rec["udp_sndbuf_drops"] = u1.get("SndbufErrors", 0) - u0.get("SndbufErrors", 0)
    if a.server_info:
        rec["server_info"] = a.server_info
    if a.metrics0 and a.metrics1:
        rec["cpm"] = metrics_delta(json.loads(a.metrics0), json.loads(a.metrics1))
    if a.load:
        rec["load"] = a.load
    # load generator CPU (single-threaded SIPp: ~100 means it saturates a core)
    try:
        g0, g1 = json.loads(a.uas_snap0), json.loads(a.uas_snap1)
        rec["uas_cpu_pct"] = round(100.0 * (g1["ticks"] - g0["ticks"]) / g0["hz"] / (g1["t"] - g0["t"]), 1)
    except (ValueError, KeyError, ZeroDivisionError):
        pass
    try:
        # bash `times` before/after: line 2 = children's "user sys", e.g. "0m1.234s 0m0.567s"
        def children_cpu(path):
            with open(path) as f:
                ch = f.read().split("\n")[1].split()
            tot = 0.0
            for t in ch[:2]:
                m, s_ = t.rstrip("s").split("m")
                tot += int(m) * 60 + float(s_)
            return tot
        t0, t1 = a.uac_times.split(",")
        wall_uac = rec.get("elapsed_s") or wall
        rec["uac_cpu_pct"] = round(100.0 * (children_cpu(t1) - children_cpu(t0)) / wall_uac, 1)
    except (OSError, IndexError, ValueError):
        pass
    if rec.get("machine_cpu_pct") is not None and rec.get("cpu_pct") is not None:
        # what the rest of the machine used: the probe and every process not started here
        rec["other_cpu_pct"] = round(rec["machine_cpu_pct"] - rec["cpu_pct"]
                                     - rec.get("uac_cpu_pct", 0) - rec.get("uas_cpu_pct", 0), 1)
    rec["clean"] = not reasons
    rec["why"] = "; ".join(reasons)
    with open(a.out, "a") as f:
        f.write(json.dumps(rec) + "\n")
    p50 = "-" if rec.get("p50_ms") is None else f"{rec['p50_ms']:.3f}"
    p99 = "-" if rec.get("p99_ms") is None else f"{rec['p99_ms']:.3f}"
    if rec.get("cpm"):
        c = rec["cpm"]
        print(f"    {a.server:9s} PF sent/received/delivered {c['pf_sent']}/{c['pf_received']}/"
              f"{c['pf_delivered']}, deferred {c['pf_deferred']}, store failures "
              f"{c['store_failures']}, local failures {c['local_failures']}; store ops {c['store_ops']} "
              f"in {c['store_batches']} commits (avg batch {fmt(c.get('avg_batch'), 1)}), "
              f"queue at end {c['store_queue_end']}")
    print(f"    {a.server:9s} {a.scenario:8s} offered {a.rate:>6}/s achieved {rec['achieved']:>9.1f}/s"
          f"  p50 {p50} ms p99 {p99} ms  cpu {rec['cpu_pct']}%  rss {rec['rss_mb']} MB"
          f"  (sipp uac/uas cpu {rec.get('uac_cpu_pct', '-')}/{rec.get('uas_cpu_pct', '-')}%)  "
          + ("clean" if rec["clean"] else "NOT clean: " + rec["why"]))
    return 0 if rec["clean"] else 3


# --------------------------------------------------------------------------- report
def fmt(v, nd=3):
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{nd}f}"
    return str(v)


def notes(r):
    n = []
    if r.get("server_rcvbuf"):
        n.append("rcvbuf " + "+".join(f"{x // 1024}K" for x in r["server_rcvbuf"]))
    if r.get("server_info"):
        n.append(r["server_info"])
    return "; ".join(n)


def cmd_report(a):
    recs, totals = [], []
    with open(a.results) as f:
        for line in f:
            if line.strip():
                r = json.loads(line)
                (totals if r.get("type") == "uas_total" else recs).append(r)
    out = []
    w = out.append
    w(f"# SIP core benchmark: cpm vs Kamailio ({a.date})")
    w("")
    for line in a.header:
        w(line)
    w("")
    scen_names = {"message": "MESSAGE relay (alice -> proxy -> SIPp UAS registered as bob -> 200)",
                  "call": "Calls (INVITE/200/ACK/BYE/200 through the proxy, record-routed)"}
    for scen in ["message", "call"]:
        rs = [r for r in recs if r["scenario"] == scen]
        if not rs:
            continue
        w(f"## {scen_names[scen]}")
        w("")
        w("| server | highest clean rate (/s) | p50 ms | p99 ms | CPU % | RSS MB | PSS MB | first unclean step |")
        w("|---|---:|---:|---:|---:|---:|---:|---|")
        best, ended_clean = {}, []
        for server in ["cpm", "cpm1", "kamailio", "direct"]:
            srs = [r for r in rs if r["server"] == server]
            if not srs:
                continue
            clean = [r for r in srs if r["clean"]]
            # the ramp stops at the first unclean step: the highest clean step is the last clean
            b = max(clean, key=lambda r: r["offered"]) if clean else None
            bad = [r for r in srs if not r["clean"]]
            badtxt = (f"{bad[0]['offered']}/s: {bad[0]['why']}" if bad
                      else "none (ramp ended clean: the rate is a lower bound)")
            if not bad:
                ended_clean.append(server)
            if b:
                best[server] = b["achieved"]
                w(f"| {server} | {b['achieved']:.0f} (step {b['offered']}) | {fmt(b.get('p50_ms'))} | "
                  f"{fmt(b.get('p99_ms'))} | {fmt(b.get('cpu_pct'), 1)} | {fmt(b.get('rss_mb'), 1)} | "
                  f"{fmt(b.get('pss_mb'), 1)} | {badtxt} |")
            else:
                best[server] = 0.0
                w(f"| {server} | none clean | - | - | - | - | - | {badtxt} |")
        w("")
        if best.get("kamailio") and "cpm" in best:
            caveat = (f" (not a limit: the ramp ended clean for {' and '.join(ended_clean)})"
                      if ended_clean else "")
            w(f"**cpm / Kamailio clean-rate ratio: {best['cpm'] / best['kamailio']:.2f}**{caveat}")
        elif "cpm" in best and "kamailio" in best:
            w("cpm / Kamailio clean-rate ratio: n/a (Kamailio had no clean step)")
        else:
            w("cpm / Kamailio clean-rate ratio: n/a (only one server ran)")
        if best.get("cpm1") and "cpm" in best:
            w("")
            w(f"**cpm (N shards) / cpm1 (one shard, `--threads 1`), same run: "
              f"{best['cpm'] / best['cpm1']:.2f}**")
        if best.get("kamailio") and "cpm1" in best:
            w("")
            w(f"cpm1 / Kamailio clean-rate ratio: {best['cpm1'] / best['kamailio']:.2f}")
        if best.get("direct") and "cpm" in best:
            cap = (" (a lower bound: the direct ramp ended clean)" if "direct" in ended_clean else "")
            w("")
            w(f"**cpm / load generator's own ceiling (SIPp UAC -> UAS direct, same run): "
              f"{best['cpm'] / best['direct']:.2f}**{cap}")
        w("")
        w("<details><summary>all steps</summary>")
        w("")
        w("| server | offered /s | achieved /s | ok | failed | retrans | p50 ms | p99 ms | probe n | "
          "SIPp p50 / p99 ms (4 ms ticks) | CPU % | RSS MB | PSS MB | SIPp UAC / UAS CPU % | "
          "UDP drops server / UAS / UAC (all) | verdict | server notes |")
        w("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|")
        for r in rs:
            w(f"| {r['server']} | {r['offered']} | {fmt(r.get('achieved'), 1)} | {fmt(r.get('successful'))} | "
              f"{fmt(r.get('failed'))} | {fmt(r.get('retrans'))} | {fmt(r.get('p50_ms'))} | "
              f"{fmt(r.get('p99_ms'))} | {fmt(r.get('probe_n'))} | "
              f"{fmt(r.get('sipp_p50_ms'), 0)} / {fmt(r.get('sipp_p99_ms'), 0)} | {fmt(r.get('cpu_pct'), 1)} | "
              f"{fmt(r.get('rss_mb'), 1)} | {fmt(r.get('pss_mb'), 1)} | "
              f"{fmt(r.get('uac_cpu_pct'), 1)} / {fmt(r.get('uas_cpu_pct'), 1)} | "
              f"{fmt(r.get('drops_server'))} / {fmt(r.get('drops_uas'))} / {fmt(r.get('drops_uac'))} "
              f"({fmt(r.get('udp_rcvbuf_drops'))}) | "
              f"{'clean' if r['clean'] else 'NOT clean: ' + r['why']} | {notes(r)} |")
        w("")
        w("</details>")
        w("")
        for t in [t for t in totals if t["scenario"] == scen]:
            seen = ", ".join(f"{'got' if r['dir'] == 'in' else 'sent'} {r['msg']} {r['count']}"
                             + (f" ({r['unexpected']} unexpected)" if r.get("unexpected") else "")
                             for r in t["screen"])
            extra = (f"; messages for already finished calls (ACKs overtaken by their BYE, "
                     f"retransmissions): {t['dead_call_msgs']}")
            if scen == "call":
                steps = [r for r in rs if r["server"] == t["server"]]
                n200 = sum(r.get("probe_n", 0) for r in steps)
                nrr = sum(r.get("probe_record_routed", 0) for r in steps)
                extra += f"; Record-Route present in {nrr} of {n200} 200-to-INVITE seen by the probe"
            w(f"- {t['server']}: the UAS (whole ramp, probe included) {seen or 'n/a'}{extra}"
              + (f"; server counters: `{t['server_counters']}`" if t.get("server_counters") else ""))
        if any(t["scenario"] == scen for t in totals):
            w("")
    w("## How to read this")
    w("")
    for line in NOTES:
        w(line)
    text = "\n".join(out) + "\n"
    sys.stdout.write(text)
    if a.md:
        with open(a.md, "w") as f:
            f.write(text)
    return 0


NOTES = [
    "- Load: SIPp 3.6.1 UAC at a fixed offered rate for each step (`-r R -m R*T`), against a SIPp UAS "
    "registered as bob through the server under test. Ramp stops at the first step that is not clean: "
    "UAC `FailedCall(C)` > 0 or `Retransmissions(C)` > 0, fewer successful calls than sent, "
    "UAS failed calls or retransmissions during the step, or achieved rate "
    "(UAC `SuccessfulCall(C)` / (CurrentTime - StartTime) of its last stat line) < 95% of the offered rate.",
    "- *highest clean rate* is the achieved rate of the highest clean step (so it is bounded by the step grid).",
    "- p50/p99: a probe (bench/sipbench.py) sends its own transactions through the server during each step "
    "(default 100/s, one outstanding at a time) to the same UAS: MESSAGE -> 200, or INVITE -> 200 for calls "
    "(then ACK and BYE along the Record-Route set). Time from just before sendto() to the kernel receive "
    "timestamp (SO_TIMESTAMPNS) of the final response. SIPp's own response times are in kernel ticks "
    "(SIPp 3.6.1 uses CLOCK_MONOTONIC_COARSE: 4 ms here), so they are shown only in the step table.",
    "- Each scenario gets a freshly started server (no state carried over from an overloaded step of the "
    "previous scenario); steps of one ramp share the server, as in a steady-state ramp.",
    "- UDP drops: datagrams the kernel dropped over the step because a socket's receive buffer was full, "
    "per socket (drops column of /proc/net/udp for the server's SIP port, the UAS and the UAC) and, in "
    "parentheses, for the whole network namespace (RcvbufErrors of /proc/net/snmp). Drops at the server "
    "socket mean the server did not read fast enough; server notes give the server socket's SO_RCVBUF "
    "(`ss` rb) -- SIPp asks for 4 MB (`-buff_size`), capped by net.core.rmem_max.",
    "- CPU %: utime+stime from /proc/PID/stat of the server process and all its descendants "
    "(Kamailio: main + workers + timers + ctl), delta over the UAC run / wall time; 100 = one core.",
    "- RSS MB: VmRSS summed over the server's processes at the end of the step. For Kamailio this counts "
    "the shared-memory pages once per process that touched them, so also PSS MB (sum of Pss from "
    "/proc/PID/smaps_rollup), which splits shared pages between processes; compare PSS across servers.",
    "- Everything (load generator, UAS, probe, server) shares the same machine: absolute numbers depend "
    "on the machine's other load; the ratio from the same run is the meaningful figure. SIPp is "
    "single-threaded: a UAC or UAS near 100% CPU means the load generator, not the server, set the limit.",
    "- Calls: the UAC sends ACK and BYE back to back (hold time `--hold-ms`, default 0); a multi-worker "
    "proxy may forward the BYE first, so the UAS takes the ACK as optional (RFC 3261 allows BYE once the "
    "2xx is sent) and the late ACK is counted as a message for a finished call, not as a failure.",
]


# --------------------------------------------------------------------------- pager report
PAGER_SCENARIOS = {
    "cpm": ("CPM pager, full durable path", "cpm, `store.synchronous = \"full\"`"),
    "cpm-normal": ("CPM pager, full durable path", "cpm, `store.synchronous = \"normal\"`"),
    "cpm1": ("CPM pager, full durable path", "cpm `--threads 1` (one shard), `store.synchronous = \"full\"`"),
    "cpm-trusted": ("CPM pager, UAC as trusted peer (terminating PF only)",
                    "cpm, `store.synchronous = \"full\"`"),
    "kamailio": ("MESSAGE relay, not durable", "Kamailio (tm relay)"),
}


def cmd_pager_report(a):
    recs, totals, hist = [], [], []
    with open(a.results) as f:
        for line in f:
            if line.strip():
                r = json.loads(line)
                t = r.get("type")
                if t == "uas_total":
                    totals.append(r)
                elif t == "history":
                    hist.append(r)
                elif t is None and r.get("scenario") == "pager":
                    recs.append(r)
    out = []
    w = out.append
    w(f"# CPM pager benchmark: full durable path in cpm vs Kamailio's MESSAGE relay ({a.date})")
    w("")
    for line in a.header:
        w(line)
    w("")
    servers = []
    for r in recs:
        if r["server"] not in servers:
            servers.append(r["server"])
    w("| scenario | server | highest clean rate (/s) | p50 ms | p99 ms | CPU % | memory MB | "
      "store: ops / commits = avg batch | load avg (1 min) | machine CPU % (others), CPU pressure | first unclean step |")
    w("|---|---|---:|---:|---:|---:|---:|---|---:|---:|---|")
    best, ended_clean = {}, []
    for server in servers:
        srs = [r for r in recs if r["server"] == server]
        clean = [r for r in srs if r["clean"]]
        b = max(clean, key=lambda r: r["offered"]) if clean else None
        bad = [r for r in srs if not r["clean"]]
        badtxt = (f"{bad[0]['offered']}/s: {bad[0]['why']}" if bad
                  else "none (ramp ended clean: the rate is a lower bound)")
        if bad and (bad[0].get("other_cpu_pct") or 0) > DISTURBED_PCT:
            badtxt += (f" **(disturbed: other processes used {bad[0]['other_cpu_pct']:.0f} % CPU "
                       f"during that step)**")
        if not bad:
            ended_clean.append(server)
        scen, label = PAGER_SCENARIOS.get(server, (server, server))
        if b:
            best[server] = b["achieved"]
            mem = (f"{fmt(b.get('pss_mb'), 0)} PSS" if server == "kamailio"
                   else f"{fmt(b.get('rss_mb'), 0)} RSS")
            c = b.get("cpm")
            st = (f"{c['store_ops']} / {c['store_batches']} = {fmt(c.get('avg_batch'), 1)}"
                  if c else "-")
            load = (b.get("load") or "-").split()[0]
            w(f"| {scen} | {label} | {b['achieved']:.0f} (step {b['offered']}) | "
              f"{fmt(b.get('p50_ms'), 2)} | {fmt(b.get('p99_ms'), 2)} | {fmt(b.get('cpu_pct'), 0)} | "
              f"{mem} | {st} | {load} | {machine_cpu(b)} | {badtxt} |")
        else:
            best[server] = 0.0
            w(f"| {scen} | {label} | none clean | - | - | - | - | - | - | - | {badtxt} |")
    w("")
    noisy = sorted({r["server"] for r in recs if (r.get("other_cpu_pct") or 0) > DISTURBED_PCT})
    if noisy:
        w(f"**Disturbed:** other processes used more than {DISTURBED_PCT} % of a core during some steps "
          f"of {', '.join(noisy)} (machine CPU column of the step table): these rates are not comparable.")
        w("")
    k = best.get("kamailio")
    for server in servers:
        if server == "kamailio" or server not in best:
            continue
        if k:
            both = [x for x in (server, "kamailio") if x in ended_clean]
            caveat = ""
            if len(both) == 2:
                caveat = " (both ramps ended clean: not a limit, extend the ramp)"
            elif both == [server]:
                caveat = f" (a lower bound: {server}'s ramp ended clean)"
            elif both == ["kamailio"]:
                caveat = " (an upper bound: Kamailio's ramp ended clean)"
            w(f"**{server} / Kamailio clean-rate ratio: {best[server] / k:.2f}**{caveat}  ")
        elif "kamailio" in best:
            w(f"{server} / Kamailio clean-rate ratio: n/a (no clean Kamailio step)  ")
    w("")
    for h in hist:
        d = h.get("db", {})
        w(f"- {h['server']}: message history after the ramp: {d.get('sent', '?')} sent + "
          f"{d.get('received', '?')} received records ({d.get('distinct_message_ids', '?')} distinct "
          f"imdn.Message-IDs; by state: {d.get('rows', d.get('error'))}); PF counters over the ramp: "
          f"{h.get('pf', {})}; 200 OK seen by the UAC {h.get('uac_ok')} + probe {h.get('probe_ok')} "
          f"= {h.get('uac_ok', 0) + h.get('probe_ok', 0)}"
          + (f"; node log: {h['log']}" if h.get("log") else ""))
    for t in totals:
        seen = ", ".join(f"{'got' if r['dir'] == 'in' else 'sent'} {r['msg']} {r['count']}"
                         + (f" ({r['unexpected']} unexpected)" if r.get("unexpected") else "")
                         for r in t["screen"])
        w(f"- {t['server']}: the UAS (whole ramp, probe included) {seen or 'n/a'}; messages for "
          f"finished calls (retransmissions): {t['dead_call_msgs']}"
          + (f"; server counters: `{t['server_counters']}`" if t.get("server_counters") else ""))
    w("")
    w("<details><summary>all steps</summary>")
    w("")
    w("| server | offered /s | achieved /s | ok | failed | retrans | p50 ms | p99 ms | probe n (errors) | "
      "SIPp p50 / p99 ms (4 ms ticks) | CPU % | RSS MB | PSS MB | SIPp UAC / UAS CPU % | "
      "UDP drops server / UAS / UAC (all) | PF sent / received / delivered / deferred | "
      "store ops / commits (avg batch), queue at end | load avg | machine CPU % (others), CPU pressure | verdict | server notes |")
    w("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---|---|")
    for r in recs:
        c = r.get("cpm")
        pf = (f"{c['pf_sent']} / {c['pf_received']} / {c['pf_delivered']} / {c['pf_deferred']}"
              + (f", store failures {c['store_failures']}" if c.get("store_failures") else "")
              + (f", local failures {c['local_failures']}" if c.get("local_failures") else "")
              if c else "-")
        st = (f"{c['store_ops']} / {c['store_batches']} ({fmt(c.get('avg_batch'), 1)}), "
              f"{c['store_queue_end']}" if c else "-")
        perr = r.get("probe_errors") or {}
        pn = fmt(r.get("probe_n")) + (f" ({perr})" if perr else "")
        w(f"| {r['server']} | {r['offered']} | {fmt(r.get('achieved'), 1)} | {fmt(r.get('successful'))} | "
          f"{fmt(r.get('failed'))} | {fmt(r.get('retrans'))} | {fmt(r.get('p50_ms'))} | "
          f"{fmt(r.get('p99_ms'))} | {pn} | "
          f"{fmt(r.get('sipp_p50_ms'), 0)} / {fmt(r.get('sipp_p99_ms'), 0)} | {fmt(r.get('cpu_pct'), 1)} | "
          f"{fmt(r.get('rss_mb'), 1)} | {fmt(r.get('pss_mb'), 1)} | "
          f"{fmt(r.get('uac_cpu_pct'), 1)} / {fmt(r.get('uas_cpu_pct'), 1)} | "
          f"{fmt(r.get('drops_server'))} / {fmt(r.get('drops_uas'))} / {fmt(r.get('drops_uac'))} "
          f"({fmt(r.get('udp_rcvbuf_drops'))}) | {pf} | {st} | {r.get('load', '-')} | {machine_cpu(r)} | "
          f"{'clean' if r['clean'] else 'NOT clean: ' + r['why']} | {notes(r)} |")
    w("")
    w("</details>")
    w("")
    w("## How to read this")
    w("")
    # the SIP core bench's notes that apply here (not its MESSAGE/INVITE probe or calls notes)
    for line in PAGER_NOTES + [NOTES[i] for i in (1, 3, 4, 5, 6, 7)]:
        w(line)
    text = "\n".join(out) + "\n"
    sys.stdout.write(text)
    if a.md:
        with open(a.md, "w") as f:
            f.write(text)
    return 0


DISTURBED_PCT = 30


def machine_cpu(r):
    if r.get("machine_cpu_pct") is None:
        return "-"
    return (f"{r['machine_cpu_pct']:.0f} ({fmt(r.get('other_cpu_pct'), 0)}), "
            f"pressure {fmt(r.get('cpu_pressure_pct'), 0)} %")


PAGER_NOTES = [
    "- Load: SIPp 3.6.1 UAC sending CPM pager-mode MESSAGEs alice -> bob (bench/sipp/uac_pager.xml: "
    "msg ICSI in P-Preferred-Service and Accept-Contact, unique Conversation-ID / Contribution-ID / "
    "imdn.Message-ID, message/cpim body asking for a positive-delivery IMDN) at a fixed offered rate per "
    "step (`-r R -m R*T`), to a SIPp UAS registered as bob (bench/sipp/uas_pager.xml: 200, no IMDN back). "
    "The ramp stops at the first step that is not clean: UAC `FailedCall(C)` > 0 or "
    "`Retransmissions(C)` > 0, fewer 200s than MESSAGEs, UAS failures or retransmissions, or achieved "
    "rate < 95% of the offered rate. A 202 (deferred), 403, 407 or 5xx answer is a failed call.",
    "- cpm's path per MESSAGE: UAC -> core -> PF (cpm=orig: the record in alice's history, SQLite "
    "commit) -> core -> PF (cpm=term) -> core -> the UAS, and the 200 back the same way; bob's record is "
    "committed before the 200 reaches alice (up to 57863f9: stored pending before the delivery and marked "
    "delivered after it, three store operations per message; from 4543268 on: delivered first, the "
    "outcome stored in one write, two operations per message). "
    "The UAC is alice's device: it registered from its own address (digest), so the core takes its "
    "MESSAGEs as alice's (registered flow) and routes them through the originating PF; the core "
    "replaces the P-Asserted-Identity the UAC sends. Kamailio gets the same MESSAGEs and REGISTERs and "
    "relays them statefully (tm), storing nothing.",
    "- store: `cpm_store_ops_total` / `cpm_store_batches_total` over the step (from /metrics): operations "
    "per SQLite transaction (group commit); with `synchronous = \"full\"` every commit is an fsync.",
    "- load avg: /proc/loadavg (1, 5, 15 min) at the start of the step; it counts this bench's own "
    "processes and lags (a previous overloaded ramp still shows). machine CPU %: CPU time of every "
    "process over the step (utime + stime + cutime + cstime summed over /proc/*/stat; 100 = one core, "
    "200 = both); in parentheses what is left after the server, the SIPp UAC and the SIPp UAS: the "
    "probe (a few %) and every process not started here (the machine is shared with other builds); "
    "a negative value means a process tree ended whose reaper does not collect child times, so the "
    "figure is then too low. Steps where others exceed 30 % are flagged as disturbed. CPU pressure: /proc/pressure/cpu `some` over the step, the share of time in which "
    "a runnable task waited for a CPU (this bench's own processes included).",
    "- p50/p99: the probe (bench/sipbench.py probe --kind pager) sends its own pager MESSAGEs as alice "
    "(registered from the probe's port) through the server to the same UAS, one at a time, 100/s; time "
    "from just before sendto() to the kernel receive timestamp of the 200. SIPp's own response times are "
    "in 4 ms kernel ticks (CLOCK_MONOTONIC_COARSE) and only shown in the step table.",
]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sp = ap.add_subparsers(dest="cmd", required=True)
    p = sp.add_parser("freeport")
    p.add_argument("--tcp", action="store_true")
    p.set_defaults(f=cmd_freeport)
    p = sp.add_parser("procsnap")
    p.add_argument("pid", type=int)
    p.add_argument("--ports", default="", help="role=port,... UDP sockets whose drops to read")
    p.add_argument("--rcvbuf", action="store_true", help="also SO_RCVBUF of the server port (ss)")
    p.set_defaults(f=cmd_procsnap)
    p = sp.add_parser("uasnap")
    p.add_argument("csv")
    p.set_defaults(f=cmd_uasnap)
    p = sp.add_parser("uasdone")
    for k in ["server", "scenario", "screen", "csv", "out", "counters"]:
        p.add_argument("--" + k, default="")
    p.set_defaults(f=cmd_uasdone)
    p = sp.add_parser("probe")
    p.add_argument("--server", required=True, help="HOST:PORT of the server under test")
    p.add_argument("--kind", choices=["message", "call", "pager"], required=True)
    p.add_argument("--port", type=int, default=0, help="local UDP port (default: any)")
    p.add_argument("--rate", type=float, default=100.0)
    p.add_argument("--duration", type=float, required=True)
    p.add_argument("--timeout", type=float, default=2.0)
    p.add_argument("--user-from", default="alice")
    p.add_argument("--user-to", default="bob")
    p.add_argument("--domain", default="localhost")
    p.add_argument("--out", required=True)
    p.set_defaults(f=cmd_probe)
    p = sp.add_parser("step")
    for k in ["server", "scenario", "stat", "rtt", "probe", "snap0", "snap1", "out", "uas0", "uas1",
              "uas-snap0", "uas-snap1", "uac-times", "server-info", "metrics0", "metrics1", "load"]:
        p.add_argument("--" + k, default="")
    p.add_argument("--rtt2", action="store_true")
    p.add_argument("--rate", type=int, required=True)
    p.add_argument("--calls", type=int, required=True)
    p.add_argument("--duration", type=float, required=True)
    p.set_defaults(f=cmd_step)
    p = sp.add_parser("metrics")
    p.add_argument("url")
    p.set_defaults(f=cmd_metrics)
    p = sp.add_parser("idle")
    p.add_argument("--max-pct", type=float, default=20.0)
    p.add_argument("--window", type=float, default=5.0)
    p.add_argument("--timeout", type=float, default=600.0)
    p.set_defaults(f=cmd_idle)
    p = sp.add_parser("history")
    p.add_argument("db")
    p.add_argument("--server", default="")
    p.add_argument("--metrics", default="", help="final metrics JSON (bench/sipbench.py metrics)")
    p.add_argument("--log-summary", default="")
    p.add_argument("--out", default="", help="append a history record to this results file")
    p.set_defaults(f=cmd_history)
    p = sp.add_parser("pager-report")
    p.add_argument("--results", required=True)
    p.add_argument("--md", default="")
    p.add_argument("--date", required=True)
    p.add_argument("--header", action="append", default=[])
    p.set_defaults(f=cmd_pager_report)
    p = sp.add_parser("report")
    p.add_argument("--results", required=True)
    p.add_argument("--md", default="")
    p.add_argument("--date", required=True)
    p.add_argument("--header", action="append", default=[])
    p.set_defaults(f=cmd_report)
    a = ap.parse_args()
    return a.f(a)


if __name__ == "__main__":
    sys.exit(main())
