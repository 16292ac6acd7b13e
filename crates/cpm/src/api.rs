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

use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use cpm_content::{Cpim, mime};
use cpm_sip_core::digest::{self, Algorithm, Credentials, NonceCheck, NonceKey};
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
    let nonce = state.nonce_key.make_nonce(unix_secs(), &state.realm);
    let mut resp = (StatusCode::UNAUTHORIZED, "authentication required\n").into_response();
    for alg in &state.algorithms {
        if let Ok(v) = digest::challenge(&state.realm, &nonce, *alg, stale, None).parse() {
            resp.headers_mut().append(header::WWW_AUTHENTICATE, v);
        }
    }
    resp
}

/// `GET /api/v1/history`.
pub(crate) async fn history(
    State(state): State<ApiState>,
    uri: Uri,
    headers: HeaderMap,
    Query(params): Query<HistoryParams>,
) -> Response {
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
    let limit = params.limit.unwrap_or(1000).clamp(1, MAX_LIMIT);
    let st = state.clone();
    let result = tokio::task::spawn_blocking(move || {
        let store = st
            .store
            .lock()
            .map_err(|_| "store lock poisoned".to_owned())?;
        let user = store
            .user_credentials(&creds.username, &st.realm)
            .map_err(|e| e.to_string())?;
        let Some(user) = user else {
            return Ok(None);
        };
        if !digest::verify(&creds, "GET", user.ha1(creds.algorithm)) {
            return Ok(None);
        }
        let q = HistoryQuery {
            owner: user.aor,
            with: params
                .with
                .as_deref()
                .and_then(cpm_conversation::ids::aor_of_str),
            conversation_id: params.conversation.clone(),
            since_ms: params.since_ms,
            until_ms: params.until_ms,
            limit,
        };
        store.history(&q).map(Some).map_err(|e| e.to_string())
    })
    .await;
    match result {
        Ok(Ok(Some(records))) => {
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
        // A wrong user and a wrong password get the same answer.
        Ok(Ok(None)) => challenge(&state, false),
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
