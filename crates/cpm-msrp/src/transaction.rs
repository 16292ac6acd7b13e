//! Client-side transactions: requests we sent that wait for their response, matched by
//! transact-id, each with a deadline (RFC 4975 section 7.1.1: a sender that gets no response
//! in time, 30 seconds suggested, treats the transaction as failed with a `408`).
//!
//! Sans-IO: time comes in as `now`; [`Transactions::poll_timeout`] is the next deadline,
//! [`Transactions::handle_timeout`] fires what is due (an early call does nothing), and
//! [`Transactions::poll_outcome`] hands out what happened.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::time::{Duration, Instant};

use crate::header::FailureReport;
use crate::message::{Method, Request, Response, TransactId};
use crate::status::{Error, StatusCode};

/// Transaction settings.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub struct TransactionConfig {
    /// How long a request waits for its response.
    pub timeout: Duration,
}

impl Default for TransactionConfig {
    /// The 30 seconds RFC 4975 section 7.1.1 suggests.
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(30),
        }
    }
}

/// How a transaction ended.
#[derive(Clone, Debug, Eq, PartialEq)]
pub enum Outcome {
    /// The response arrived.
    Response {
        /// The transaction.
        transact_id: TransactId,
        /// The request's Message-ID, if it had one.
        message_id: Option<String>,
        /// The response's code.
        status: u16,
        /// The response's comment.
        comment: Option<String>,
    },
    /// No response in time: a `408` the sender reports to itself (RFC 4975 section 7.1.1).
    TimedOut {
        /// The transaction.
        transact_id: TransactId,
        /// The request's Message-ID, if it had one.
        message_id: Option<String>,
    },
    /// The request said `Failure-Report: partial`, so only a failure would have been
    /// answered, and none came in time: no news, which is good news.
    Quiet {
        /// The transaction.
        transact_id: TransactId,
        /// The request's Message-ID, if it had one.
        message_id: Option<String>,
    },
}

impl Outcome {
    /// The transaction.
    pub fn transact_id(&self) -> &TransactId {
        match self {
            Self::Response { transact_id, .. }
            | Self::TimedOut { transact_id, .. }
            | Self::Quiet { transact_id, .. } => transact_id,
        }
    }

    /// The status the transaction ended with: the response's, `408` for a timeout, `None`
    /// when a `partial` request heard nothing.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Response { status, .. } => Some(*status),
            Self::TimedOut { .. } => Some(StatusCode::RequestTimeout.code()),
            Self::Quiet { .. } => None,
        }
    }
}

#[derive(Debug)]
struct Pending {
    deadline: Instant,
    message_id: Option<String>,
    partial: bool,
}

/// The client transactions of one connection or session.
#[derive(Debug, Default)]
pub struct Transactions {
    config: TransactionConfig,
    pending: HashMap<TransactId, Pending>,
    deadlines: BTreeSet<(Instant, TransactId)>,
    outcomes: VecDeque<Outcome>,
}

impl Transactions {
    /// No transaction yet.
    pub fn new(config: TransactionConfig) -> Self {
        Self {
            config,
            ..Self::default()
        }
    }

    /// Transactions waiting for a response.
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    /// Whether none is waiting.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Records that `request` was sent at `now`. Returns whether a response is awaited: not
    /// for a REPORT (never answered) nor for `Failure-Report: no` (RFC 4975 section 7.2).
    /// A transact-id already waiting is refused (400): transact-ids must be unique.
    pub fn start(&mut self, now: Instant, request: &Request) -> Result<bool, Error> {
        let failure_report = request.headers.failure_report();
        if request.method == Method::Report || failure_report == FailureReport::No {
            return Ok(false);
        }
        if self.pending.contains_key(&request.transact_id) {
            return Err(Error::syntax("transact-id (already in use)"));
        }
        let deadline = now + self.config.timeout;
        self.deadlines
            .insert((deadline, request.transact_id.clone()));
        self.pending.insert(
            request.transact_id.clone(),
            Pending {
                deadline,
                message_id: request.headers.message_id().map(str::to_owned),
                partial: failure_report == FailureReport::Partial,
            },
        );
        Ok(true)
    }

    /// Matches a response to its transaction. Returns `false` for a response nothing waits
    /// for (late, duplicate or stray): the caller drops it.
    pub fn handle_response(&mut self, _now: Instant, response: &Response) -> bool {
        let Some(p) = self.pending.remove(&response.transact_id) else {
            return false;
        };
        self.deadlines
            .remove(&(p.deadline, response.transact_id.clone()));
        self.outcomes.push_back(Outcome::Response {
            transact_id: response.transact_id.clone(),
            message_id: p.message_id,
            status: response.status,
            comment: response.comment.clone(),
        });
        true
    }

    /// Forgets a transaction without an outcome (the session is closing).
    pub fn cancel(&mut self, transact_id: &TransactId) {
        if let Some(p) = self.pending.remove(transact_id) {
            self.deadlines.remove(&(p.deadline, transact_id.clone()));
        }
    }

    /// The earliest deadline, if any transaction waits.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.deadlines.first().map(|(d, _)| *d)
    }

    /// Ends every transaction whose deadline is at or before `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some((deadline, _)) = self.deadlines.first() {
            if *deadline > now {
                break;
            }
            let Some((_, id)) = self.deadlines.pop_first() else {
                break;
            };
            let Some(p) = self.pending.remove(&id) else {
                continue;
            };
            self.outcomes.push_back(if p.partial {
                Outcome::Quiet {
                    transact_id: id,
                    message_id: p.message_id,
                }
            } else {
                Outcome::TimedOut {
                    transact_id: id,
                    message_id: p.message_id,
                }
            });
        }
    }

    /// The next outcome, in the order they happened.
    pub fn poll_outcome(&mut self) -> Option<Outcome> {
        self.outcomes.pop_front()
    }
}

#[cfg(test)]
mod tests {
    // Tests need some instant to start virtual time from.
    #![allow(clippy::disallowed_methods)]

    use super::*;
    use crate::header::{Header, Headers};

    fn request(tid: &str, method: Method, failure: Option<FailureReport>) -> Request {
        let u: crate::MsrpUri = "msrp://a:1/x;tcp".parse().unwrap();
        let mut headers = Headers::new(vec![u.clone()], vec![u]).unwrap();
        headers.set(Header::MessageId("m123".into()));
        if let Some(f) = failure {
            headers.set(Header::FailureReport(f));
        }
        Request {
            transact_id: TransactId::new(tid).unwrap(),
            method,
            headers,
        }
    }

    fn answer(r: &Request, status: u16) -> Response {
        crate::report::response_with(r, status, None).unwrap_or_else(|| Response {
            transact_id: r.transact_id.clone(),
            status,
            comment: None,
            headers: r.headers.clone(),
        })
    }

    #[test]
    fn responses_match_by_transact_id() {
        let t0 = Instant::now();
        let mut tx = Transactions::default();
        let a = request("aaaa", Method::Send, None);
        let b = request("bbbb", Method::Send, None);
        assert!(tx.start(t0, &a).unwrap());
        assert!(tx.start(t0 + Duration::from_secs(1), &b).unwrap());
        assert!(tx.start(t0, &a).is_err());
        assert_eq!(tx.poll_timeout(), Some(t0 + Duration::from_secs(30)));
        assert!(tx.handle_response(t0, &answer(&b, 200)));
        assert!(!tx.handle_response(t0, &answer(&b, 200)));
        let o = tx.poll_outcome().unwrap();
        assert_eq!((o.transact_id().as_str(), o.status()), ("bbbb", Some(200)));
        assert!(tx.poll_outcome().is_none());
        assert_eq!(tx.len(), 1);
    }

    #[test]
    fn silence_times_out_with_408() {
        let t0 = Instant::now();
        let mut tx = Transactions::new(TransactionConfig {
            timeout: Duration::from_secs(5),
        });
        tx.start(t0, &request("aaaa", Method::Send, None)).unwrap();
        tx.start(
            t0,
            &request("pppp", Method::Send, Some(FailureReport::Partial)),
        )
        .unwrap();
        // A spurious early wake-up does nothing.
        tx.handle_timeout(t0 + Duration::from_secs(4));
        assert!(tx.poll_outcome().is_none());
        let deadline = tx.poll_timeout().unwrap();
        assert_eq!(deadline, t0 + Duration::from_secs(5));
        tx.handle_timeout(deadline);
        let mut got: Vec<(String, Option<u16>)> = std::iter::from_fn(|| tx.poll_outcome())
            .map(|o| (o.transact_id().to_string(), o.status()))
            .collect();
        got.sort();
        assert_eq!(
            got,
            [("aaaa".to_owned(), Some(408)), ("pppp".to_owned(), None)]
        );
        assert!(tx.is_empty());
        assert_eq!(tx.poll_timeout(), None);
    }

    #[test]
    fn unanswered_requests_are_not_tracked() {
        let t0 = Instant::now();
        let mut tx = Transactions::default();
        assert!(
            !tx.start(t0, &request("rrrr", Method::Report, None))
                .unwrap()
        );
        assert!(
            !tx.start(t0, &request("nnnn", Method::Send, Some(FailureReport::No)))
                .unwrap()
        );
        assert!(tx.is_empty());
        let a = request("aaaa", Method::Send, None);
        tx.start(t0, &a).unwrap();
        tx.cancel(&a.transact_id);
        tx.handle_timeout(t0 + Duration::from_secs(60));
        assert!(tx.poll_outcome().is_none());
    }
}
