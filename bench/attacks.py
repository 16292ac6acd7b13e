#!/usr/bin/env python3
"""Figures for the attacks of issue 10, against any `cpm` binary (so an old build and the
current one can be measured the same way). Starts `cpm serve` on free loopback ports with a
fresh data directory, runs each attack for a fixed time, prints one line per figure, stops
the node.

    bench/attacks.py --cpm target/release/cpm [--only relay,guess,...]

Attacks: fill (60 messages of 1 MB from one authenticated sender to an offline user: how
many are queued, how fast), relay (one MESSAGE with a preloaded Route from a stranger: datagrams and bytes the
node sends to the Route's host in 35 s), replay (a captured REGISTER Authorization sent
again from elsewhere: the status), guess (wrong passwords from one source for 5 s over UDP
and over HTTP: answers per second, and how many were challenges), foreign (a MESSAGE from
mallory@otherdomain.test from a stranger: the status), lookalike (From sip:alice@localhost.
from a stranger: the status), tcp (10,000 idle connections from one address,
then a legitimate REGISTER; 500 slow-loris connections for 30 s), http (19,000 idle HTTP
connections from one address, then /health from another). The flood figures come from its
test (crates/cpm/tests/security/flood.rs), which prints them.
"""

import argparse
import hashlib
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request


def free_port():
    for _ in range(100):
        t = socket.socket()
        t.bind(("127.0.0.1", 0))
        port = t.getsockname()[1]
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            u.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue
        finally:
            t.close()
            u.close()
    sys.exit("no free port")


class Node:
    def __init__(self, cpm, users):
        self.dir = tempfile.mkdtemp(prefix="cpm-attacks-")
        for aor, pw in users:
            subprocess.run([cpm, "admin", "user", "add", aor, "--password", pw,
                            "--data-dir", self.dir], check=True, stdout=subprocess.DEVNULL)
        self.sip = ("127.0.0.1", free_port())
        self.http = ("127.0.0.1", free_port())
        self.log = open(os.path.join(self.dir, "node.log"), "w")
        self.proc = subprocess.Popen(
            [cpm, "serve", "--sip-listen", "%s:%d" % self.sip, "--http-listen",
             "%s:%d" % self.http, "--data-dir", self.dir, "--threads", "2"],
            stdout=subprocess.DEVNULL, stderr=self.log)
        deadline = time.time() + 15
        while time.time() < deadline:
            try:
                urllib.request.urlopen("http://%s:%d/health" % self.http, timeout=1).read()
                return
            except Exception:
                time.sleep(0.05)
        self.stop()
        sys.exit("cpm serve did not start")

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


def udp(ip="127.0.0.1"):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((ip, 0))
    return s


def crlf(text):
    return text.replace("\n", "\r\n").encode()


def recv_status(s, wait):
    s.settimeout(wait)
    deadline = time.time() + wait
    while time.time() < deadline:
        try:
            data = s.recv(65535).decode(errors="replace")
        except socket.timeout:
            return None, None
        m = re.match(r"SIP/2.0 (\d+)", data)
        if m and int(m.group(1)) >= 200:
            return int(m.group(1)), data
    return None, None


def register(user, src, cseq, auth=None, contact=None):
    a = "Authorization: %s\n" % auth if auth else ""
    c = contact or "<sip:%s@%s:%d>" % (user, src[0], src[1])
    return crlf(
        "REGISTER sip:localhost SIP/2.0\nVia: SIP/2.0/UDP %s:%d;branch=z9hG4bKat%d%d\n"
        "Max-Forwards: 70\nFrom: <sip:%s@localhost>;tag=a\nTo: <sip:%s@localhost>\n"
        "Call-ID: at-%s-%d\nCSeq: %d REGISTER\nContact: %s\nExpires: %d\n%sContent-Length: 0\n\n"
        % (src[0], src[1], cseq, src[1], user, user, user, src[1], cseq, c,
           0 if c == "*" else 300, a))


def message(ruri, frm, src, cid, extra=""):
    body = "hello"
    return crlf(
        "MESSAGE %s SIP/2.0\nVia: SIP/2.0/UDP %s:%d;branch=z9hG4bK%s\nMax-Forwards: 70\n"
        "From: <%s>;tag=x\nTo: <%s>\nCall-ID: %s\nCSeq: 1 MESSAGE\n%s"
        "P-Preferred-Service: urn:urn-7:3gpp-service.ims.icsi.oma.cpm.msg\n"
        "Content-Type: text/plain\nContent-Length: %d\n\n%s"
        % (ruri, src[0], src[1], cid, frm, ruri, cid, extra, len(body), body))


def md5(s):
    return hashlib.md5(s.encode()).hexdigest()


def digest(challenge, method, uri, user, pw, nc=1, realm_user=None):
    realm = re.search(r'realm="([^"]*)"', challenge).group(1)
    nonce = re.search(r'nonce="([^"]*)"', challenge).group(1)
    ha1 = md5("%s:%s:%s" % (user, realm, pw))
    ha2 = md5("%s:%s" % (method, uri))
    ncs = "%08x" % nc
    resp = md5("%s:%s:%s:%s:auth:%s" % (ha1, nonce, ncs, "c0ffee", ha2))
    return ('Digest username="%s", realm="%s", nonce="%s", uri="%s", response="%s", '
            'algorithm=MD5, cnonce="c0ffee", qop=auth, nc=%s'
            % (user, realm, nonce, uri, resp, ncs))


def www_auth(text):
    m = re.search(r"(?im)^WWW-Authenticate: (.*)$", text)
    return m.group(1) if m else None


def attack_relay(cpm):
    node = Node(cpm, [("bob@localhost", "bobpw")])
    try:
        victim = udp("127.0.0.9")
        v = victim.getsockname()
        a = udp()
        a.sendto(message("sip:x@victim.test", "sip:mallory@evil.test", a.getsockname(), "relay1",
                         "Route: <sip:%s:%d;lr>\n" % v), node.sip)
        status, _ = recv_status(a, 1.0)
        n = size = 0
        victim.settimeout(0.5)
        end = time.time() + 35
        while time.time() < end:
            try:
                size += len(victim.recv(65535))
                n += 1
            except socket.timeout:
                pass
        print("relay: answer %s; the Route's host got %d datagrams, %d bytes in 35 s" % (status, n, size))
    finally:
        node.stop()


def attack_replay(cpm):
    node = Node(cpm, [("bob@localhost", "bobpw")])
    try:
        bob = udp()
        bob.sendto(register("bob", bob.getsockname(), 1), node.sip)
        _, text = recv_status(bob, 2)
        auth = digest(www_auth(text), "REGISTER", "sip:localhost", "bob", "bobpw")
        bob.sendto(register("bob", bob.getsockname(), 2, auth), node.sip)
        first, _ = recv_status(bob, 2)
        m = udp()
        m.sendto(register("bob", m.getsockname(), 1, auth), node.sip)
        again, _ = recv_status(m, 2)
        m.sendto(register("bob", m.getsockname(), 2, auth, contact="*"), node.sip)
        star, _ = recv_status(m, 2)
        print("replay: bob's REGISTER %s; the replay with the attacker's Contact %s; with Contact: * %s"
              % (first, again, star))
    finally:
        node.stop()


def attack_guess(cpm):
    node = Node(cpm, [("bob@localhost", "bobpw")])
    try:
        s = udp("127.0.0.3")
        src = s.getsockname()
        s.sendto(register("bob", src, 1), node.sip)
        _, text = recv_status(s, 2)
        ch = www_auth(text)
        answers = challenges = sent = 0
        end = time.time() + 5
        cseq = 2
        s.settimeout(0.2)
        while time.time() < end:
            auth = digest(ch, "REGISTER", "sip:localhost", "bob", "guess%d" % cseq)
            s.sendto(register("bob", src, cseq, auth), node.sip)
            sent += 1
            cseq += 1
            try:
                data = s.recv(65535).decode(errors="replace")
                answers += 1
                if data.startswith("SIP/2.0 401"):
                    challenges += 1
            except socket.timeout:
                pass
        print("guess (SIP/UDP, one source, one nonce): %d guesses in 5 s, %d answered (%d challenges: "
              "%.0f guesses checked per second)" % (sent, answers, challenges, challenges / 5))
        # HTTP: one connection per guess, as a cracking tool does.
        url = "/api/v1/history"
        ok = refused = other = 0
        end = time.time() + 5
        i = 0
        while time.time() < end:
            try:
                c = socket.create_connection(node.http, timeout=2)
                c.sendall(b"GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % url.encode())
                head = c.recv(65535).decode(errors="replace")
                c.close()
                ch = re.search(r"(?i)www-authenticate: (.*)\r", head)
                if not ch:
                    refused += 1 if " 429 " in head.split("\r\n")[0] else 0
                    other += 0 if " 429 " in head.split("\r\n")[0] else 1
                    continue
                auth = digest(ch.group(1), "GET", url, "bob", "guess%d" % i)
                i += 1
                c = socket.create_connection(node.http, timeout=2)
                c.sendall(("GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: %s\r\n\r\n"
                           % (url, auth)).encode())
                line = c.recv(65535).decode(errors="replace").split("\r\n")[0]
                c.close()
                if " 401 " in line:
                    ok += 1
                elif " 429 " in line:
                    refused += 1
                else:
                    other += 1
            except OSError:
                other += 1
        print("guess (HTTP, one source): %d wrong guesses checked in 5 s (%.0f/s), %d refused with 429, %d other"
              % (ok, ok / 5, refused, other))
    finally:
        node.stop()


def attack_foreign(cpm):
    node = Node(cpm, [("bob@localhost", "bobpw"), ("alice@localhost", "alicepw")])
    try:
        s = udp()
        s.sendto(message("sip:bob@localhost", "sip:mallory@otherdomain.test", s.getsockname(), "f1"), node.sip)
        st, _ = recv_status(s, 3)
        print("foreign: MESSAGE from mallory@otherdomain.test, not from its core: %s" % st)
        for frm in ["sip:alice@localhost.", "sip:alice@127.0.0.1", "sip:alice@[::1]", "im:alice@localhost"]:
            s.sendto(message("sip:bob@localhost", frm, s.getsockname(), "l" + md5(frm)[:8]), node.sip)
            st, _ = recv_status(s, 3)
            print("lookalike: MESSAGE from %s, unauthenticated: %s" % (frm, st))
    finally:
        node.stop()


def tcp_final(c, buf):
    """The next final response's status on a TCP connection (responses have no body here)."""
    while True:
        while b"\r\n\r\n" not in buf[0]:
            chunk = c.recv(65536)
            if not chunk:
                return None
            buf[0] += chunk
        head, buf[0] = buf[0].split(b"\r\n\r\n", 1)
        text = head.decode(errors="replace")
        m = re.match(r"SIP/2.0 (\d+)", text)
        if m and int(m.group(1)) >= 200:
            return int(m.group(1)), text


def attack_fill(cpm):
    node = Node(cpm, [("bob@localhost", "bobpw"), ("alice@localhost", "alicepw")])
    try:
        c = socket.create_connection(node.sip, timeout=10)
        src = c.getsockname()
        buf = [b""]
        reg = register("alice", src, 1).replace(b"SIP/2.0/UDP", b"SIP/2.0/TCP")
        c.sendall(reg)
        _, text = tcp_final(c, buf)
        auth = digest(www_auth(text), "REGISTER", "sip:localhost", "alice", "alicepw")
        c.sendall(register("alice", src, 2, auth).replace(b"SIP/2.0/UDP", b"SIP/2.0/TCP"))
        tcp_final(c, buf)
        big = "x" * 1_000_000
        accepted = {}
        start = time.time()
        for i in range(60):
            msg = crlf(
                "MESSAGE sip:bob@localhost SIP/2.0\nVia: SIP/2.0/TCP %s:%d;branch=z9hG4bKfill%d\n"
                "Max-Forwards: 70\nFrom: <sip:alice@localhost>;tag=x\nTo: <sip:bob@localhost>\n"
                "Call-ID: fill%d\nCSeq: 1 MESSAGE\n"
                "P-Preferred-Service: urn:urn-7:3gpp-service.ims.icsi.oma.cpm.msg\n"
                "Content-Type: text/plain\nContent-Length: %d\n\n" % (src[0], src[1], i, i, len(big))) + big.encode()
            c.sendall(msg)
            st, _ = tcp_final(c, buf)
            accepted[st] = accepted.get(st, 0) + 1
        took = time.time() - start
        print("fill: 60 x 1 MB from one authenticated sender to an offline user in %.1f s: %s"
              % (took, ", ".join("%d x %s" % (n, st) for st, n in sorted(accepted.items()))))
    finally:
        node.stop()


def connect_from(ip, to, timeout=2):
    c = socket.socket()
    c.bind((ip, 0))
    c.settimeout(timeout)
    c.connect(to)
    return c


def hold(ip, to, n):
    out = []
    for _ in range(n):
        try:
            out.append(connect_from(ip, to))
        except OSError:
            break
    return out


def still_open(conns):
    n = 0
    for c in conns:
        c.settimeout(0.001)
        try:
            if c.recv(1) != b"":
                n += 1
        except socket.timeout:
            n += 1
        except OSError:
            pass
    return n


def tcp_register_status(to):
    try:
        c = socket.create_connection(to, timeout=3)
        src = c.getsockname()
        c.sendall(register("alice", src, 1).replace(b"SIP/2.0/UDP", b"SIP/2.0/TCP"))
        r = tcp_final(c, [b""])
        return r[0] if r else "closed"
    except OSError as e:
        return "error (%s)" % e.__class__.__name__


def attack_tcp(cpm):
    node = Node(cpm, [("alice@localhost", "alicepw")])
    try:
        idle = hold("127.0.0.2", node.sip, 10000)
        time.sleep(1)
        kept = still_open(idle)
        print("tcp: 10,000 idle connections from one address: %d opened, %d kept open by the node; "
              "a legitimate REGISTER from another address: %s" % (len(idle), kept, tcp_register_status(node.sip)))
        for c in idle:
            c.close()
        slow = hold("127.0.0.3", node.sip, 500)
        start = time.time()
        header = b"REGISTER sip:localhost SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.3:9;branch=z9hG4bKx"
        i = 0
        while time.time() - start < 30:
            for c in slow:
                try:
                    c.send(header[i:i + 1])
                except OSError:
                    pass
            i += 1
            time.sleep(5)
        print("slowloris: 500 connections sending a byte every 5 s: %d still open after 30 s"
              % still_open(slow))
    finally:
        node.stop()


def attack_http(cpm):
    node = Node(cpm, [("alice@localhost", "alicepw")])
    try:
        opening = time.time()
        idle = hold("127.0.0.4", node.http, 19000)
        opening = time.time() - opening
        kept = still_open(idle)
        t = time.time()
        try:
            c = connect_from("127.0.0.1", node.http, timeout=30)
            c.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            line = c.recv(100).split(b"\r\n")[0].decode()
        except OSError as e:
            line = "error (%s)" % e.__class__.__name__
        took = time.time() - t
        print("http: %d idle connections from one address opened in %.1f s, %d kept open then; "
              "/health from another address: %s in %.3f s" % (len(idle), opening, kept, line, took))
        time.sleep(12)
        print("http: %d of them still open 13 s later" % still_open(idle))
    finally:
        node.stop()


ATTACKS = {"relay": attack_relay, "fill": attack_fill, "tcp": attack_tcp, "http": attack_http, "replay": attack_replay, "guess": attack_guess,
           "foreign": attack_foreign}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cpm", required=True)
    p.add_argument("--only", default=",".join(ATTACKS))
    args = p.parse_args()
    for name in args.only.split(","):
        ATTACKS[name](args.cpm)


if __name__ == "__main__":
    main()
