//! RFC 3261 section 17 transactions (with the RFC 6026 Accepted states), sans-IO.
//!
//! # Driver contract
//!
//! The [`TransactionLayer`] sits between the transport driver and a transaction user (TU: the
//! proxy, a user agent). Everything happens in calls that take `now`:
//!
//! 1. A received request goes to [`TransactionLayer::handle_request`]. It answers what it was:
//!    a [`RequestDisposition::New`] server transaction the TU must answer with
//!    [`TransactionLayer::respond`], a retransmission the layer absorbed (re-sending the last
//!    response), an ACK that ended a failed INVITE transaction, or a [`RequestDisposition::Stray`]
//!    request outside any transaction (the ACK for a 2xx, which a proxy forwards).
//! 2. A received response goes to [`TransactionLayer::handle_response`]: passed to the TU with
//!    its client transaction, absorbed (a retransmission of a final response), or stray.
//! 3. The TU sends requests with [`TransactionLayer::send_request`] (a client transaction that
//!    retransmits over UDP until answered) and cancels INVITEs with
//!    [`TransactionLayer::cancel`].
//! 4. After every call the driver drains [`TransactionLayer::poll_transmit`] and
//!    [`TransactionLayer::poll_event`] until both are `None`, then sleeps until
//!    [`TransactionLayer::poll_timeout`] and calls [`TransactionLayer::handle_timeout`].
//!
//! Timers are data: each transaction has a retransmission deadline (A, E, G) and a state
//! deadline (B, D, F, H, I, L, M), indexed in one ordered set. A spurious `handle_timeout`
//! does nothing.
//!
//! A non-INVITE transaction that completes (its final response sent or received) keeps only
//! what absorbing retransmissions needs until Timer J or K, in the compact store of the
//! `completed` module, where those timers are FIFO queues; on reliable transports both timers
//! are zero (RFC 3261 sections 17.1.2.2, 17.2.2) and the transaction ends at once.

use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap, VecDeque};

use foldhash::fast::FixedState;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cpm_sip::{
    CSeq, Header, HeaderName, Message, Method, NameAddr, Request, Response, StatusCode, Via,
};

use crate::transport::{Handoff, Peer, Transmit, TransportKind};

mod completed;

use completed::{Fifo, Fingerprinter, Resend};

/// The RFC 3261 branch prefix of transaction identifiers (section 8.1.1.7).
pub const MAGIC_COOKIE: &str = "z9hG4bK";

/// Timer base values (RFC 3261 section 17.1.1.1, table 4).
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub struct TimerConfig {
    /// RTT estimate, 500 ms.
    pub t1: Duration,
    /// Longest retransmit interval for non-INVITE requests and INVITE responses, 4 s.
    pub t2: Duration,
    /// Longest time a message stays in the network, 5 s.
    pub t4: Duration,
}

impl Default for TimerConfig {
    fn default() -> Self {
        Self {
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            t4: Duration::from_secs(5),
        }
    }
}

/// How a method takes part in transaction matching: ACK matches the INVITE transaction
/// (RFC 3261 section 17.2.3), CANCEL has a transaction of its own.
#[derive(Clone, Debug, Eq, Hash, PartialEq)]
enum KeyMethod {
    Invite,
    Cancel,
    Other(String),
}

impl KeyMethod {
    fn of(method: &Method) -> Self {
        match method {
            Method::Invite | Method::Ack => Self::Invite,
            Method::Cancel => Self::Cancel,
            m => Self::Other(m.as_str().to_owned()),
        }
    }
}

/// Identifies a server transaction: the top Via branch and sent-by, and the method
/// (RFC 3261 section 17.2.3), or for RFC 2543 requests (no magic cookie) the older fields.
#[derive(Clone, Debug, Eq, Hash, PartialEq)]
pub struct ServerKey {
    branch: String,
    sent_by: String,
    method: KeyMethod,
}

/// Identifies a client transaction: the branch we put in the top Via and the CSeq method
/// (RFC 3261 section 17.1.3).
#[derive(Clone, Debug, Eq, Hash, PartialEq)]
pub struct ClientKey {
    branch: String,
    method: KeyMethod,
}

impl ClientKey {
    /// The branch of the transaction's Via.
    pub fn branch(&self) -> &str {
        &self.branch
    }
}

/// The request could not be matched to a transaction: no usable top Via or CSeq.
#[derive(Clone, Copy, Debug, Eq, PartialEq, thiserror::Error)]
#[error("request without a usable top Via or CSeq")]
pub struct KeyError;

/// The TU called the layer with a key it does not hold (already terminated), or out of order.
#[derive(Clone, Copy, Debug, Eq, PartialEq, thiserror::Error)]
#[error("no such transaction in a state that allows this")]
pub struct NoTransaction;

/// What a received request is.
#[derive(Clone, Debug, Eq, PartialEq)]
pub enum RequestDisposition {
    /// A new server transaction: the TU must answer it (RFC 3261 section 17.2).
    New(ServerKey),
    /// A retransmission of a request in a live transaction: absorbed (the last response,
    /// if any, was sent again).
    Retransmission,
    /// An ACK for a non-2xx final response of an INVITE server transaction: absorbed.
    AckAbsorbed,
    /// Not part of any transaction: an ACK for a 2xx (end to end, RFC 3261 section 17.1.1.3).
    /// A proxy forwards it statelessly; a UA hands it to its dialog.
    Stray,
}

/// What a received response is.
#[derive(Clone, Debug, Eq, PartialEq)]
pub enum ResponseDisposition {
    /// For the TU: the response of one of its client transactions.
    Pass(ClientKey),
    /// A retransmission of a final response the TU already has: absorbed (for INVITE the ACK
    /// was sent again).
    Absorbed,
    /// No client transaction matches (RFC 3261 section 18.1.2): a proxy forwards it
    /// statelessly (section 16.7), a UA drops it.
    Stray,
}

/// Something the TU must learn about outside a direct answer.
#[derive(Clone, Debug, Eq, PartialEq)]
pub enum TxEvent {
    /// Timer B or F fired with no final response: the TU acts as if a 408 arrived
    /// (RFC 3261 sections 17.1.1.2, 17.1.2.2, 16.8).
    Timeout(ClientKey),
    /// A CANCEL the TU asked for was sent (the INVITE had a provisional response).
    CancelSent(ClientKey),
    /// Timer H fired: the ACK for a failure response to an INVITE never came.
    AckTimeout(ServerKey),
}

#[derive(Clone, Copy, Debug, Eq, PartialEq)]
enum State {
    /// Client: INVITE sent, nothing back yet (RFC 3261 figure 5). Server: non-INVITE received.
    Calling,
    Trying,
    Proceeding,
    Completed,
    Confirmed,
    /// RFC 6026: a 2xx was sent or received for an INVITE.
    Accepted,
    Terminated,
}

#[derive(Debug)]
struct Tx {
    server: bool,
    invite: bool,
    state: State,
    peer: Peer,
    /// Client: the request (retransmitted, and the model for ACK and CANCEL), until the final
    /// response. Server: unused.
    request: Option<Request>,
    /// What a retransmission sends: the request bytes (client) or the last response (server).
    wire: Option<Bytes>,
    /// The ACK sent for a non-2xx final (client INVITE), re-sent on response retransmissions.
    ack: Option<Bytes>,
    retransmit_at: Option<Instant>,
    interval: Duration,
    state_deadline: Option<Instant>,
    scheduled: Option<Instant>,
    /// Client INVITE: the TU asked to cancel before any provisional response arrived.
    cancel_pending: bool,
    server_key: Option<ServerKey>,
    client_key: Option<ClientKey>,
}

/// A hash map with a fast seeded hasher: keys come from the network, so the seed (from the
/// element's configuration, random in production) keeps collisions unpredictable, while a
/// simulation with a fixed seed stays deterministic.
type Map<K, V> = HashMap<K, V, FixedState>;

/// All transactions of one SIP element.
#[derive(Debug)]
pub struct TransactionLayer {
    config: TimerConfig,
    next_id: u64,
    /// Boxed: when the map grows it moves pointers, not whole transactions (a resize with
    /// hundreds of thousands of live transactions must not stall the loop).
    txs: Map<u64, Box<Tx>>,
    servers: Map<ServerKey, u64>,
    clients: Map<ClientKey, u64>,
    timers: BTreeSet<(Instant, u64)>,
    /// Fingerprints of the keys of completed non-INVITE transactions.
    fingerprints: Fingerprinter,
    /// Completed non-INVITE server transactions over UDP, until Timer J.
    completed_servers: Fifo<Resend>,
    /// Completed non-INVITE client transactions over UDP, until Timer K.
    completed_clients: Fifo<()>,
    transmits: VecDeque<Transmit>,
    /// Messages for functions of the same node ([`TransportKind::Local`] peers).
    handoffs: VecDeque<Handoff>,
    events: VecDeque<TxEvent>,
}

fn sent_by(via: &Via) -> String {
    match via.port {
        Some(p) => format!("{}:{p}", via.host).to_ascii_lowercase(),
        None => via.host.to_string().to_ascii_lowercase(),
    }
}

fn server_key(req: &Request) -> Result<ServerKey, KeyError> {
    let via = req.headers.top_via().ok().flatten().ok_or(KeyError)?;
    let method = KeyMethod::of(&req.method);
    match via.branch() {
        Some(b) if b.starts_with(MAGIC_COOKIE) && b.len() > MAGIC_COOKIE.len() => Ok(ServerKey {
            branch: b.to_owned(),
            sent_by: sent_by(&via),
            method,
        }),
        // RFC 2543 peer (no cookie, or the bare cookie as in RFC 4475 section 3.2.1): match on
        // Call-ID, CSeq number, From tag and the top Via (section 17.2.3, last paragraph).
        _ => {
            let call_id = req.headers.call_id().ok().flatten().ok_or(KeyError)?;
            let cseq = req.headers.cseq().ok().flatten().ok_or(KeyError)?;
            let from_tag = req
                .headers
                .from()
                .ok()
                .flatten()
                .and_then(|f| f.tag().map(str::to_owned))
                .unwrap_or_default();
            Ok(ServerKey {
                branch: format!("2543|{}|{}|{from_tag}|{via}", call_id, cseq.seq),
                sent_by: sent_by(&via),
                method,
            })
        }
    }
}

fn client_key_of_response(resp: &Response) -> Option<ClientKey> {
    let via = resp.headers.top_via().ok().flatten()?;
    let cseq = resp.headers.cseq().ok().flatten()?;
    Some(ClientKey {
        branch: via.branch()?.to_owned(),
        method: KeyMethod::of(&cseq.method),
    })
}

impl TransactionLayer {
    /// A layer with these timer values.
    pub fn new(config: TimerConfig) -> Self {
        Self::with_seed(config, 0)
    }

    /// A layer whose hash maps use this seed (take it from the element's seeded RNG).
    pub fn with_seed(config: TimerConfig, seed: u64) -> Self {
        let state = FixedState::with_seed(seed);
        Self {
            config,
            next_id: 0,
            txs: HashMap::with_hasher(state),
            servers: HashMap::with_hasher(state),
            clients: HashMap::with_hasher(state),
            timers: BTreeSet::new(),
            fingerprints: Fingerprinter::new(seed),
            completed_servers: Fifo::new(state),
            completed_clients: Fifo::new(state),
            transmits: VecDeque::new(),
            handoffs: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    /// The timer values.
    pub fn config(&self) -> TimerConfig {
        self.config
    }

    /// Number of live transactions (server and client), the completed non-INVITE ones kept
    /// compactly included: RFC 3261 ends them only at Timer J or K, so the count (an
    /// admission limit, a gauge) means what it did before they were compacted.
    pub fn len(&self) -> usize {
        self.txs.len() + self.completed_len()
    }

    /// Whether there are no live transactions (compact ones included, as in
    /// [`TransactionLayer::len`]).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many of [`TransactionLayer::len`] are completed non-INVITE transactions kept
    /// compactly, absorbing retransmissions until Timer J (server) or K (client).
    pub fn completed_len(&self) -> usize {
        self.completed_servers.len() + self.completed_clients.len()
    }

    fn schedule(&mut self, id: u64) {
        let Some(tx) = self.txs.get_mut(&id) else {
            return;
        };
        let next = match (tx.retransmit_at, tx.state_deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if tx.scheduled == next {
            return;
        }
        if let Some(old) = tx.scheduled.take() {
            self.timers.remove(&(old, id));
        }
        if let Some(n) = next {
            self.timers.insert((n, id));
            tx.scheduled = Some(n);
        }
    }

    fn remove(&mut self, id: u64) {
        if let Some(tx) = self.txs.remove(&id) {
            if let Some(t) = tx.scheduled {
                self.timers.remove(&(t, id));
            }
            if let Some(k) = tx.server_key {
                self.servers.remove(&k);
            }
            if let Some(k) = tx.client_key {
                self.clients.remove(&k);
            }
        }
    }

    fn transmit(&mut self, peer: Peer, payload: Bytes) {
        self.transmits.push_back(Transmit { peer, payload });
    }

    /// Matches a received request (RFC 3261 section 17.2.3) and creates a server transaction
    /// for a new one. The request must have passed [`cpm_sip::check_request`].
    pub fn handle_request(
        &mut self,
        now: Instant,
        req: &Request,
        source: Peer,
    ) -> Result<RequestDisposition, KeyError> {
        let key = server_key(req)?;
        if let Some(&id) = self.servers.get(&key) {
            let Some(tx) = self.txs.get_mut(&id) else {
                return Ok(RequestDisposition::Retransmission);
            };
            if req.method == Method::Ack {
                // ACK for a non-2xx final: Completed -> Confirmed, timer I (RFC 3261 17.2.1).
                if tx.invite && tx.state == State::Completed {
                    tx.state = State::Confirmed;
                    tx.retransmit_at = None;
                    tx.state_deadline = Some(if source.transport.is_reliable() {
                        now
                    } else {
                        now + self.config.t4
                    });
                    self.schedule(id);
                    return Ok(RequestDisposition::AckAbsorbed);
                }
                if tx.invite && tx.state == State::Confirmed {
                    return Ok(RequestDisposition::AckAbsorbed);
                }
                // An ACK to a 2xx carries a new branch; one matching an INVITE transaction in
                // another state is passed on (a proxy forwards it).
                return Ok(RequestDisposition::Stray);
            }
            if let Some(last) = tx.wire.clone() {
                let peer = tx.peer;
                self.transmit(peer, last);
            }
            return Ok(RequestDisposition::Retransmission);
        }
        if req.method == Method::Ack {
            return Ok(RequestDisposition::Stray);
        }
        if let Some(r) = self.completed_servers.get(&self.fingerprints.of(&key)) {
            // Completed (RFC 3261 17.2.2): a retransmitted request gets the final response
            // again, sent where the request came from, as the live transaction did.
            let (peer, payload) = (Peer::udp(r.to), r.payload.clone());
            self.transmit(peer, payload);
            return Ok(RequestDisposition::Retransmission);
        }
        let id = self.next_id;
        self.next_id += 1;
        let invite = req.method == Method::Invite;
        self.txs.insert(
            id,
            Box::new(Tx {
                server: true,
                invite,
                state: if invite {
                    State::Proceeding
                } else {
                    State::Trying
                },
                peer: source,
                request: None,
                wire: None,
                ack: None,
                retransmit_at: None,
                interval: self.config.t1,
                state_deadline: None,
                scheduled: None,
                cancel_pending: false,
                server_key: Some(key.clone()),
                client_key: None,
            }),
        );
        self.servers.insert(key.clone(), id);
        Ok(RequestDisposition::New(key))
    }

    /// Whether a request belongs to a live server transaction (a retransmission, or a
    /// request of one being served): overload control must let those through, only new
    /// work is refused.
    pub fn matches(&self, req: &Request) -> bool {
        server_key(req).is_ok_and(|k| {
            self.servers.contains_key(&k)
                || self
                    .completed_servers
                    .get(&self.fingerprints.of(&k))
                    .is_some()
        })
    }

    /// Finds the INVITE server transaction a CANCEL refers to (RFC 3261 section 9.2: same
    /// branch and sent-by, method INVITE).
    pub fn invite_for_cancel(&self, cancel_key: &ServerKey) -> Option<ServerKey> {
        let k = ServerKey {
            method: KeyMethod::Invite,
            ..cancel_key.clone()
        };
        let id = self.servers.get(&k)?;
        let tx = self.txs.get(id)?;
        matches!(tx.state, State::Proceeding).then_some(k)
    }

    /// Whether the INVITE server transaction still awaits a final response.
    pub fn is_proceeding(&self, key: &ServerKey) -> bool {
        self.servers
            .get(key)
            .and_then(|id| self.txs.get(id))
            .is_some_and(|tx| matches!(tx.state, State::Proceeding | State::Trying))
    }

    /// Sends a response on a server transaction (RFC 3261 sections 17.2.1 and 17.2.2), to the
    /// peer the request came from (the same connection for streams; the source address for
    /// UDP, as with `rport`, RFC 3581).
    pub fn respond(
        &mut self,
        now: Instant,
        key: &ServerKey,
        resp: &Response,
    ) -> Result<(), NoTransaction> {
        self.respond_cow(now, key, Cow::Borrowed(resp))
    }

    /// [`TransactionLayer::respond`] with a response the caller is done with: towards a
    /// function of this node it is handed over without a copy.
    pub fn respond_owned(
        &mut self,
        now: Instant,
        key: &ServerKey,
        resp: Response,
    ) -> Result<(), NoTransaction> {
        self.respond_cow(now, key, Cow::Owned(resp))
    }

    fn respond_cow(
        &mut self,
        now: Instant,
        key: &ServerKey,
        resp: Cow<'_, Response>,
    ) -> Result<(), NoTransaction> {
        let id = *self.servers.get(key).ok_or(NoTransaction)?;
        let t = self.config;
        let tx = self.txs.get_mut(&id).ok_or(NoTransaction)?;
        // An in-node hop needs no bytes: nothing is ever retransmitted on it.
        let local = matches!(tx.peer.transport, TransportKind::Local(_));
        let wire = (!local).then(|| resp.to_bytes());
        let reliable = tx.peer.transport.is_reliable();
        let status = resp.status;
        // A non-INVITE final response: Completed, kept compactly (below).
        let mut completed = false;
        match (tx.invite, tx.state) {
            (true, State::Proceeding) => {
                if status.is_provisional() {
                    tx.wire.clone_from(&wire);
                } else if status.is_success() {
                    // RFC 6026: Accepted, timer L; 2xx retransmissions are the TU's.
                    tx.state = State::Accepted;
                    tx.wire = None;
                    tx.state_deadline = Some(now + 64 * t.t1);
                } else {
                    tx.state = State::Completed;
                    tx.wire.clone_from(&wire);
                    if !reliable {
                        tx.interval = t.t1;
                        tx.retransmit_at = Some(now + t.t1);
                    }
                    tx.state_deadline = Some(now + 64 * t.t1);
                }
            }
            // More 2xx (from other forks) pass through while Accepted (RFC 6026 section 8.5).
            (true, State::Accepted) if status.is_success() => {}
            (false, State::Trying | State::Proceeding) => {
                if status.is_provisional() {
                    tx.wire.clone_from(&wire);
                    tx.state = State::Proceeding;
                } else {
                    completed = true;
                }
            }
            _ => return Err(NoTransaction),
        }
        let peer = tx.peer;
        // Shares the transmitted buffer: no copy.
        let resend = if completed { wire.clone() } else { None };
        match (wire, peer.transport) {
            (Some(wire), _) => self.transmit(peer, wire),
            (None, TransportKind::Local(to)) => self.handoffs.push_back(Handoff {
                to,
                shard: peer.shard(),
                message: Message::Response(resp.into_owned()),
            }),
            (None, _) => {}
        }
        if !completed {
            self.schedule(id);
            return Ok(());
        }
        // Completed (RFC 3261 17.2.2): only retransmitted requests remain to be answered, with
        // this response, until Timer J: 64*T1 on UDP, zero on reliable transports, where the
        // transaction ends now. Either way the full transaction goes.
        self.remove(id);
        if let (false, Some(payload)) = (reliable, resend) {
            let fp = self.fingerprints.of(key);
            let resend = Resend {
                payload,
                to: peer.addr,
            };
            self.completed_servers.push(fp, now + 64 * t.t1, resend);
        }
        Ok(())
    }

    /// Starts a client transaction (RFC 3261 section 17.1): sends the request to `dest` and
    /// retransmits it over UDP until a response comes. The request's top Via must carry a
    /// fresh branch starting with [`MAGIC_COOKIE`]; the key is derived from it.
    pub fn send_request(
        &mut self,
        now: Instant,
        req: Request,
        dest: Peer,
    ) -> Result<ClientKey, KeyError> {
        let via = req.headers.top_via().ok().flatten().ok_or(KeyError)?;
        let branch = via.branch().ok_or(KeyError)?.to_owned();
        let key = ClientKey {
            branch,
            method: KeyMethod::of(&req.method),
        };
        let invite = req.method == Method::Invite;
        // The bytes a retransmission sends again, or the value for a function of this node;
        // and the request kept for the transaction (an INVITE's ACK and CANCEL are built from
        // it; a non-INVITE's is never needed again, so towards a function it goes without a
        // copy).
        let (wire, handoff, request) = match dest.transport {
            TransportKind::Local(to) if !invite => (
                None,
                Some(Handoff {
                    to,
                    shard: dest.shard(),
                    message: Message::Request(req),
                }),
                None,
            ),
            TransportKind::Local(to) => (
                None,
                Some(Handoff {
                    to,
                    shard: dest.shard(),
                    message: Message::Request(req.clone()),
                }),
                Some(req),
            ),
            TransportKind::Udp | TransportKind::Tcp => (Some(req.to_bytes()), None, Some(req)),
        };
        let t = self.config;
        let reliable = dest.transport.is_reliable();
        let id = self.next_id;
        self.next_id += 1;
        self.txs.insert(
            id,
            Box::new(Tx {
                server: false,
                invite,
                state: if invite {
                    State::Calling
                } else {
                    State::Trying
                },
                peer: dest,
                request,
                wire: wire.clone(),
                ack: None,
                // Timer A / E: UDP only.
                retransmit_at: (!reliable).then_some(now + t.t1),
                interval: t.t1,
                // Timer B / F.
                state_deadline: Some(now + 64 * t.t1),
                scheduled: None,
                cancel_pending: false,
                server_key: None,
                client_key: Some(key.clone()),
            }),
        );
        self.clients.insert(key.clone(), id);
        match (handoff, wire) {
            (Some(h), _) => self.handoffs.push_back(h),
            (None, Some(w)) => self.transmit(dest, w),
            (None, None) => {}
        }
        self.schedule(id);
        Ok(key)
    }

    /// Matches a received response to its client transaction (RFC 3261 section 17.1.3) and
    /// runs the client state machine.
    pub fn handle_response(&mut self, now: Instant, resp: &Response) -> ResponseDisposition {
        let Some(key) = client_key_of_response(resp) else {
            return ResponseDisposition::Stray;
        };
        let Some(&id) = self.clients.get(&key) else {
            // A completed non-INVITE client transaction absorbs retransmitted responses until
            // Timer K (RFC 3261 17.1.2.2).
            return if self
                .completed_clients
                .get(&self.fingerprints.of(&key))
                .is_some()
            {
                ResponseDisposition::Absorbed
            } else {
                ResponseDisposition::Stray
            };
        };
        let t = self.config;
        let Some(tx) = self.txs.get_mut(&id) else {
            return ResponseDisposition::Stray;
        };
        let reliable = tx.peer.transport.is_reliable();
        let status = resp.status;
        let mut send_cancel = false;
        // A non-INVITE final response: Completed, kept compactly (below).
        let mut completed = false;
        let disposition = if tx.invite {
            match tx.state {
                State::Calling | State::Proceeding => {
                    if status.is_provisional() {
                        tx.state = State::Proceeding;
                        tx.retransmit_at = None;
                        send_cancel = std::mem::take(&mut tx.cancel_pending);
                    } else if status.is_success() {
                        tx.state = State::Accepted;
                        tx.retransmit_at = None;
                        tx.state_deadline = Some(now + 64 * t.t1);
                        tx.request = None;
                        tx.wire = None;
                    } else {
                        // Non-2xx final: ACK it ourselves (RFC 3261 section 17.1.1.3).
                        tx.state = State::Completed;
                        tx.retransmit_at = None;
                        tx.state_deadline = Some(if reliable {
                            now
                        } else {
                            now + Duration::from_secs(32)
                        });
                        tx.wire = None;
                        if let Some(req) = tx.request.take() {
                            let ack = ack_for(&req, resp);
                            if let TransportKind::Local(to) = tx.peer.transport {
                                self.handoffs.push_back(Handoff {
                                    to,
                                    shard: tx.peer.shard(),
                                    message: Message::Request(ack),
                                });
                            } else {
                                let ack = ack.to_bytes();
                                tx.ack = Some(ack.clone());
                                self.transmits.push_back(Transmit {
                                    peer: tx.peer,
                                    payload: ack,
                                });
                            }
                        }
                    }
                    ResponseDisposition::Pass(key.clone())
                }
                State::Accepted if status.is_success() => ResponseDisposition::Pass(key.clone()),
                State::Completed if !status.is_success() && !status.is_provisional() => {
                    if let Some(ack) = tx.ack.clone() {
                        self.transmits.push_back(Transmit {
                            peer: tx.peer,
                            payload: ack,
                        });
                    }
                    ResponseDisposition::Absorbed
                }
                _ => ResponseDisposition::Absorbed,
            }
        } else {
            match tx.state {
                State::Trying | State::Proceeding => {
                    if status.is_provisional() {
                        if tx.state == State::Trying && !reliable {
                            // In Proceeding, timer E fires every T2 (RFC 3261 17.1.2.2).
                            tx.interval = t.t2;
                        }
                        tx.state = State::Proceeding;
                    } else {
                        completed = true;
                    }
                    ResponseDisposition::Pass(key.clone())
                }
                _ => ResponseDisposition::Absorbed,
            }
        };
        if completed {
            // Completed (RFC 3261 17.1.2.2): nothing is retransmitted any more, so the request
            // and the rest of the transaction go; only the key stays, to absorb retransmitted
            // responses until Timer K: T4 on UDP, zero on reliable transports (nothing kept).
            self.remove(id);
            if !reliable {
                let fp = self.fingerprints.of(&key);
                self.completed_clients.push(fp, now + t.t4, ());
            }
        } else {
            self.schedule(id);
        }
        if send_cancel {
            self.send_cancel(now, id, &key);
        }
        disposition
    }

    /// Cancels a pending INVITE client transaction (RFC 3261 section 9.1): sends a CANCEL at
    /// once if a provisional response came, or as soon as one comes; nothing if a final
    /// response already came.
    pub fn cancel(&mut self, now: Instant, key: &ClientKey) {
        let Some(&id) = self.clients.get(key) else {
            return;
        };
        let Some(tx) = self.txs.get_mut(&id) else {
            return;
        };
        match tx.state {
            State::Calling => tx.cancel_pending = true,
            State::Proceeding => self.send_cancel(now, id, key),
            _ => {}
        }
    }

    fn send_cancel(&mut self, now: Instant, id: u64, key: &ClientKey) {
        let Some(tx) = self.txs.get(&id) else {
            return;
        };
        let (Some(invite), peer) = (&tx.request, tx.peer) else {
            return;
        };
        let cancel = cancel_for(invite);
        if self.send_request(now, cancel, peer).is_ok() {
            self.events.push_back(TxEvent::CancelSent(key.clone()));
        }
    }

    /// Runs every timer due at `now` (idempotent; early calls do nothing).
    pub fn handle_timeout(&mut self, now: Instant) {
        let t = self.config;
        // Timers J and K of compacted transactions: the wait is over.
        self.completed_servers.expire(now);
        self.completed_clients.expire(now);
        while let Some(&(at, id)) = self.timers.first() {
            if at > now {
                break;
            }
            self.timers.pop_first();
            let Some(tx) = self.txs.get_mut(&id) else {
                continue;
            };
            tx.scheduled = None;
            let mut terminate = false;
            if tx.state_deadline.is_some_and(|d| d <= now) {
                tx.state_deadline = None;
                match (tx.server, tx.invite, tx.state) {
                    // Timer B / F: no final response.
                    (false, _, State::Calling | State::Trying | State::Proceeding) => {
                        if let Some(k) = &tx.client_key {
                            self.events.push_back(TxEvent::Timeout(k.clone()));
                        }
                    }
                    // Timer H: no ACK.
                    (true, true, State::Completed) => {
                        if let Some(k) = &tx.server_key {
                            self.events.push_back(TxEvent::AckTimeout(k.clone()));
                        }
                    }
                    // Server INVITE still Proceeding has no state timer; anything else: the
                    // wait is over (D, I, J, K, L, M).
                    _ => {}
                }
                terminate = true;
            }
            if !terminate && tx.retransmit_at.is_some_and(|r| r <= now) {
                // Timers A, E, G: retransmit and back off (A doubles; E and G cap at T2).
                let payload = tx.wire.clone();
                tx.interval = if tx.invite && !tx.server {
                    tx.interval * 2
                } else {
                    (tx.interval * 2).min(t.t2)
                };
                tx.retransmit_at = Some(now + tx.interval);
                if let Some(p) = payload {
                    self.transmits.push_back(Transmit {
                        peer: tx.peer,
                        payload: p,
                    });
                }
            }
            if terminate {
                tx.state = State::Terminated;
                self.remove(id);
            } else {
                self.schedule(id);
            }
        }
        // Tables grown by a burst give their memory back once it is over.
        completed::shrink_map(&mut self.txs);
        completed::shrink_map(&mut self.servers);
        completed::shrink_map(&mut self.clients);
        completed::shrink_deque(&mut self.transmits);
    }

    /// The next deadline, if any transaction has one.
    pub fn poll_timeout(&self) -> Option<Instant> {
        [
            self.timers.first().map(|&(t, _)| t),
            self.completed_servers.next_deadline(),
            self.completed_clients.next_deadline(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// The next message to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next message for a function of this node (sent to a [`TransportKind::Local`]
    /// peer). An element with no local peers never has one.
    pub fn poll_handoff(&mut self) -> Option<Handoff> {
        self.handoffs.pop_front()
    }

    /// The next event for the TU.
    pub fn poll_event(&mut self) -> Option<TxEvent> {
        self.events.pop_front()
    }

    /// The request a client transaction sent, while it may still be needed: an INVITE until
    /// its final response, a non-INVITE sent over the network until then too (one handed to
    /// a function of this node is not kept).
    pub fn client_request(&self, key: &ClientKey) -> Option<&Request> {
        self.clients
            .get(key)
            .and_then(|id| self.txs.get(id))
            .and_then(|tx| tx.request.as_ref())
    }

    /// A transport failure on a client transaction (RFC 3261 section 17.1.4): reported as a
    /// timeout and the transaction ends.
    pub fn transport_error(&mut self, key: &ClientKey) {
        if let Some(&id) = self.clients.get(key) {
            let pending = self.txs.get(&id).is_some_and(|tx| {
                matches!(tx.state, State::Calling | State::Trying | State::Proceeding)
            });
            if pending {
                self.events.push_back(TxEvent::Timeout(key.clone()));
            }
            self.remove(id);
        } else {
            // Completed: it ends as a live one would, absorbing nothing more.
            self.completed_clients.remove(&self.fingerprints.of(key));
        }
    }
}

impl Default for TransactionLayer {
    fn default() -> Self {
        Self::new(TimerConfig::default())
    }
}

/// The ACK for a non-2xx final response (RFC 3261 section 17.1.1.3): Request-URI, Call-ID,
/// From, CSeq number and Route of the INVITE, To of the response, one Via: the INVITE's top.
pub fn ack_for(invite: &Request, resp: &Response) -> Request {
    let mut ack = Request::new(Method::Ack, invite.uri.clone());
    let h = &invite.headers;
    if let Some(v) = h.get(&HeaderName::Via) {
        // The top Via field may hold several values; only the first is ours.
        match h.top_via() {
            Ok(Some(top)) => ack
                .headers
                .push(Header::new(HeaderName::Via, &top.to_string())),
            _ => ack.headers.push(v.clone()),
        }
    }
    copy(h, &mut ack, &HeaderName::MaxForwards);
    copy(h, &mut ack, &HeaderName::From);
    copy(&resp.headers, &mut ack, &HeaderName::To);
    copy(h, &mut ack, &HeaderName::CallId);
    if let Ok(Some(cseq)) = h.cseq() {
        let c = CSeq {
            seq: cseq.seq,
            method: Method::Ack,
        };
        ack.headers
            .push(Header::new(HeaderName::CSeq, &c.to_string()));
    }
    for r in h.get_all(&HeaderName::Route) {
        ack.headers.push(r.clone());
    }
    ack.headers
        .push(Header::new(HeaderName::ContentLength, "0"));
    ack
}

/// The CANCEL for an INVITE (RFC 3261 section 9.1): same Request-URI, Call-ID, To, From,
/// CSeq number, top Via and Route.
pub fn cancel_for(invite: &Request) -> Request {
    let mut c = Request::new(Method::Cancel, invite.uri.clone());
    let h = &invite.headers;
    if let Ok(Some(top)) = h.top_via() {
        c.headers
            .push(Header::new(HeaderName::Via, &top.to_string()));
    }
    copy(h, &mut c, &HeaderName::MaxForwards);
    copy(h, &mut c, &HeaderName::From);
    copy(h, &mut c, &HeaderName::To);
    copy(h, &mut c, &HeaderName::CallId);
    if let Ok(Some(cseq)) = h.cseq() {
        let cs = CSeq {
            seq: cseq.seq,
            method: Method::Cancel,
        };
        c.headers
            .push(Header::new(HeaderName::CSeq, &cs.to_string()));
    }
    for r in h.get_all(&HeaderName::Route) {
        c.headers.push(r.clone());
    }
    c.headers.push(Header::new(HeaderName::ContentLength, "0"));
    c
}

fn copy(from: &cpm_sip::Headers, to: &mut Request, name: &HeaderName) {
    if let Some(h) = from.get(name) {
        to.headers.push(h.clone());
    }
}

/// Builds a response to a request as a UAS or proxy does (RFC 3261 section 8.2.6.2): Via
/// values, From, To (with `to_tag` added when given and the To has none), Call-ID and CSeq
/// copied; Content-Length 0.
pub fn response_to(req: &Request, status: StatusCode, to_tag: Option<&str>) -> Response {
    let mut resp = Response::new(status);
    let h = &req.headers;
    for v in h.get_all(&HeaderName::Via) {
        resp.headers.push(v.clone());
    }
    copy_resp(h, &mut resp, &HeaderName::From);
    match (h.get(&HeaderName::To), to_tag) {
        (Some(to), Some(tag)) => match h.to() {
            Ok(Some(addr)) if addr.tag().is_none() => {
                let mut addr: NameAddr = addr;
                addr.params
                    .push(cpm_sip::Param::new("tag", Some(tag.to_owned())));
                resp.headers
                    .push(Header::new(HeaderName::To, &addr.to_string()));
            }
            _ => resp.headers.push(to.clone()),
        },
        (Some(to), None) => resp.headers.push(to.clone()),
        (None, _) => {}
    }
    copy_resp(h, &mut resp, &HeaderName::CallId);
    copy_resp(h, &mut resp, &HeaderName::CSeq);
    resp.headers
        .push(Header::new(HeaderName::ContentLength, "0"));
    resp
}

fn copy_resp(from: &cpm_sip::Headers, to: &mut Response, name: &HeaderName) {
    if let Some(h) = from.get(name) {
        to.headers.push(h.clone());
    }
}
