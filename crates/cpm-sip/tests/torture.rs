//! Conformance: the RFC 4475 and RFC 5118 SIP torture corpora, one named test per file.
//!
//! The corpus lives in `../shared/testdata/sip/` beside the repository (override with
//! `CPM_SIP_TESTDATA`). Each file's expected verdict comes from its corpus's `MANIFEST.tsv`:
//!
//! * `valid`: parses, re-serializes to bytes that parse to the same message, and passes the
//!   role-independent checks of [`check_request`];
//! * `invalid:CODE`: the parse fails with that verdict (`400`, or `drop`);
//! * `semantic:CODES`: parses; where the code is message-level, [`check_request`] answers one of
//!   the codes; where it depends on the element's role (483 at a proxy, 416, 420, 415...), the
//!   message passes `check_request` and the code is the SIP/IP Core's job ([`ROLE_LEVEL`]).
//!
//! The test `manifest_complete` checks that the files on disk and the manifest rows are the same
//! set, so nothing is skipped silently. [`KNOWN_FAILURES`] lists verdicts we do not meet yet,
//! each with a reason; it is empty.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use cpm_sip::{
    Contact, HeaderName, Limits, Message, ParseErrorKind, StatusCode, Verdict, check_request,
    unescape,
};
use libtest_mimic::{Arguments, Failed, Trial};

/// Semantic verdicts that depend on the element's role and are answered by the SIP/IP Core
/// (cpm-proxy), not by message-level checks: file → the role that answers.
const ROLE_LEVEL: &[(&str, &str)] = &[
    (
        "unkscm.dat",
        "proxy/registrar: 416 for a Request-URI scheme it does not serve",
    ),
    (
        "novelsc.dat",
        "proxy/registrar: 416 for a Request-URI scheme it does not serve",
    ),
    (
        "unksm2.dat",
        "registrar: 400, To of a REGISTER must be a SIP/SIPS AOR",
    ),
    (
        "bext01.dat",
        "proxy: 420 with Unsupported for unknown Proxy-Require tags",
    ),
    ("invut.dat", "UAS: 415 for an unknown body type"),
    (
        "regaut01.dat",
        "registrar: 401 challenge for an unknown auth scheme",
    ),
    (
        "bcast.dat",
        "proxy: drop a response whose next Via is a broadcast address",
    ),
    ("zeromf.dat", "proxy: 483 for Max-Forwards 0"),
    ("sdp01.dat", "UAS: 406 for an Accept it cannot satisfy"),
];

/// Files whose verdict we do not meet yet: file → reason. The goal is an empty table.
const KNOWN_FAILURES: &[(&str, &str)] = &[];

/// Quirks of the RFCs' own archives (see the corpus README): file → what the harness does.
const ARCHIVE_QUIRKS: &[(&str, &str)] = &[
    (
        "ipv6-in-sdp",
        "Content-Length 268 does not match the archived body: recomputed",
    ),
    (
        "mult-ip-in-sdp",
        "Content-Length 181 does not match the archived body: recomputed",
    ),
    (
        "ipv4-mapped-ipv6",
        "Content-Length counts LF line ends: recomputed after CRLF conversion",
    ),
];

struct Row {
    corpus: &'static str,
    file: String,
    verdict: String,
}

fn corpus_dir() -> PathBuf {
    match std::env::var_os("CPM_SIP_TESTDATA") {
        Some(d) => PathBuf::from(d),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/testdata/sip"),
    }
}

fn manifest(corpus: &'static str) -> Result<Vec<Row>, String> {
    let path = corpus_dir().join(corpus).join("MANIFEST.tsv");
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    Ok(text
        .lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let cols: Vec<&str> = l.split('\t').collect();
            Row {
                corpus,
                file: cols[0].to_owned(),
                verdict: cols.get(3).copied().unwrap_or("").to_owned(),
            }
        })
        .collect())
}

fn files_on_disk(corpus: &str) -> Result<BTreeSet<String>, String> {
    let dir = corpus_dir().join(corpus);
    let rd = std::fs::read_dir(&dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
    Ok(rd
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != "MANIFEST.tsv" && n != "README.md")
        .collect())
}

/// The bytes of a corpus file as wire bytes (RFC 5118 files are archived with bare LF).
fn wire_bytes(corpus: &str, file: &str) -> Result<Vec<u8>, String> {
    let path = corpus_dir().join(corpus).join(file);
    let raw = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    if corpus != "rfc5118" {
        return Ok(raw);
    }
    let mut out = Vec::with_capacity(raw.len() + 64);
    for &b in &raw {
        if b == b'\n' {
            out.push(b'\r');
        }
        out.push(b);
    }
    // Section 4.10's two files end without the empty line after the headers.
    if !out.windows(4).any(|w| w == b"\r\n\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    if ARCHIVE_QUIRKS.iter().any(|(f, _)| *f == file) {
        out = fix_content_length(&out);
    }
    Ok(out)
}

fn fix_content_length(msg: &[u8]) -> Vec<u8> {
    let blank = msg
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("quirk files have a header section");
    let head = String::from_utf8_lossy(&msg[..blank + 2]).into_owned();
    let body = &msg[blank + 4..];
    let mut out = String::new();
    for line in head.split_inclusive("\r\n") {
        if line.to_ascii_lowercase().starts_with("content-length") {
            out.push_str(&format!("Content-Length: {}\r\n", body.len()));
        } else {
            out.push_str(line);
        }
    }
    let mut v = out.into_bytes();
    v.extend_from_slice(b"\r\n");
    v.extend_from_slice(body);
    v
}

fn parse(bytes: &[u8]) -> Result<Message, cpm_sip::ParseError> {
    Message::parse_datagram(Bytes::copy_from_slice(bytes), &Limits::default())
}

/// Parses, then checks that serializing and parsing again gives the same message.
fn parse_round_trip(bytes: &[u8]) -> Result<Message, String> {
    let m = parse(bytes).map_err(|e| format!("expected a parse, got {e} ({:?})", e.kind()))?;
    let again = parse(&m.to_bytes()).map_err(|e| format!("re-serialized message fails: {e}"))?;
    if again != m {
        return Err(format!(
            "round trip changed the message:\n{m:?}\n---\n{again:?}"
        ));
    }
    Ok(m)
}

fn codes(verdict: &str) -> Vec<String> {
    verdict
        .split_once(':')
        .map(|(_, c)| c.split('/').map(str::to_owned).collect())
        .unwrap_or_default()
}

fn verdict_matches(v: Verdict, code: &str) -> bool {
    match v {
        Verdict::Drop => code == "drop",
        Verdict::Respond(status, _) => status.to_string() == code,
        _ => false,
    }
}

fn check(row: &Row) -> Result<(), String> {
    let bytes = wire_bytes(row.corpus, &row.file)?;
    let kind = row.verdict.split(':').next().unwrap_or("");
    match kind {
        "valid" => {
            let m = parse_round_trip(&bytes)?;
            if let Message::Request(r) = &m {
                check_request(r).map_err(|e| format!("valid request refused: {e:?}"))?;
            }
            file_specific(&row.file, &m)
        }
        "invalid" => {
            let expected = codes(&row.verdict);
            let err = match parse(&bytes) {
                Ok(m) => return Err(format!("expected {expected:?}, parsed: {m:?}")),
                Err(e) => e,
            };
            if !expected.iter().any(|c| verdict_matches(err.verdict(), c)) {
                return Err(format!(
                    "expected {expected:?}, got {:?} ({err})",
                    err.verdict()
                ));
            }
            if row.file == "baddn.dat" {
                // The archived file lacks its empty line; with it, the display name is the fault.
                let mut fixed = bytes;
                fixed.extend_from_slice(b"\r\n");
                let e = parse(&fixed).err().ok_or("baddn with CRLF parsed")?;
                if e.kind() != &ParseErrorKind::BadHeaderValue("From")
                    && e.kind() != &ParseErrorKind::BadHeaderValue("To")
                {
                    return Err(format!("baddn with CRLF: unexpected fault {:?}", e.kind()));
                }
            }
            Ok(())
        }
        "semantic" => {
            let expected = codes(&row.verdict);
            let m = parse_round_trip(&bytes)?;
            let role = ROLE_LEVEL.iter().find(|(f, _)| *f == row.file);
            match (&m, role) {
                (Message::Request(r), Some(_)) => check_request(r)
                    .map_err(|e| format!("role-level case refused at message level: {e:?}")),
                (Message::Request(r), None) => match check_request(r) {
                    Ok(()) => Err(format!("expected {expected:?}, check_request passed")),
                    Err(rej) if expected.contains(&rej.status.to_string()) => Ok(()),
                    Err(rej) => Err(format!("expected {expected:?}, got {rej:?}")),
                },
                (Message::Response(_), Some(_)) => Ok(()),
                (Message::Response(_), None) => {
                    Err("semantic response without a role-level entry".into())
                }
            }
        }
        other => Err(format!("unknown verdict kind {other:?}")),
    }
}

/// What RFC 4475/5118 say a parser must get right beyond "it parses", file by file.
fn file_specific(file: &str, m: &Message) -> Result<(), String> {
    let h = m.headers();
    let ensure = |ok: bool, what: &str| if ok { Ok(()) } else { Err(what.to_owned()) };
    let Message::Request(r) = m else {
        return match file {
            "unreason.dat" => ensure(
                matches!(m, Message::Response(r) if r.status == StatusCode::OK && !r.reason.is_ascii()),
                "UTF-8 reason phrase kept",
            ),
            _ => Ok(()),
        };
    };
    match file {
        "wsinv.dat" => {
            let u = h
                .get(&HeaderName::Other("UnknownHeaderWithUnusualValue".into()))
                .ok_or("unknown header lost")?;
            ensure(
                &u.raw()[..] == b"UnknownHeaderWithUnusualValue: ;;,,;;,;",
                "byte-exact unknown header",
            )?;
            ensure(
                h.via().map_err(|e| e.to_string())?.len() == 3,
                "three Via values",
            )?;
            ensure(h.max_forwards() == Ok(Some(68)), "Max-Forwards 0068")?;
            ensure(
                h.cseq().map_err(|e| e.to_string())?.map(|c| c.seq) == Some(9),
                "CSeq 0009",
            )?;
            let from = h.from().map_err(|e| e.to_string())?.ok_or("From")?;
            ensure(from.tag() == Some("98asjd8"), "From tag across folds")
        }
        "esc01.dat" => {
            let u = r.uri.as_sip().ok_or("sip uri")?;
            ensure(
                &*unescape(u.user.as_deref().unwrap_or("")) == b"sips:user@example.com",
                "escaped user part",
            )?;
            let Some(Contact::Addresses(c)) = h.contact().map_err(|e| e.to_string())? else {
                return Err("contact".into());
            };
            let p = c[0]
                .uri
                .as_sip()
                .ok_or("contact sip")?
                .params
                .get(1)
                .ok_or("param")?;
            ensure(
                &*unescape(p.value.as_deref().unwrap_or("")) == b"value%41",
                "unescape once: value%41",
            )
        }
        "escnull.dat" => {
            let Some(Contact::Addresses(c)) = h.contact().map_err(|e| e.to_string())? else {
                return Err("contact".into());
            };
            let users: Vec<_> = c
                .iter()
                .map(|a| {
                    unescape(a.uri.as_sip().and_then(|u| u.user.as_deref()).unwrap_or(""))
                        .into_owned()
                })
                .collect();
            ensure(
                users.len() == 2 && users[0] != users[1] && users[0].contains(&0),
                "two distinct NUL users",
            )
        }
        "esc02.dat" => {
            ensure(r.method.as_str() == "RE%47IST%45R", "unknown method kept")?;
            let Some(Contact::Addresses(c)) = h.contact().map_err(|e| e.to_string())? else {
                return Err("contact".into());
            };
            ensure(c.len() == 2, "C%6Fntact is not Contact: two contacts")
        }
        "longreq.dat" => ensure(
            h.via().map_err(|e| e.to_string())?.len() >= 30,
            "30+ Via values",
        ),
        "dblreq.dat" => ensure(
            r.body.is_empty() && r.method == cpm_sip::Method::Register,
            "trailing octets dropped",
        ),
        "semiuri.dat" => {
            let u = r.uri.as_sip().ok_or("sip")?;
            ensure(
                &*unescape(u.user.as_deref().unwrap_or("")) == b"user;par=u@example.net"
                    && u.host == cpm_sip::Host::Domain("example.com".into()),
                "user part with ';' and host example.com",
            )
        }
        "transports.dat" => ensure(
            h.via()
                .map_err(|e| e.to_string())?
                .iter()
                .map(|v| v.transport.as_str())
                .collect::<Vec<_>>()
                == ["UDP", "SCTP", "TLS", "UNKNOWN", "TCP"],
            "five transports",
        ),
        "mpart01.dat" => ensure(
            r.body.len() == 553,
            "binary multipart body framed by Content-Length",
        ),
        "inv2543.dat" => ensure(
            !r.body.is_empty() && !h.contains(&HeaderName::ContentLength),
            "body is the rest of the datagram",
        ),
        "cparam01.dat" | "cparam02.dat" => {
            let Some(Contact::Addresses(c)) = h.contact().map_err(|e| e.to_string())? else {
                return Err("contact".into());
            };
            let in_uri = c[0]
                .uri
                .as_sip()
                .is_some_and(|u| u.param("unknownparam").is_some());
            let in_header = c[0].param("unknownparam").is_some();
            ensure(
                if file == "cparam01.dat" {
                    in_header && !in_uri
                } else {
                    in_uri && !in_header
                },
                "unknownparam on the right side of the >",
            )
        }
        "regescrt.dat" => {
            let Some(Contact::Addresses(c)) = h.contact().map_err(|e| e.to_string())? else {
                return Err("contact".into());
            };
            ensure(
                c[0].uri.as_sip().is_some_and(|u| u.headers.len() == 1),
                "escaped Route kept in the contact URI",
            )
        }
        "port-ambiguous" => ensure(
            r.uri.as_sip().is_some_and(|u| u.port.is_none()),
            "no port inside []",
        ),
        "port-unambiguous" => ensure(
            r.uri.as_sip().is_some_and(|u| u.port == Some(5070)),
            "port 5070",
        ),
        "via-received-param-no-delim" | "via-received-param-with-delim" => ensure(
            h.via().map_err(|e| e.to_string())?[0]
                .received()
                .is_some_and(|x| x.contains("2001:db8::9:255")),
            "IPv6 received",
        ),
        _ => Ok(()),
    }
}

fn main() {
    let args = Arguments::from_args();
    let mut trials = Vec::new();
    let mut rows = Vec::new();
    for corpus in ["rfc4475", "rfc5118"] {
        match manifest(corpus) {
            Ok(r) => rows.extend(r),
            Err(e) => trials.push(Trial::test(format!("{corpus}::manifest"), move || {
                Err(e.into())
            })),
        }
    }
    // Completeness: the files on disk are exactly the manifest rows (49 + 12).
    let listed: Vec<(String, String)> = rows
        .iter()
        .map(|r| (r.corpus.to_owned(), r.file.clone()))
        .collect();
    trials.push(Trial::test("manifest_complete", move || {
        for (corpus, expected) in [("rfc4475", 49usize), ("rfc5118", 12)] {
            let disk = files_on_disk(corpus)?;
            let in_manifest: BTreeSet<String> = listed
                .iter()
                .filter(|(c, _)| c == corpus)
                .map(|(_, f)| f.clone())
                .collect();
            if disk != in_manifest {
                return Err(Failed::from(format!(
                    "{corpus}: on disk but not in manifest {:?}; in manifest but not on disk {:?}",
                    disk.difference(&in_manifest).collect::<Vec<_>>(),
                    in_manifest.difference(&disk).collect::<Vec<_>>()
                )));
            }
            if disk.len() != expected {
                return Err(format!("{corpus}: {} files, expected {expected}", disk.len()).into());
            }
        }
        Ok(())
    }));
    // One trial per file on disk, so a file missing from the manifest fails by name.
    for corpus in ["rfc4475", "rfc5118"] {
        let files = files_on_disk(corpus).unwrap_or_default();
        for file in files {
            let row = rows
                .iter()
                .find(|r| r.corpus == corpus && r.file == file)
                .map(|r| Row {
                    corpus: r.corpus,
                    file: r.file.clone(),
                    verdict: r.verdict.clone(),
                });
            let name = format!("{corpus}::{}", file.trim_end_matches(".dat"));
            trials.push(Trial::test(name, move || {
                let row = row.ok_or_else(|| format!("{file} is not in the manifest"))?;
                let result = check(&row);
                match (KNOWN_FAILURES.iter().find(|(f, _)| *f == row.file), result) {
                    (None, r) => r.map_err(Failed::from),
                    (Some((_, reason)), Err(_)) => {
                        eprintln!("known failure {}: {reason}", row.file);
                        Ok(())
                    }
                    (Some(_), Ok(())) => Err("passes now: remove it from KNOWN_FAILURES".into()),
                }
            }));
        }
    }
    libtest_mimic::run(&args, trials).exit();
}
