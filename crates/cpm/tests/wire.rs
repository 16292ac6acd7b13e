//! The RFC 4475 / RFC 5118 torture corpora on the wire: each file is sent as one UDP datagram
//! to a running `cpm serve` (a SIP/IP Core serving example.com), and the node's answer is
//! checked against the corpus manifest, read as a proxy/registrar must act.

mod common;

use std::net::UdpSocket;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::Node;

/// What the node must answer to a file, as a proxy/registrar for example.com whose users
/// (`user@example.com`, ...) are not registered.
#[derive(Debug)]
enum Expect {
    /// One of these final status codes.
    Status(&'static [u16]),
    /// Nothing at all (malformed or stray responses).
    Silence,
}

/// The manifest verdicts, applied to our role. Valid requests are forwarded to an
/// unregistered or unknown user (404/480), challenged (REGISTER: 401), refused for a
/// scheme we do not route (416) or for a sender the node cannot take from this source (403); `semantic:415`/`406` are a UAS's answers: a proxy forwards
/// such requests like any other (manifest notes), so the node's answer is its routing answer.
fn expectation(file: &str, verdict: &str) -> Expect {
    match (file, verdict) {
        // Responses without a client transaction: a proxy drops them (RFC 3261 18.1.2).
        ("unreason.dat" | "noreason.dat", _) => Expect::Silence,
        (_, v) if v.starts_with("invalid:drop") || v == "semantic:drop" => Expect::Silence,
        (_, v) if v.starts_with("invalid:400") => Expect::Status(&[400]),
        // 403: the sender's foreign domain is not taken from this source (no peer core).
        ("invut.dat" | "sdp01.dat", _) => Expect::Status(&[403, 404, 480]),
        ("regaut01.dat", _) => Expect::Status(&[401]),
        ("novelsc.dat", _) => Expect::Status(&[416]),
        ("mismatch02.dat", _) => Expect::Status(&[501, 400]),
        (_, v) if v.starts_with("semantic:") => {
            let code: u16 = v["semantic:".len()..]
                .split('/')
                .next()
                .and_then(|c| c.parse().ok())
                .unwrap_or(0);
            Expect::Status(match code {
                400 => &[400],
                483 => &[483],
                416 => &[416],
                420 => &[420],
                505 => &[505],
                _ => &[],
            })
        }
        // Valid REGISTERs are challenged; other valid requests are routed (nobody is
        // registered: 404 or 480) and never refused as malformed.
        ("dblreq.dat" | "cparam01.dat" | "cparam02.dat" | "regescrt.dat", "valid") => {
            Expect::Status(&[401])
        }
        // From a local user over an unregistered flow: challenged (407); from a foreign
        // domain, not from that domain's core: refused (403).
        (_, "valid") => Expect::Status(&[404, 480, 416, 407, 401, 403]),
        _ => Expect::Status(&[]),
    }
}

fn corpus() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/testdata/sip")
}

fn wire_bytes(corpus_name: &str, file: &str) -> Vec<u8> {
    let raw = std::fs::read(corpus().join(corpus_name).join(file)).expect("corpus file");
    if corpus_name == "rfc4475" {
        return raw;
    }
    // RFC 5118 files are archived with LF line ends (see the corpus README).
    let mut out = Vec::new();
    for b in raw {
        if b == b'\n' {
            out.push(b'\r');
        }
        out.push(b);
    }
    if !out.windows(4).any(|w| w == b"\r\n\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    // Recompute Content-Length for the archive's quirky files.
    let text = String::from_utf8_lossy(&out).into_owned();
    if let Some((head, body)) = text.split_once("\r\n\r\n") {
        let head: Vec<String> = head
            .split("\r\n")
            .map(|l| {
                if l.to_ascii_lowercase().starts_with("content-length") {
                    format!("Content-Length: {}", body.len())
                } else {
                    l.to_owned()
                }
            })
            .collect();
        return format!("{}\r\n\r\n{body}", head.join("\r\n")).into_bytes();
    }
    out
}

/// Several corpus files share a Via branch and sent-by: to the node they would be one
/// transaction (the later ones absorbed as retransmissions, RFC 3261 17.2.3). Give each file
/// its own branch, except where the bare magic cookie is the point (RFC 4475 3.2.1).
fn unique_branch(bytes: Vec<u8>, n: usize) -> Vec<u8> {
    let needle = b"branch=z9hG4bK";
    let Some(at) = bytes.windows(needle.len()).position(|w| w == needle) else {
        return bytes;
    };
    let end = at + needle.len();
    if bytes.get(end).is_none_or(|b| !b.is_ascii_alphanumeric()) {
        return bytes;
    }
    let mut out = bytes[..end].to_vec();
    out.extend_from_slice(format!("w{n}x").as_bytes());
    out.extend_from_slice(&bytes[end..]);
    out
}

/// Final status codes received within `wait` (100 Trying ignored).
fn answers(sock: &UdpSocket, wait: Duration) -> Vec<u16> {
    let deadline = Instant::now() + wait;
    let mut out = Vec::new();
    let mut buf = [0u8; 65535];
    while Instant::now() < deadline {
        let left = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1));
        sock.set_read_timeout(Some(left)).expect("timeout");
        let Ok(n) = sock.recv(&mut buf) else { break };
        let text = String::from_utf8_lossy(&buf[..n]);
        if let Some(code) = text
            .strip_prefix("SIP/2.0 ")
            .and_then(|r| r.get(..3))
            .and_then(|c| c.parse::<u16>().ok())
            && code >= 200
        {
            out.push(code);
            // One final answer is what we wait for; a short grace catches duplicates.
            let grace = Instant::now() + Duration::from_millis(50);
            if grace < deadline {
                sock.set_read_timeout(Some(Duration::from_millis(50)))
                    .expect("timeout");
                if let Ok(n) = sock.recv(&mut buf) {
                    let t = String::from_utf8_lossy(&buf[..n]);
                    if let Some(c) = t
                        .strip_prefix("SIP/2.0 ")
                        .and_then(|r| r.get(..3))
                        .and_then(|c| c.parse::<u16>().ok())
                        && c >= 200
                    {
                        out.push(c);
                    }
                }
            }
            break;
        }
    }
    out
}

#[test]
fn torture_corpus_on_the_wire() {
    let node = Node::start(&[("user@example.com", "pw")], &["--domain", "example.com"]);
    let mut failures = Vec::new();
    let mut checked = 0;
    for corpus_name in ["rfc4475", "rfc5118"] {
        let manifest = std::fs::read_to_string(corpus().join(corpus_name).join("MANIFEST.tsv"))
            .expect("manifest");
        for line in manifest.lines().skip(1).filter(|l| !l.trim().is_empty()) {
            let cols: Vec<&str> = line.split('\t').collect();
            let (file, verdict) = (cols[0], cols[3]);
            let expect = expectation(file, verdict);
            // A fresh socket per file: answers cannot be mistaken for another file's.
            let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
            let bytes = unique_branch(wire_bytes(corpus_name, file), checked);
            sock.send_to(&bytes, node.sip).expect("send");
            let wait = match expect {
                Expect::Silence => Duration::from_millis(300),
                Expect::Status(_) => Duration::from_secs(3),
            };
            let got = answers(&sock, wait);
            let ok = match &expect {
                Expect::Silence => got.is_empty(),
                Expect::Status(codes) => got.len() == 1 && codes.contains(&got[0]),
            };
            checked += 1;
            if !ok {
                failures.push(format!(
                    "{corpus_name}/{file} ({verdict}): expected {expect:?}, got {got:?}"
                ));
            }
        }
    }
    assert_eq!(checked, 61, "every manifest row checked");
    // The node is still up and counted what it saw.
    assert!(
        node.http_get("/health").is_some(),
        "node died; log:\n{}",
        node.log()
    );
    assert!(
        failures.is_empty(),
        "{} wire verdicts wrong:\n{}\nlog:\n{}",
        failures.len(),
        failures.join("\n"),
        node.log()
    );
}
