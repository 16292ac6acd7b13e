//! The SDP offer/answer rules (RFC 3264) for one MSRP media line: what our answer says, and
//! who opens the TCP connection afterwards.
//!
//! * `a=setup` (RFC 4145 section 4.1, RFC 6135 section 4.2): an answer is `active` or
//!   `passive`, never `actpass`; `active` gets `passive` and the other way round; `actpass`
//!   gets our preference. An offer without `a=setup` comes from an endpoint that follows RFC
//!   4975's own model, where the offerer connects (RFC 6135 section 1), so it gets `passive`.
//!   RFC 6135 section 4.2.1: "An MSRP UA MUST NOT send the "holdconn" attribute value. If an
//!   MSRP UA receives the "holdconn" attribute value, it MUST ignore it and process the
//!   message as if it did not contain an a=setup attribute": so `holdconn` is not mirrored,
//!   it is answered like an absent `a=setup`. Every answer carries an explicit `a=setup`
//!   (RFC 6135 section 4.2.1: "MUST always include").
//! * Direction (RFC 3264 section 6.1): `sendonly` gets `recvonly` and the other way round.
//! * `a=accept-types` (RFC 4975 section 8.6): what both ends can use; nothing in common is a
//!   488.
//! * File transfer (RFC 5547 section 8.3): the answer repeats the offer's `a=file-selector`,
//!   `a=file-transfer-id` and `a=file-range`.

use cpm_msrp::MsrpUri;
use thiserror::Error;

use crate::file::FileTransfer;
use crate::msrp::{MsrpMedia, Setup};

/// What we put in an answer, and what we accept.
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct AnswerPolicy {
    /// Our `a=path`, first hop first, our own URI last. Its scheme must match the offer's
    /// transport (`msrps` for `TCP/TLS/MSRP`); its first URI's port becomes the m-line port.
    pub path: Vec<MsrpUri>,
    /// The types we accept (`*` for any).
    pub accept_types: Vec<String>,
    /// The types we accept inside a wrapper such as `message/cpim`.
    pub accept_wrapped_types: Vec<String>,
    /// Our role when the offer says `actpass`: [`Setup::Active`] or [`Setup::Passive`]; any
    /// other value means no preference, answered `passive` (RFC 6135 section 4.2.2: the answerer
    /// "SHOULD include an a=setup "passive" attribute value if it knows that it is not located
    /// behind a NAT", as a server is).
    pub prefer: Setup,
    /// Our `a=max-size`.
    pub max_size: Option<u64>,
}

/// Why an offer gets no answer: the SIP status and reason phrase to refuse it with.
#[derive(Clone, Debug, Eq, Error, PartialEq)]
#[error("{status} {reason}")]
pub struct Rejection {
    /// The SIP status code.
    pub status: u16,
    /// The reason phrase.
    pub reason: &'static str,
}

/// RFC 4975 section 8.6: "If the recipient of an offer does not understand any of the payload
/// types indicated in the offered SDP ... in SIP, it SHOULD return a SIP 488 response."
const NOT_ACCEPTABLE: u16 = 488;

/// The discard port an end that only connects puts in its m-line (RFC 4145 section 4).
const DISCARD_PORT: u16 = 9;

/// Our answer to an MSRP media offer, or why we refuse it.
///
/// The answer has no `connection` (the caller's [`crate::Sdp::for_msrp`] writes `c=`) and no
/// other attributes: add `a=msrp-cema` (RFC 6714) or `a=fingerprint` (RFC 4572) when they
/// apply. A disabled offer (port 0) gets port 0 back (RFC 3264 section 6); an `active` answer
/// gets port 9 (RFC 6135 section 4.2.2, after RFC 4145); otherwise the port of our first
/// `a=path` URI, where the peer connects.
pub fn answer(offer: &MsrpMedia, ours: &AnswerPolicy) -> Result<MsrpMedia, Rejection> {
    let Some(own) = ours.path.last() else {
        // A local configuration fault, not the peer's: 500.
        return Err(Rejection {
            status: 500,
            reason: "No local MSRP path",
        });
    };
    // RFC 4975 section 8.1: TCP/TLS/MSRP pairs with msrps URIs.
    if own.is_secure() != offer.secure {
        return Err(Rejection {
            status: NOT_ACCEPTABLE,
            reason: "MSRP transport not offered",
        });
    }
    let accept_types = intersect(&offer.accept_types, &ours.accept_types);
    if accept_types.is_empty() {
        return Err(Rejection {
            status: NOT_ACCEPTABLE,
            reason: "No common accept-types",
        });
    }
    // An offer that names no wrapped types sets no limit to narrow ours to.
    let accept_wrapped_types = if offer.accept_wrapped_types.is_empty() {
        ours.accept_wrapped_types.clone()
    } else {
        intersect(&offer.accept_wrapped_types, &ours.accept_wrapped_types)
    };
    let setup = answer_setup(offer.setup, ours.prefer);
    let port = if offer.port == 0 {
        0
    } else if setup == Setup::Active {
        DISCARD_PORT
    } else {
        ours.path
            .first()
            .and_then(MsrpUri::port)
            .unwrap_or(DISCARD_PORT)
    };
    Ok(MsrpMedia {
        port,
        secure: offer.secure,
        path: ours.path.clone(),
        accept_types,
        accept_wrapped_types,
        setup: Some(setup),
        max_size: ours.max_size,
        direction: offer.direction.reverse(),
        file: offer.file.as_ref().map(echo_file),
        connection: None,
        other: Vec::new(),
    })
}

/// RFC 4145 section 4.1 and RFC 6135 section 4.2: the answer's `a=setup` for an offer's.
fn answer_setup(offer: Option<Setup>, prefer: Setup) -> Setup {
    match offer {
        // An offerer without a=setup (holdconn counts as none) connects itself.
        None | Some(Setup::HoldConn) | Some(Setup::Active) => Setup::Passive,
        // RFC 6135 forbids passive in an offer; answering it is still unambiguous.
        Some(Setup::Passive) => Setup::Active,
        Some(Setup::ActPass) => match prefer {
            Setup::Active => Setup::Active,
            _ => Setup::Passive,
        },
    }
}

/// RFC 5547 section 8.3: the answerer repeats the selector and the transfer id (and the range
/// it accepts); the descriptive attributes stay with the sender.
fn echo_file(f: &FileTransfer) -> FileTransfer {
    FileTransfer {
        selector: f.selector.clone(),
        transfer_id: f.transfer_id.clone(),
        disposition: None,
        date: None,
        icon: None,
        range: f.range,
    }
}

/// `type/subtype`, `type/*` or `*` against a concrete or wildcard type (ASCII case ignored).
/// RFC 4975 section 8.6: "a format-entry with one or more parameters is assumed to match the
/// same format-entry with no parameters".
fn covers(pattern: &str, t: &str) -> bool {
    let bare = |s: &str| s.split(';').next().unwrap_or_default().trim().to_owned();
    let (pattern, t) = (bare(pattern), bare(t));
    if pattern == "*" || pattern.eq_ignore_ascii_case(&t) {
        return true;
    }
    match pattern.strip_suffix("/*") {
        Some(major) => t
            .split_once('/')
            .is_some_and(|(m, _)| m.eq_ignore_ascii_case(major)),
        None => false,
    }
}

/// The types both lists accept, in our order, the narrower of two matching entries kept
/// (ours `text/*` against their `text/plain` gives `text/plain`).
fn intersect(theirs: &[String], ours: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut push = |t: &String| {
        if !out.iter().any(|o| o.eq_ignore_ascii_case(t)) {
            out.push(t.clone());
        }
    };
    for mine in ours {
        for theirs in theirs {
            if covers(theirs, mine) {
                push(mine);
            } else if covers(mine, theirs) {
                push(theirs);
            }
        }
    }
    out
}

/// Whether WE open the TCP connection once an exchange is complete: `local` is the `a=setup`
/// we sent, `remote` the one we received, `None` where absent.
///
/// Absent means RFC 4975's own model, "the MSRP UA that sends the SDP offer is "active""
/// (RFC 6135 section 1, matching RFC 4145's defaults): `active` in an offer, `passive` in an
/// answer; a received `holdconn` counts as absent (RFC 6135 section 4.2.1). The answer decides
/// (RFC 4145 section 4.1): `active` or `passive` there settles it; an (invalid) `actpass`
/// answer leaves the offerer to connect unless it offered `passive`.
///
/// RFC 6135 section 4.5: an end behind an MSRP relay connects to its relay whatever this says;
/// this answers only who connects to whom end to end.
pub fn connects(
    local: impl Into<Option<Setup>>,
    remote: impl Into<Option<Setup>>,
    we_offered: bool,
) -> bool {
    // RFC 6135 section 4.2.1: holdconn is processed as if a=setup were absent.
    let heard = |s: Option<Setup>| s.filter(|s| *s != Setup::HoldConn);
    let (local, remote) = (heard(local.into()), heard(remote.into()));
    let (offer, answer) = if we_offered {
        (local, remote)
    } else {
        (remote, local)
    };
    let offer = offer.unwrap_or(Setup::Active);
    let answer = answer.unwrap_or(Setup::Passive);
    let offerer_connects = match answer {
        Setup::Active => false,
        // HoldConn was filtered out above.
        Setup::Passive | Setup::HoldConn => true,
        Setup::ActPass => offer != Setup::Passive,
    };
    offerer_connects == we_offered
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::file::FileSelector;
    use crate::msrp::Direction;

    fn uri(s: &str) -> MsrpUri {
        s.parse().unwrap()
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    fn offer() -> MsrpMedia {
        MsrpMedia {
            port: 7394,
            secure: false,
            path: vec![uri("msrp://alice.example.com:7394/2s93i9ek2a;tcp")],
            accept_types: strings(&["message/cpim", "text/plain", "text/html"]),
            accept_wrapped_types: Vec::new(),
            setup: Some(Setup::ActPass),
            max_size: None,
            direction: Direction::SendRecv,
            file: None,
            connection: None,
            other: Vec::new(),
        }
    }

    fn policy() -> AnswerPolicy {
        AnswerPolicy {
            path: vec![uri("msrp://bob.example.com:8493/si438dsaodes;tcp")],
            accept_types: strings(&["message/cpim", "text/plain"]),
            accept_wrapped_types: strings(&["text/plain", "message/imdn+xml"]),
            prefer: Setup::Passive,
            max_size: Some(1024),
        }
    }

    #[test]
    fn answer_takes_our_path_and_common_types() {
        let a = answer(&offer(), &policy()).unwrap();
        assert_eq!(a.port, 8493);
        assert_eq!(a.path, policy().path);
        assert_eq!(a.accept_types, strings(&["message/cpim", "text/plain"]));
        assert_eq!(a.accept_wrapped_types, policy().accept_wrapped_types);
        assert_eq!(a.max_size, Some(1024));
        assert_eq!(a.setup, Some(Setup::Passive));
        assert!(!a.secure);
    }

    /// Offer setup × our preference → answer setup, and who connects seen from both ends.
    #[test]
    fn setup_negotiation_table() {
        use Setup::*;
        // (offer, prefer, answer, offerer connects, answerer connects)
        let table = [
            (Some(ActPass), Active, Active, false, true),
            (Some(ActPass), Passive, Passive, true, false),
            (Some(ActPass), ActPass, Passive, true, false),
            (Some(Active), Active, Passive, true, false),
            (Some(Active), Passive, Passive, true, false),
            (Some(Passive), Active, Active, false, true),
            (Some(Passive), Passive, Active, false, true),
            // RFC 6135 section 4.2.1: a received holdconn is an absent a=setup.
            (Some(HoldConn), Active, Passive, true, false),
            (Some(HoldConn), Passive, Passive, true, false),
            (None, Active, Passive, true, false),
            (None, Passive, Passive, true, false),
        ];
        for (offered, prefer, expect, offerer, answerer) in table {
            let mut o = offer();
            o.setup = offered;
            let p = AnswerPolicy { prefer, ..policy() };
            let a = answer(&o, &p).unwrap();
            assert_eq!(a.setup, Some(expect), "{offered:?} x {prefer:?}");
            assert!(matches!(a.setup, Some(Active | Passive)));
            assert_eq!(a.port, if expect == Active { 9 } else { 8493 });
            assert_eq!(
                connects(offered, a.setup, true),
                offerer,
                "{offered:?} x {prefer:?}"
            );
            assert_eq!(
                connects(a.setup, offered, false),
                answerer,
                "{offered:?} x {prefer:?}"
            );
        }
    }

    #[test]
    fn connects_with_absent_attributes_follows_rfc_4975() {
        // Neither side sent a=setup: the offerer connects (RFC 4975 section 5.4).
        assert!(connects(None, None, true));
        assert!(!connects(None, None, false));
        // We offered actpass, the answer (an RFC 4975-only peer) has none: it is passive.
        assert!(connects(Setup::ActPass, None, true));
        // An invalid actpass answer: the offerer connects unless it offered passive.
        assert!(connects(Setup::ActPass, Setup::ActPass, true));
        assert!(!connects(Setup::Passive, Setup::ActPass, true));
        assert!(connects(Setup::ActPass, Setup::Passive, false));
        // holdconn counts as absent: the offerer connects.
        assert!(!connects(Setup::HoldConn, Setup::HoldConn, false));
        assert!(connects(Setup::HoldConn, None, true));
    }

    #[test]
    fn direction_is_mirrored() {
        for (offered, expect) in [
            (Direction::SendOnly, Direction::RecvOnly),
            (Direction::RecvOnly, Direction::SendOnly),
            (Direction::SendRecv, Direction::SendRecv),
            (Direction::Inactive, Direction::Inactive),
        ] {
            let mut o = offer();
            o.direction = offered;
            assert_eq!(answer(&o, &policy()).unwrap().direction, expect);
        }
    }

    #[test]
    fn accept_types_intersection() {
        let cases: &[(&[&str], &[&str], &[&str])] = &[
            (
                &["*"],
                &["message/cpim", "text/plain"],
                &["message/cpim", "text/plain"],
            ),
            (&["message/cpim"], &["*"], &["message/cpim"]),
            (&["text/*"], &["text/plain", "image/png"], &["text/plain"]),
            (
                &["text/plain", "text/html"],
                &["text/*"],
                &["text/plain", "text/html"],
            ),
            (&["TEXT/PLAIN"], &["text/plain"], &["text/plain"]),
            (&["*"], &["*"], &["*"]),
            (
                &["text/plain;charset=utf-8"],
                &["text/plain"],
                &["text/plain"],
            ),
            (
                &["text/plain"],
                &["text/plain;charset=utf-8"],
                &["text/plain;charset=utf-8"],
            ),
        ];
        for (theirs, ours, expect) in cases {
            assert_eq!(intersect(&strings(theirs), &strings(ours)), strings(expect));
        }
    }

    #[test]
    fn nothing_in_common_is_488() {
        let mut o = offer();
        o.accept_types = strings(&["image/png"]);
        let r = answer(&o, &policy()).unwrap_err();
        assert_eq!(r.status, 488);
        assert_eq!(r.to_string(), "488 No common accept-types");
    }

    #[test]
    fn wrapped_types_narrow_only_when_offered() {
        let mut o = offer();
        o.accept_wrapped_types = strings(&["text/plain", "image/jpeg"]);
        assert_eq!(
            answer(&o, &policy()).unwrap().accept_wrapped_types,
            strings(&["text/plain"])
        );
    }

    #[test]
    fn secure_is_kept_and_must_match_our_path() {
        let mut o = offer();
        o.secure = true;
        assert_eq!(answer(&o, &policy()).unwrap_err().status, 488);
        let p = AnswerPolicy {
            path: vec![uri("msrps://bob.example.com:8493/si438dsaodes;tcp")],
            ..policy()
        };
        assert!(answer(&o, &p).unwrap().secure);
        let empty = AnswerPolicy {
            path: Vec::new(),
            ..policy()
        };
        assert_eq!(answer(&o, &empty).unwrap_err().status, 500);
    }

    #[test]
    fn port_zero_and_portless_paths() {
        let mut o = offer();
        o.port = 0;
        assert_eq!(answer(&o, &policy()).unwrap().port, 0);
        let p = AnswerPolicy {
            path: vec![uri("msrp://bob.example.com/s;tcp")],
            ..policy()
        };
        assert_eq!(answer(&offer(), &p).unwrap().port, 9);
    }

    #[test]
    fn file_attributes_are_echoed() {
        let mut o = offer();
        o.direction = Direction::SendOnly;
        o.file = Some(FileTransfer {
            selector: FileSelector {
                name: Some("a.jpg".into()),
                media_type: Some("image/jpeg".into()),
                size: Some(10),
                hash: None,
            },
            transfer_id: Some("t1".into()),
            disposition: Some("attachment".into()),
            date: Some("creation:\"Mon, 15 May 2006 15:01:31 +0300\"".into()),
            icon: Some("cid:x@y".into()),
            range: Some((1, Some(10))),
        });
        let a = answer(&o, &policy()).unwrap();
        let f = a.file.unwrap();
        assert_eq!(f.selector, o.file.as_ref().unwrap().selector);
        assert_eq!(f.transfer_id.as_deref(), Some("t1"));
        assert_eq!(f.range, Some((1, Some(10))));
        assert_eq!((f.disposition, f.date, f.icon), (None, None, None));
        assert_eq!(a.direction, Direction::RecvOnly);
    }
}
