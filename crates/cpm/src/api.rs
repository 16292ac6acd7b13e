//! The user-facing part of the admin HTTP server: `GET /api/v1/history`, a user's stored
//! conversation history, authenticated with HTTP Digest (RFC 7616) against the same
//! credentials as SIP.
//!
//! ```text
//! GET /api/v1/history?with=bob@localhost&conversation=UUID&limit=100
//! -> 401 WWW-Authenticate: Digest realm="localhost", nonce="…", qop="auth", algorithm=MD5
//! GET … Authorization: Digest username="alice@localhost", realm="localhost", uri="/api/v1/history?…", …
//! -> 200 {"messages":[{"direction":"sent","peer":"bob@localhost","from":"sip:alice@localhost",
//!         "to":"sip:bob@localhost","conversation_id":…,"contribution_id":…,"message_id":…,
//!         "content_type":"text/plain;charset=UTF-8","text":"hi","state":"delivered",
//!         "created_at_ms":…,"state_at_ms":…}]}
//! ```
//!
//! The history is read on its own SQLite connection (WAL: readers never wait for the
//! message writer), on a blocking thread.
//!
//! Guards, as on SIP: credentials whose nonce count was already used are a replay and get a
//! fresh challenge (RFC 7616 section 3.4); failed authentications are counted per source
//! address and per user, and past the limit the source (or the user) gets `429 Too Many
//! Requests` with `Retry-After` for a back-off that doubles with each block (RFC 6585
//! section 4). Both are logged as on SIP (`crate::security`).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use cpm_content::{Cpim, mime};
use cpm_proxy::SecurityEvent;
use cpm_sip_core::digest::{self, Algorithm, Credentials, NonceCheck, NonceKey};
use cpm_sip_core::guard::{AuthThrottle, NonceTracker, NonceUse, ThrottleConfig, account_key};
use cpm_store::{HistoryQuery, MessageRecord, Store};
use serde::{Deserialize, Serialize};

/// Most records one history request returns.
const MAX_LIMIT: usize = 10_000;

/// What the history handler needs.
#[derive(Clone)]
pub(crate) struct ApiState {
    /// A read connection to the node's database.
    pub(crate) store: Arc<Mutex<Store>>,
    /// The digest realm (the node's default domain).
    pub(crate) realm: String,
    /// Signs and checks the digest nonces (the node's nonce secret).
    pub(crate) nonce_key: NonceKey,
    /// Nonce lifetime.
    pub(crate) nonce_ttl_secs: u64,
    /// Digest algorithms offered.
    pub(crate) algorithms: Vec<Algorithm>,
    /// Replay table and failure throttle of the HTTP API.
    pub(crate) guard: Arc<Mutex<HttpGuard>>,
}

/// The HTTP API's guards (its own, apart from SIP's: a SIP credential cannot be replayed over
/// HTTP anyway, the method and URI differ).
pub(crate) struct HttpGuard {
    nonces: NonceTracker,
    throttle: AuthThrottle,
    /// Makes every challenge's nonce unique.
    salt: u64,
    swept_at: Instant,
}

/// How often the throttle's table is swept (at a request, not on a timer).
const SWEEP_EVERY: Duration = Duration::from_secs(5);

impl HttpGuard {
    /// Guards with these limits; `seed` keys their tables (random at start).
    pub(crate) fn new(nonce_table_size: usize, throttle: ThrottleConfig, seed: u64) -> Self {
        Self {
            nonces: NonceTracker::new(nonce_table_size, seed),
            throttle: AuthThrottle::new(throttle, seed ^ 0x9e37_79b9),
            salt: seed,
            swept_at: Instant::now(),
        }
    }

    /// Counters, for `/metrics`.
    pub(crate) fn stats(&self) -> cpm_sip_core::guard::ThrottleStats {
        self.throttle.stats()
    }

    fn next_salt(&mut self) -> u64 {
        self.salt = self.salt.wrapping_add(0x9e37_79b9_7f4a_7c15);
        self.salt
    }

    fn sweep(&mut self, now: Instant) {
        if now >= self.swept_at + SWEEP_EVERY {
            self.swept_at = now;
            self.throttle.sweep(now);
        }
    }
}

impl ApiState {
    fn guard(&self) -> MutexGuard<'_, HttpGuard> {
        // Every update leaves the tables consistent: a poisoned lock is still usable.
        self.guard.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The query string of `GET /api/v1/history`.
#[derive(Debug, Deserialize)]
pub(crate) struct HistoryParams {
    with: Option<String>,
    conversation: Option<String>,
    since_ms: Option<u64>,
    until_ms: Option<u64>,
    limit: Option<usize>,
}

/// One history entry in the JSON answer.
#[derive(Debug, Serialize)]
struct Entry {
    direction: &'static str,
    peer: String,
    from: String,
    to: String,
    conversation_id: String,
    contribution_id: String,
    in_reply_to: Option<String>,
    message_id: String,
    content_type: String,
    text: String,
    state: &'static str,
    created_at_ms: u64,
    state_at_ms: u64,
}

#[derive(Debug, Serialize)]
struct HistoryAnswer {
    messages: Vec<Entry>,
}

fn unix_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn challenge(state: &ApiState, stale: bool) -> Response {
    let salt = state.guard().next_salt();
    let nonce = state.nonce_key.make_nonce(unix_secs(), &state.realm, salt);
    let mut resp = (StatusCode::UNAUTHORIZED, "authentication required\n").into_response();
    for alg in &state.algorithms {
        if let Ok(v) = digest::challenge(&state.realm, &nonce, *alg, stale, None).parse() {
            resp.headers_mut().append(header::WWW_AUTHENTICATE, v);
        }
    }
    resp
}

/// 429 with Retry-After for a blocked source or user.
fn too_many(until: Instant, now: Instant) -> Response {
    let secs = until.saturating_duration_since(now).as_secs().max(1);
    let mut resp = (
        StatusCode::TOO_MANY_REQUESTS,
        "too many failed authentications\n",
    )
        .into_response();
    if let Ok(v) = secs.to_string().parse() {
        resp.headers_mut().insert(header::RETRY_AFTER, v);
    }
    resp
}

/// What the blocking part of authentication found.
enum Verified {
    /// The user and its password are right.
    User(String),
    /// Wrong password or no such user (the same answer).
    Failed,
}

/// `GET /api/v1/history`.
pub(crate) async fn history(
    State(state): State<ApiState>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    uri: Uri,
    headers: HeaderMap,
    Query(params): Query<HistoryParams>,
) -> Response {
    let source = client.ip();
    let now = Instant::now();
    let blocked = {
        let mut g = state.guard();
        g.sweep(now);
        g.throttle.check_source(now, source)
    };
    if let Some(b) = blocked {
        if let Some(refused) = b.report {
            let event = SecurityEvent::AuthRefused {
                source,
                user: None,
                refused,
            };
            crate::security::log(&event, "http");
        }
        return too_many(b.until, now);
    }
    let creds = headers
        .get_all(header::AUTHORIZATION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| Credentials::parse(v).ok())
        .find(|c| c.realm.eq_ignore_ascii_case(&state.realm));
    let Some(creds) = creds else {
        return challenge(&state, false);
    };
    match state.nonce_key.check_nonce(
        &creds.nonce,
        &state.realm,
        unix_secs(),
        state.nonce_ttl_secs,
    ) {
        NonceCheck::Valid => {}
        NonceCheck::Stale => return challenge(&state, true),
        NonceCheck::Invalid => return challenge(&state, false),
    }
    // RFC 7616 3.4.6: the digest-uri must be the request target.
    let target = uri
        .path_and_query()
        .map_or_else(|| uri.path().to_owned(), ToString::to_string);
    if creds.uri != target {
        return (
            StatusCode::BAD_REQUEST,
            "digest uri does not match the request\n",
        )
            .into_response();
    }
    let account = account_key(&creds.username, &state.realm);
    let user_blocked = state.guard().throttle.check_user(now, &account);
    if let Some(b) = user_blocked {
        if let Some(refused) = b.report {
            let event = SecurityEvent::AuthRefused {
                source,
                user: Some(account),
                refused,
            };
            crate::security::log(&event, "http");
        }
        return too_many(b.until, now);
    }
    let st = state.clone();
    let checked = creds.clone();
    let verified = tokio::task::spawn_blocking(move || {
        let store = st
            .store
            .lock()
            .map_err(|_| "store lock poisoned".to_owned())?;
        let user = store
            .user_credentials(&checked.username, &st.realm)
            .map_err(|e| e.to_string())?;
        Ok::<_, String>(match user {
            Some(u) if digest::verify(&checked, "GET", u.ha1(checked.algorithm)) => {
                Verified::User(u.aor)
            }
            _ => Verified::Failed,
        })
    })
    .await;
    let owner = match verified {
        Ok(Ok(Verified::User(aor))) => aor,
        Ok(Ok(Verified::Failed)) => {
            // A wrong user and a wrong password get the same answer, and count the same.
            let blocks = state.guard().throttle.failure(now, source, &account);
            crate::security::log(
                &SecurityEvent::AuthFailure {
                    source,
                    user: account.clone(),
                },
                "http",
            );
            if let Some(d) = blocks.source {
                let event = SecurityEvent::AuthBlocked {
                    source,
                    user: None,
                    seconds: d.as_secs(),
                };
                crate::security::log(&event, "http");
            }
            if let Some(d) = blocks.user {
                let event = SecurityEvent::AuthBlocked {
                    source,
                    user: Some(account),
                    seconds: d.as_secs(),
                };
                crate::security::log(&event, "http");
            }
            return challenge(&state, false);
        }
        Ok(Err(e)) => {
            tracing::error!(error = %e, "user directory read failed");
            return (StatusCode::INTERNAL_SERVER_ERROR, "history read failed\n").into_response();
        }
        Err(e) => {
            tracing::error!(error = %e, "history task failed");
            return (StatusCode::INTERNAL_SERVER_ERROR, "history read failed\n").into_response();
        }
    };
    // RFC 7616 3.4: right credentials seen before are a replay: a fresh challenge.
    let issued = NonceKey::issued_at(&creds.nonce).unwrap_or(0);
    let used = state.guard().nonces.accept(
        &creds.nonce,
        issued,
        creds.nc.as_deref(),
        unix_secs(),
        state.nonce_ttl_secs,
    );
    match used {
        NonceUse::Fresh => {}
        NonceUse::Forgotten => return challenge(&state, true),
        NonceUse::Replayed => {
            let event = SecurityEvent::ReplayRefused {
                source,
                user: account,
            };
            crate::security::log(&event, "http");
            return challenge(&state, true);
        }
    }
    let limit = params.limit.unwrap_or(1000).clamp(1, MAX_LIMIT);
    let st = state.clone();
    let result = tokio::task::spawn_blocking(move || {
        let store = st
            .store
            .lock()
            .map_err(|_| "store lock poisoned".to_owned())?;
        let q = HistoryQuery {
            owner,
            with: params
                .with
                .as_deref()
                .and_then(cpm_conversation::ids::aor_of_str),
            conversation_id: params.conversation.clone(),
            since_ms: params.since_ms,
            until_ms: params.until_ms,
            limit,
        };
        store.history(&q).map_err(|e| e.to_string())
    })
    .await;
    match result {
        Ok(Ok(records)) => {
            let answer = HistoryAnswer {
                messages: records.iter().map(entry).collect(),
            };
            match serde_json::to_string(&answer) {
                Ok(body) => (
                    StatusCode::OK,
                    [(header::CONTENT_TYPE, "application/json")],
                    body,
                )
                    .into_response(),
                Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
            }
        }
        Ok(Err(e)) => {
            tracing::error!(error = %e, "history read failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "history read failed\n").into_response()
        }
        Err(e) => {
            tracing::error!(error = %e, "history task failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "history read failed\n").into_response()
        }
    }
}

/// A record as the API shows it: the text and inner content type of a CPIM body unwrapped.
fn entry(r: &MessageRecord) -> Entry {
    let (content_type, text) = display_body(&r.content_type, &r.body);
    let (from, to) = match r.direction {
        cpm_store::Direction::Sent => (r.sender.clone(), r.recipient.clone()),
        cpm_store::Direction::Received => (r.sender.clone(), r.recipient.clone()),
    };
    Entry {
        direction: r.direction.as_str(),
        peer: r.peer.clone(),
        from,
        to,
        conversation_id: r.conversation_id.clone(),
        contribution_id: r.contribution_id.clone(),
        in_reply_to: r.in_reply_to.clone(),
        message_id: r.message_id.clone(),
        content_type,
        text,
        state: r.state.as_str(),
        created_at_ms: r.created_at_ms,
        state_at_ms: r.state_at_ms,
    }
}

/// The content type and text of a stored SIP body (unwrapping CPIM).
pub(crate) fn display_body(content_type: &str, body: &[u8]) -> (String, String) {
    if mime::media_type(content_type) == mime::MESSAGE_CPIM
        && let Ok(cpim) = Cpim::parse(Bytes::copy_from_slice(body))
    {
        let inner = cpim.content_type().unwrap_or("text/plain").to_owned();
        return (inner, String::from_utf8_lossy(&cpim.body).into_owned());
    }
    (
        content_type.to_owned(),
        String::from_utf8_lossy(body).into_owned(),
    )
}
