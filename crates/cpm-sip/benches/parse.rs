//! Parse benchmark: cpm-sip against `rsip` 0.4 (the most used Rust SIP parser) on the same
//! inputs, plus how many RFC 4475 / RFC 5118 torture verdicts each gets right.
//!
//! Run with `cargo bench -p cpm-sip --bench parse`. Before the timings it prints the torture
//! comparison; after them, a side-by-side table of ns/message and messages/s read back from
//! criterion's `estimates.json` files.
//!
//! Functions per input:
//! * `cpm-sip`: `Message::parse_datagram` (checks Via, From, To, Call-ID, CSeq, Max-Forwards,
//!   Contact, Route, Record-Route, Content-Type, Content-Length, Date at ingress);
//! * `rsip`: `rsip::SipMessage::try_from(&[u8])` (tokenizes only; typed parsing is lazy);
//! * `cpm-sip+typed` / `rsip+typed`: the same, then reading as types what a proxy needs (every
//!   Via, From, To, Call-ID, CSeq, Max-Forwards).

use std::hint::black_box;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use cpm_sip::{Limits, Message};
use criterion::{Criterion, Throughput};
use rsip::Header;
use rsip::headers::UntypedHeader;
use rsip::prelude::{HasHeaders, ToTypedHeader};

// ------------------------------------------------------------------------------- inputs

/// A typical INVITE with an SDP offer.
const INVITE: &[u8] = b"INVITE sip:bob@biloxi.example.com SIP/2.0\r\n\
Via: SIP/2.0/UDP pc33.atlanta.example.com:5060;branch=z9hG4bK776asdhds;rport\r\n\
Max-Forwards: 70\r\n\
To: Bob <sip:bob@biloxi.example.com>\r\n\
From: Alice <sip:alice@atlanta.example.com>;tag=1928301774\r\n\
Call-ID: a84b4c76e66710@pc33.atlanta.example.com\r\n\
CSeq: 314159 INVITE\r\n\
Contact: <sip:alice@pc33.atlanta.example.com:5060;transport=udp>\r\n\
Allow: INVITE, ACK, CANCEL, OPTIONS, BYE, REFER, NOTIFY, MESSAGE, UPDATE, PRACK\r\n\
Supported: replaces, timer, 100rel\r\n\
User-Agent: ExampleUA/1.2.3\r\n\
Content-Type: application/sdp\r\n\
Content-Length: 253\r\n\
\r\n\
v=0\r\n\
o=alice 2890844526 2890844526 IN IP4 pc33.atlanta.example.com\r\n\
s=-\r\n\
c=IN IP4 192.0.2.101\r\n\
t=0 0\r\n\
m=audio 49172 RTP/AVP 0 8 101\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=fmtp:101 0-15\r\n\
a=ptime:20\r\n\
a=sendrecv\r\n";

/// A CPM pager-mode MESSAGE (OMA CPM, RCS) carrying a `message/cpim` body with IMDN headers.
const MESSAGE_CPIM: &[u8] =
    b"MESSAGE sip:+12125551234@ims.mnc001.mcc001.3gppnetwork.org SIP/2.0\r\n\
Via: SIP/2.0/TCP 192.0.2.10:50602;branch=z9hG4bK-524287-1---77ba1c32a1f0;rport\r\n\
Max-Forwards: 70\r\n\
Route: <sip:pcscf.ims.mnc001.mcc001.3gppnetwork.org:5060;transport=tcp;lr>\r\n\
From: <sip:+12125550001@ims.mnc001.mcc001.3gppnetwork.org>;tag=8d1f3a7c\r\n\
To: <sip:+12125551234@ims.mnc001.mcc001.3gppnetwork.org>\r\n\
Call-ID: 5Wl3TQ9fXhrbGzYtFf0Yxw..@192.0.2.10\r\n\
CSeq: 1 MESSAGE\r\n\
P-Preferred-Service: urn:urn-7:3gpp-service.ims.icsi.oma.cpm.msg\r\n\
Accept-Contact: *;+g.3gpp.icsi-ref=\"urn%3Aurn-7%3A3gpp-service.ims.icsi.oma.cpm.msg\"\r\n\
Conversation-ID: 8b3fd1f4-6e3a-4c4e-9a57-2b1f0a8e6d21\r\n\
Contribution-ID: f2c7e9a0-1d4b-4f6e-8c3a-9e5d7b2a4c10\r\n\
User-Agent: CPM-client/OMA2.2 ExampleRCS/5.1\r\n\
Content-Type: message/cpim\r\n\
Content-Length: 406\r\n\
\r\n\
From: <sip:+12125550001@ims.mnc001.mcc001.3gppnetwork.org>\r\n\
To: <sip:+12125551234@ims.mnc001.mcc001.3gppnetwork.org>\r\n\
NS: imdn <urn:ietf:params:imdn>\r\n\
imdn.Message-ID: Uo5bS0vb3bSfQ7kX\r\n\
DateTime: 2025-03-14T09:26:53.000Z\r\n\
imdn.Disposition-Notification: positive-delivery, display\r\n\
\r\n\
Content-Type: text/plain;charset=UTF-8\r\n\
\r\n\
Hello Bob! Are we still on for lunch tomorrow at 12:30? I booked the usual place.";

/// A 200 OK to an INVITE that went through several proxies: 10 Vias, 3 Record-Routes.
const OK_10_VIA: &[u8] = b"SIP/2.0 200 OK\r\n\
Via: SIP/2.0/UDP proxy9.example.net:5060;branch=z9hG4bK9a8f3c2e9;received=192.0.2.19\r\n\
Via: SIP/2.0/UDP proxy8.example.net:5060;branch=z9hG4bK8a8f3c2e8;received=192.0.2.18\r\n\
Via: SIP/2.0/UDP proxy7.example.net:5060;branch=z9hG4bK7a8f3c2e7;received=192.0.2.17\r\n\
Via: SIP/2.0/TCP proxy6.example.net:5060;branch=z9hG4bK6a8f3c2e6;received=192.0.2.16\r\n\
Via: SIP/2.0/TCP proxy5.example.net:5060;branch=z9hG4bK5a8f3c2e5;received=192.0.2.15\r\n\
Via: SIP/2.0/TCP proxy4.example.net:5060;branch=z9hG4bK4a8f3c2e4;received=192.0.2.14\r\n\
Via: SIP/2.0/UDP proxy3.example.net:5060;branch=z9hG4bK3a8f3c2e3;received=192.0.2.13\r\n\
Via: SIP/2.0/UDP proxy2.example.net:5060;branch=z9hG4bK2a8f3c2e2;received=192.0.2.12\r\n\
Via: SIP/2.0/UDP proxy1.example.net:5060;branch=z9hG4bK1a8f3c2e1;received=192.0.2.11\r\n\
Via: SIP/2.0/UDP pc33.atlanta.example.com:5060;branch=z9hG4bK776asdhds;received=192.0.2.101;rport=5060\r\n\
Record-Route: <sip:proxy9.example.net;lr>\r\n\
Record-Route: <sip:proxy5.example.net;transport=tcp;lr>\r\n\
Record-Route: <sip:proxy1.example.net;lr>\r\n\
To: Bob <sip:bob@biloxi.example.com>;tag=a6c85cf\r\n\
From: Alice <sip:alice@atlanta.example.com>;tag=1928301774\r\n\
Call-ID: a84b4c76e66710@pc33.atlanta.example.com\r\n\
CSeq: 314159 INVITE\r\n\
Contact: <sip:bob@192.0.2.4:5060>\r\n\
Content-Length: 0\r\n\
\r\n";

const INPUTS: [(&str, &[u8]); 3] = [
    ("INVITE+SDP", INVITE),
    ("MESSAGE+CPIM", MESSAGE_CPIM),
    ("200-OK-10-Via", OK_10_VIA),
];

const FUNCTIONS: [&str; 4] = ["cpm-sip", "rsip", "cpm-sip+typed", "rsip+typed"];

// ----------------------------------------------------------------------- the measured work

/// Our parse plus the typed reads a proxy does; `Err` names the first header that failed.
fn cpm_typed(data: &'static [u8], limits: &Limits) -> Result<Message, String> {
    let msg =
        Message::parse_datagram(Bytes::from_static(data), limits).map_err(|e| e.to_string())?;
    let h = msg.headers();
    let vias = h.via().map_err(|e| format!("Via: {e}"))?;
    let from = h.from().map_err(|e| format!("From: {e}"))?;
    let to = h.to().map_err(|e| format!("To: {e}"))?;
    let call_id = h.call_id().map_err(|e| format!("Call-ID: {e}"))?;
    let cseq = h.cseq().map_err(|e| format!("CSeq: {e}"))?;
    let max_forwards = h.max_forwards().map_err(|e| format!("Max-Forwards: {e}"))?;
    if vias.is_empty() || from.is_none() || to.is_none() || call_id.is_none() || cseq.is_none() {
        return Err("a mandatory header is missing".into());
    }
    black_box((vias, from, to, call_id, cseq, max_forwards));
    Ok(msg)
}

/// rsip's parse plus the same typed reads (every Via, From, To, Call-ID, CSeq, Max-Forwards).
/// rsip has no typed Call-ID; its value is read as a string.
fn rsip_typed(data: &[u8]) -> Result<rsip::SipMessage, rsip::Error> {
    let msg = rsip::SipMessage::try_from(data)?;
    for hdr in msg.headers().iter() {
        match hdr {
            Header::Via(v) => {
                black_box(v.typed()?);
            }
            Header::From(v) => {
                black_box(v.typed()?);
            }
            Header::To(v) => {
                black_box(v.typed()?);
            }
            Header::CallId(v) => {
                black_box(v.value());
            }
            Header::CSeq(v) => {
                black_box(v.typed()?);
            }
            Header::MaxForwards(v) => {
                black_box(v.num()?);
            }
            _ => {}
        }
    }
    Ok(msg)
}

fn bench_inputs(c: &mut Criterion) {
    let limits = Limits::default();
    for (name, data) in INPUTS {
        let mut g = c.benchmark_group(name);
        g.throughput(Throughput::Elements(1));
        g.bench_function("cpm-sip", |b| {
            b.iter(|| Message::parse_datagram(black_box(Bytes::from_static(data)), &limits));
        });
        g.bench_function("rsip", |b| {
            b.iter(|| rsip::SipMessage::try_from(black_box(data)));
        });
        g.bench_function("cpm-sip+typed", |b| {
            b.iter(|| cpm_typed(black_box(data), &limits));
        });
        g.bench_function("rsip+typed", |b| {
            b.iter(|| rsip_typed(black_box(data)));
        });
        g.finish();
    }
}

// ------------------------------------------------------------------------ sanity checks

/// The declared Content-Length of a wire message equals its body length.
fn content_length_matches(data: &[u8]) -> bool {
    let Some(end) = find(data, b"\r\n\r\n") else {
        return false;
    };
    content_length(&data[..end]) == Some(data.len() - end - 4)
}

fn sanity_check() {
    let limits = Limits::default();
    for (name, data) in INPUTS {
        assert!(
            content_length_matches(data),
            "{name}: Content-Length does not match the body"
        );
        let msg = Message::parse_datagram(Bytes::from_static(data), &limits)
            .unwrap_or_else(|e| panic!("cpm-sip rejects {name}: {e}"));
        assert_eq!(
            msg.body().len(),
            data.len() - find(data, b"\r\n\r\n").unwrap_or(0) - 4
        );
        if let Err(e) = cpm_typed(data, &limits) {
            panic!("cpm-sip typed reads fail on {name}: {e}");
        }
        if let Err(e) = rsip::SipMessage::try_from(data) {
            panic!("rsip rejects {name}: {e}");
        }
        if let Err(e) = rsip_typed(data) {
            panic!("rsip typed reads fail on {name}: {e}");
        }
    }
    let vias = Message::parse_datagram(Bytes::from_static(OK_10_VIA), &limits)
        .ok()
        .and_then(|m| m.headers().via().ok())
        .map_or(0, |v| v.len());
    assert_eq!(vias, 10, "200 OK must carry 10 Vias");
}

// ----------------------------------------------------------------------- torture corpus

fn corpus_dir() -> PathBuf {
    std::env::var_os("CPM_SIP_TESTDATA").map_or_else(
        || {
            PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../../shared/testdata/sip"
            ))
        },
        PathBuf::from,
    )
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn lf_to_crlf(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(b.len() + b.len() / 16);
    for (i, &c) in b.iter().enumerate() {
        if c == b'\n' && (i == 0 || b[i - 1] != b'\r') {
            out.push(b'\r');
        }
        out.push(c);
    }
    out
}

fn is_content_length_line(line: &[u8]) -> bool {
    let Some(colon) = line.iter().position(|&c| c == b':') else {
        return false;
    };
    let name = line[..colon].trim_ascii();
    name.eq_ignore_ascii_case(b"content-length") || name.eq_ignore_ascii_case(b"l")
}

/// The first Content-Length (or `l`) value in a header section.
fn content_length(head: &[u8]) -> Option<usize> {
    let line = head
        .split(|&c| c == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .find(|l| is_content_length_line(l))?;
    let colon = line.iter().position(|&c| c == b':')?;
    std::str::from_utf8(&line[colon + 1..])
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Rewrite every Content-Length (or `l`) header value to the real body length.
fn fix_content_length(b: &[u8]) -> Vec<u8> {
    let Some(end) = find(b, b"\r\n\r\n") else {
        return b.to_vec();
    };
    let body_len = b.len() - (end + 4);
    let mut out = Vec::with_capacity(b.len() + 8);
    for line in b[..end].split(|&c| c == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        match line.iter().position(|&c| c == b':') {
            Some(colon) if is_content_length_line(line) => {
                out.extend_from_slice(&line[..=colon]);
                out.extend_from_slice(format!(" {body_len}").as_bytes());
            }
            _ => out.extend_from_slice(line),
        }
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&b[end + 4..]);
    out
}

/// `dblreq.dat` is one UDP datagram holding two requests: keep the header section and the
/// declared Content-Length only (rsip has no datagram mode; ours does this itself).
fn truncate_to_content_length(b: &[u8]) -> Vec<u8> {
    let Some(end) = find(b, b"\r\n\r\n") else {
        return b.to_vec();
    };
    let stop = (end + 4 + content_length(&b[..end]).unwrap_or(0)).min(b.len());
    b[..stop].to_vec()
}

/// The corpus normalisation (see the corpus README): RFC 5118 files are archived with bare
/// LF and some without the empty line; three have a wrong Content-Length in the archive.
fn normalise(corpus: &str, file: &str, raw: &[u8]) -> Vec<u8> {
    let mut b = if corpus == "rfc5118" {
        lf_to_crlf(raw)
    } else {
        raw.to_vec()
    };
    if find(&b, b"\r\n\r\n").is_none() {
        b.extend_from_slice(b"\r\n");
    }
    if corpus == "rfc5118" && matches!(file, "ipv6-in-sdp" | "mult-ip-in-sdp" | "ipv4-mapped-ipv6")
    {
        b = fix_content_length(&b);
    }
    b
}

/// rsip's verdict as an rsip user sees it: top-level parse, then typed parsing of the long-form
/// Via/From/To/CSeq/Contact (`.typed()`), Max-Forwards (`.num()`), Content-Length
/// (`.length()`), Call-ID (`.value()`). A panic inside rsip counts as a reject.
fn rsip_verdict(bytes: &[u8]) -> Result<(), String> {
    let run = || -> Result<(), rsip::Error> {
        let msg = rsip::SipMessage::try_from(bytes)?;
        for hdr in msg.headers().iter() {
            match hdr {
                Header::Via(v) => {
                    black_box(v.typed()?);
                }
                Header::From(v) => {
                    black_box(v.typed()?);
                }
                Header::To(v) => {
                    black_box(v.typed()?);
                }
                Header::CSeq(v) => {
                    black_box(v.typed()?);
                }
                Header::Contact(v) => {
                    black_box(v.typed()?);
                }
                Header::MaxForwards(v) => {
                    black_box(v.num()?);
                }
                Header::ContentLength(v) => {
                    black_box(v.length()?);
                }
                Header::CallId(v) => {
                    black_box(v.value());
                }
                _ => {}
            }
        }
        Ok(())
    };
    match catch_unwind(AssertUnwindSafe(run)) {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(p) => Err(format!(
            "PANIC: {}",
            p.downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_default()
        )),
    }
}

/// rsip nests its tokenizer errors ("Tokenizer error: Tokenizer error: tokenizer error: ...");
/// keep the innermost message.
fn short_error(e: &str) -> &str {
    let mut e = e;
    while let Some(rest) = ["Tokenizer error: ", "tokenizer error: "]
        .iter()
        .find_map(|p| e.strip_prefix(p))
    {
        e = rest;
    }
    e
}

struct Wrong {
    file: String,
    verdict: String,
    why: String,
}

fn print_wrong(name: &str, wrong: &[Wrong]) {
    println!("  {name} gets wrong ({}):", wrong.len());
    for w in wrong {
        let expect = if w.verdict.starts_with("invalid") {
            "reject"
        } else {
            "accept"
        };
        println!(
            "    {:<38} {:<22} expected {expect}, got {}",
            w.file, w.verdict, w.why
        );
    }
}

/// Prints how many torture verdicts (accept / reject) each parser gets right.
fn torture_table(dir: &Path) -> Result<(), String> {
    let limits = Limits::default();
    let (mut total, mut ours_wrong, mut rsip_wrong) = (0, Vec::new(), Vec::new());
    // rsip panics on some inputs; keep the default hook from printing them mid-table.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    for corpus in ["rfc4475", "rfc5118"] {
        let cdir = dir.join(corpus);
        let manifest = std::fs::read_to_string(cdir.join("MANIFEST.tsv"))
            .map_err(|e| format!("{}/MANIFEST.tsv: {e}", cdir.display()))?;
        for line in manifest.lines().skip(1).filter(|l| !l.trim().is_empty()) {
            let cols: Vec<&str> = line.split('\t').collect();
            let (file, verdict) = (cols[0], cols.get(3).copied().unwrap_or(""));
            let raw =
                std::fs::read(cdir.join(file)).map_err(|e| format!("{corpus}/{file}: {e}"))?;
            let expect_accept = !verdict.starts_with("invalid");
            let ours = normalise(corpus, file, &raw);
            let theirs = if corpus == "rfc4475" && file == "dblreq.dat" {
                truncate_to_content_length(&ours)
            } else {
                ours.clone()
            };
            total += 1;
            let wrong = |why: String| Wrong {
                file: format!("{corpus}/{file}"),
                verdict: verdict.to_owned(),
                why,
            };
            match Message::parse_datagram(Bytes::from(ours), &limits) {
                Ok(_) if !expect_accept => ours_wrong.push(wrong("accept".into())),
                Err(e) if expect_accept => ours_wrong.push(wrong(format!("reject ({e})"))),
                _ => {}
            }
            match rsip_verdict(&theirs) {
                Ok(()) if !expect_accept => rsip_wrong.push(wrong("accept".into())),
                Err(e) if expect_accept => {
                    let e: String = short_error(&e)
                        .chars()
                        .map(|c| if c.is_control() { ' ' } else { c })
                        .take(80)
                        .collect();
                    rsip_wrong.push(wrong(format!("reject ({e})")));
                }
                _ => {}
            }
        }
    }
    std::panic::set_hook(hook);
    println!("Torture verdicts (RFC 4475 + RFC 5118, {}):", dir.display());
    println!("  valid and semantic:* must be accepted, invalid:* rejected");
    println!(
        "  cpm-sip: {}/{total}, rsip: {}/{total}",
        total - ours_wrong.len(),
        total - rsip_wrong.len()
    );
    print_wrong("cpm-sip", &ours_wrong);
    print_wrong("rsip", &rsip_wrong);
    println!();
    Ok(())
}

// ------------------------------------------------------------------ side-by-side summary

fn criterion_dir() -> Option<PathBuf> {
    if let Some(home) = std::env::var_os("CRITERION_HOME") {
        return Some(PathBuf::from(home));
    }
    if let Some(target) = std::env::var_os("CARGO_TARGET_DIR") {
        return Some(PathBuf::from(target).join("criterion"));
    }
    // <target>/release/deps/parse-<hash>
    let exe = std::env::current_exe().ok()?;
    Some(exe.parent()?.parent()?.parent()?.join("criterion"))
}

fn estimates_path(dir: &Path, input: &str, function: &str) -> PathBuf {
    dir.join(input)
        .join(function)
        .join("new")
        .join("estimates.json")
}

/// Modification times of the `estimates.json` files before this run, so the summary shows
/// only what this run measured (a filter or test mode writes none or some of them).
fn summary_mtimes() -> Vec<Option<SystemTime>> {
    let dir = criterion_dir();
    INPUTS
        .iter()
        .flat_map(|(input, _)| FUNCTIONS.iter().map(move |f| (*input, *f)))
        .map(|(input, f)| {
            let path = estimates_path(dir.as_deref()?, input, f);
            std::fs::metadata(path).ok()?.modified().ok()
        })
        .collect()
}

/// The typical time per iteration (ns) criterion reports: `slope` if present, else `mean`,
/// from an `estimates.json` modified since `before`.
fn estimate_ns(path: &Path, before: Option<SystemTime>) -> Option<f64> {
    let modified = std::fs::metadata(path).ok()?.modified().ok()?;
    if before.is_some_and(|b| modified <= b) {
        return None;
    }
    let json = std::fs::read_to_string(path).ok()?;
    let point = |key: &str| -> Option<f64> {
        let at = json.find(&format!("\"{key}\":{{"))?;
        let rest = &json[at..];
        let p = rest.find("\"point_estimate\":")? + "\"point_estimate\":".len();
        let num: String = rest[p..]
            .chars()
            .take_while(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '-' | '+'))
            .collect();
        num.parse().ok()
    };
    point("slope").or_else(|| point("mean"))
}

fn print_summary(before: &[Option<SystemTime>]) {
    let Some(dir) = criterion_dir() else { return };
    let mut rows = Vec::new();
    let mut i = 0;
    for (input, data) in INPUTS {
        for f in FUNCTIONS {
            let path = estimates_path(&dir, input, f);
            if let Some(ns) = estimate_ns(&path, before.get(i).copied().flatten()) {
                rows.push((input, data.len(), f, ns));
            }
            i += 1;
        }
    }
    if rows.is_empty() {
        return;
    }
    println!("\nSummary (criterion's typical estimate, this run):");
    println!(
        "  {:<14} {:>6}  {:<14} {:>11} {:>14} {:>9}",
        "input", "bytes", "parser", "ns/message", "messages/s", "vs rsip"
    );
    for &(input, len, f, ns) in &rows {
        let base = if f.ends_with("+typed") {
            "rsip+typed"
        } else {
            "rsip"
        };
        let ratio = rows
            .iter()
            .find(|r| r.0 == input && r.2 == base)
            .map_or_else(String::new, |r| format!("{:.2}x", r.3 / ns));
        println!(
            "  {input:<14} {len:>6}  {f:<14} {ns:>11.0} {:>14.0} {ratio:>9}",
            1e9 / ns
        );
    }
    println!("  (vs rsip: rsip's time / this time, against the plain or +typed rsip row)");
}

// ------------------------------------------------------------------------------- main

fn main() {
    sanity_check();
    let listing = std::env::args().any(|a| a == "--list");
    if !listing {
        let dir = corpus_dir();
        if dir.join("rfc4475").is_dir() {
            if let Err(e) = torture_table(&dir) {
                println!("Torture verdicts skipped: {e}\n");
            }
        } else {
            println!(
                "Torture verdicts skipped: corpus not found at {} (set CPM_SIP_TESTDATA)\n",
                dir.display()
            );
        }
    }
    let before = summary_mtimes();
    let mut c = Criterion::default()
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1))
        .sample_size(50)
        .configure_from_args();
    bench_inputs(&mut c);
    c.final_summary();
    if !listing {
        print_summary(&before);
    }
}
