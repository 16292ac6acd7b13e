//! What a receiver owes the sender: transaction responses (RFC 4975 section 7.2) and REPORTs
//! (section 7.1.2 and 7.1.3).
//!
//! * A response goes back for every request but REPORT, unless `Failure-Report: no` (no
//!   response at all) or `Failure-Report: partial` and the response would be a `200`.
//! * A success REPORT is due when the SEND asked `Success-Report: yes` and the whole message
//!   has arrived ([`crate::Progress::Complete`]); its Byte-Range covers the whole message.
//! * A failure REPORT is due for a failure that no transaction response carries back (a relay
//!   whose next hop timed out, a message refused after its chunks were acknowledged), unless
//!   `Failure-Report: no`; `yes` (the default) and `partial` both want it.
//! * A REPORT is never answered, and carries Message-ID, Byte-Range and Status.
//!
//! Acknowledging is the caller's decision: a `200` or success REPORT for a message goes out only
//! after the store has it (ARCHITECTURE.md, rule 3).

use crate::header::{ByteRange, FailureReport, Header, Headers, Status};
use crate::message::{Method, Request, Response, TransactId};
use crate::status::{Error, StatusCode};

/// The response to `request` with this code, or `None` when none may be sent
/// (RFC 4975 section 7.2: REPORT, `Failure-Report: no`, or `partial` and a `200`).
///
/// The response goes back one hop: its To-Path is the first From-Path URI (the previous hop)
/// and its From-Path the last To-Path URI (this endpoint).
pub fn response(request: &Request, status: StatusCode) -> Option<Response> {
    response_with(request, status.code(), Some(status.comment()))
}

/// [`response`] with any code and comment.
pub fn response_with(request: &Request, code: u16, comment: Option<&str>) -> Option<Response> {
    if !response_due(request, code) {
        return None;
    }
    let h = &request.headers;
    let headers = Headers::new(
        h.from_path().first().cloned().into_iter().collect(),
        h.to_path().last().cloned().into_iter().collect(),
    )
    .ok()?;
    Some(Response {
        transact_id: request.transact_id.clone(),
        status: code,
        comment: comment.map(str::to_owned),
        headers,
    })
}

/// The response to a request that failed with `error`, if one may be sent.
pub fn error_response(request: &Request, error: &Error) -> Option<Response> {
    response(request, error.status_code())
}

/// Whether a response with this code may be sent to `request` (RFC 4975 section 7.2).
pub fn response_due(request: &Request, code: u16) -> bool {
    if request.method == Method::Report {
        return false;
    }
    match request.headers.failure_report() {
        FailureReport::Yes => true,
        FailureReport::No => false,
        FailureReport::Partial => code != 200,
    }
}

/// The success REPORT for a message of `total` octets whose last chunk is `send`, when it
/// asked for one (`Success-Report: yes`, RFC 4975 section 7.1.2). `transact_id` is new (the
/// caller's generator: this crate has no randomness).
pub fn success_report(send: &Request, total: u64, transact_id: TransactId) -> Option<Request> {
    if send.method != Method::Send || !send.headers.success_report() {
        return None;
    }
    report(send, ByteRange::whole(total), StatusCode::Ok, transact_id)
}

/// The failure REPORT for the octets `range` of the message `send` belongs to, unless it asked
/// for none (`Failure-Report: no`; RFC 4975 section 7.1.2). `status` is the failure (never
/// `200`: that is [`success_report`]).
pub fn failure_report(
    send: &Request,
    range: ByteRange,
    status: StatusCode,
    transact_id: TransactId,
) -> Option<Request> {
    if send.method != Method::Send
        || status == StatusCode::Ok
        || send.headers.failure_report() == FailureReport::No
    {
        return None;
    }
    report(send, range, status, transact_id)
}

/// A REPORT about `send` (RFC 4975 section 7.1.2): To-Path is the SEND's From-Path (back to the
/// sender, relays included), From-Path this endpoint (the SEND's last To-Path URI), the same
/// Message-ID, the range reported, and `Status: 000 <code> <comment>`.
fn report(
    send: &Request,
    range: ByteRange,
    status: StatusCode,
    transact_id: TransactId,
) -> Option<Request> {
    let h = &send.headers;
    let mut headers = Headers::new(
        h.from_path().to_vec(),
        h.to_path().last().cloned().into_iter().collect(),
    )
    .ok()?;
    headers.set(Header::MessageId(h.message_id()?.to_owned()));
    headers.set(Header::ByteRange(range));
    headers.set(Header::Status(Status::new(
        status.code(),
        Some(status.comment()),
    )));
    Some(Request {
        transact_id,
        method: Method::Report,
        headers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{Head, Message};

    fn send(extra: &str) -> Request {
        let text = format!(
            "MSRP d93kswow SEND\r\n\
             To-Path: msrp://bob.example.com:8888/9di4eae923wzd;tcp\r\n\
             From-Path: msrp://alicepc.example.com:7777/iau39soe2843z;tcp\r\n\
             Message-ID: 12339sdqwer\r\n{extra}-------d93kswow$\r\n"
        );
        match Message::parse(text.as_bytes()).unwrap().head {
            Head::Request(r) => r,
            Head::Response(_) => panic!("response"),
        }
    }

    fn tid(s: &str) -> TransactId {
        TransactId::new(s).unwrap()
    }

    #[test]
    fn responses_follow_failure_report() {
        let ok = response(&send(""), StatusCode::Ok).unwrap();
        let bytes = Message {
            head: Head::Response(ok),
            body: None,
            flag: crate::Flag::Complete,
        }
        .to_bytes()
        .unwrap();
        assert_eq!(
            &bytes[..],
            &b"MSRP d93kswow 200 OK\r\n\
               To-Path: msrp://alicepc.example.com:7777/iau39soe2843z;tcp\r\n\
               From-Path: msrp://bob.example.com:8888/9di4eae923wzd;tcp\r\n\
               -------d93kswow$\r\n"[..]
        );
        let no = send("Failure-Report: no\r\n");
        assert!(response(&no, StatusCode::Ok).is_none());
        assert!(response(&no, StatusCode::MessageTooLarge).is_none());
        let partial = send("Failure-Report: partial\r\n");
        assert!(response(&partial, StatusCode::Ok).is_none());
        let e = Error::new(crate::ErrorKind::UnsupportedMediaType);
        assert_eq!(error_response(&partial, &e).unwrap().status, 415);
    }

    #[test]
    fn reports_are_never_answered() {
        let r = success_report(&send("Success-Report: yes\r\n"), 106, tid("dkei38sd")).unwrap();
        assert!(response(&r, StatusCode::Ok).is_none());
        assert!(response(&r, StatusCode::BadRequest).is_none());
    }

    #[test]
    fn success_report_only_when_asked() {
        assert!(success_report(&send(""), 16, tid("abcd")).is_none());
        assert!(success_report(&send("Success-Report: no\r\n"), 16, tid("abcd")).is_none());
        let r = success_report(&send("Success-Report: yes\r\n"), 106, tid("dkei38sd")).unwrap();
        // RFC 4975 section 7.1's REPORT, field for field.
        let bytes = Message {
            head: Head::Request(r),
            body: None,
            flag: crate::Flag::Complete,
        }
        .to_bytes()
        .unwrap();
        assert_eq!(
            &bytes[..],
            &b"MSRP dkei38sd REPORT\r\n\
               To-Path: msrp://alicepc.example.com:7777/iau39soe2843z;tcp\r\n\
               From-Path: msrp://bob.example.com:8888/9di4eae923wzd;tcp\r\n\
               Message-ID: 12339sdqwer\r\n\
               Byte-Range: 1-106/106\r\n\
               Status: 000 200 OK\r\n\
               -------dkei38sd$\r\n"[..]
        );
    }

    #[test]
    fn failure_report_unless_no() {
        let range = ByteRange {
            start: 1,
            end: Some(10),
            total: Some(50),
        };
        let code = StatusCode::RequestTimeout;
        for (extra, due) in [
            ("", true),
            ("Failure-Report: yes\r\n", true),
            ("Failure-Report: partial\r\n", true),
            ("Failure-Report: no\r\n", false),
        ] {
            let r = failure_report(&send(extra), range, code, tid("abcd"));
            assert_eq!(r.is_some(), due, "{extra}");
            if let Some(r) = r {
                assert_eq!(
                    r.headers.status(),
                    Some(&Status::new(408, Some("Request Timeout")))
                );
                assert_eq!(r.headers.byte_range(), Some(range));
            }
        }
        assert!(failure_report(&send(""), range, StatusCode::Ok, tid("abcd")).is_none());
    }
}
