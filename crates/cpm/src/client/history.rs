//! `cpm client history`: the user's stored messages from the node's admin HTTP API (a
//! plain HTTP/1.1 GET with digest authentication).

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use cpm_sip_core::digest::{self, Algorithm, Challenge};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::{Common, HTTP_PORT, MAX_HTTP_ANSWER, connect, emit, one_line, resolve, seed};

/// One HTTP answer: status, headers, body.
pub(super) struct HttpAnswer {
    pub(super) status: u16,
    pub(super) reason: String,
    pub(super) headers: Vec<(String, String)>,
    pub(super) body: Vec<u8>,
}

/// `GET path` over HTTP/1.1 with `Connection: close`, reading to EOF.
///
/// A hand-written GET rather than an HTTP client crate: `history` makes two requests to a
/// known server, tokio is already here, and the only response features needed are
/// Content-Length and chunked bodies; a crate (`ureq`, `hyper`) would add a dependency tree
/// for that.
async fn http_get(
    addr: SocketAddr,
    timeout: Duration,
    host: &str,
    path: &str,
    authorization: Option<&str>,
) -> Result<HttpAnswer, String> {
    let mut s = connect(addr, timeout)
        .await
        .map_err(|e| format!("cannot connect to {addr}: {e} (is the node's HTTP API there?)"))?;
    let mut req = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: cpm-client\r\nAccept: application/json\r\nConnection: close\r\n"
    );
    if let Some(a) = authorization {
        req.push_str(&format!("Authorization: {a}\r\n"));
    }
    req.push_str("\r\n");
    let io = async {
        s.write_all(req.as_bytes()).await?;
        let mut out = Vec::new();
        (&mut s)
            .take(MAX_HTTP_ANSWER as u64)
            .read_to_end(&mut out)
            .await?;
        Ok::<_, std::io::Error>(out)
    };
    let raw = tokio::time::timeout(Duration::from_secs(30), io)
        .await
        .map_err(|_| format!("{addr}: no answer within 30 s"))?
        .map_err(|e| format!("{addr}: {e}"))?;
    parse_http(&raw).ok_or_else(|| format!("{addr}: malformed HTTP answer"))
}

pub(super) fn parse_http(raw: &[u8]) -> Option<HttpAnswer> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..end]).ok()?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next()?;
    let mut parts = status_line.splitn(3, ' ');
    if !parts.next()?.starts_with("HTTP/1.") {
        return None;
    }
    let status: u16 = parts.next()?.parse().ok()?;
    let reason = parts.next().unwrap_or_default().to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let header = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    };
    let rest = &raw[end + 4..];
    let body = if header("Transfer-Encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
    {
        dechunk(rest)?
    } else if let Some(n) = header("Content-Length").and_then(|v| v.parse::<usize>().ok()) {
        rest.get(..n)?.to_vec()
    } else {
        rest.to_vec()
    };
    Some(HttpAnswer {
        status,
        reason,
        headers,
        body,
    })
}

/// Decodes a chunked body (RFC 9112 section 7.1); trailers are ignored.
fn dechunk(mut rest: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = rest.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&rest[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(rest.get(..size)?);
        rest = rest.get(size + 2..)?;
    }
}

/// Percent-encodes a query value (RFC 3986 unreserved characters, `@` and `:` kept).
pub(super) fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~@:".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The strongest `WWW-Authenticate: Digest` challenge of an answer (SHA-256 before MD5).
fn http_challenge(a: &HttpAnswer) -> Option<Challenge> {
    let mut best: Option<Challenge> = None;
    for (n, v) in &a.headers {
        if !n.eq_ignore_ascii_case("WWW-Authenticate") {
            continue;
        }
        let Ok(ch) = Challenge::parse(v) else {
            continue;
        };
        if best
            .as_ref()
            .is_none_or(|b| b.algorithm == Algorithm::Md5 && ch.algorithm == Algorithm::Sha256)
        {
            best = Some(ch);
        }
    }
    best
}

pub(super) async fn history(
    c: &Common,
    with: Option<String>,
    limit: Option<u32>,
) -> Result<ExitCode, String> {
    let http = match &c.http {
        Some(h) => h.clone(),
        None => {
            // The server's host (`host:port`; an IPv6 literal keeps its brackets), port 8080.
            let host = c
                .server
                .rsplit_once(':')
                .map_or(c.server.as_str(), |(h, _)| h);
            format!("{host}:{HTTP_PORT}")
        }
    };
    let addr = resolve(&http).await?;
    let mut query: Vec<String> = Vec::new();
    if let Some(w) = &with {
        query.push(format!("with={}", query_escape(w)));
    }
    if let Some(n) = limit {
        query.push(format!("limit={n}"));
    }
    let path = if query.is_empty() {
        "/api/v1/history".to_owned()
    } else {
        format!("/api/v1/history?{}", query.join("&"))
    };
    let mut answer = http_get(addr, c.timeout, &http, &path, None).await?;
    let mut nc = 0;
    let mut stale_retry = true;
    while answer.status == 401 && nc < 2 {
        let Some(ch) = http_challenge(&answer) else {
            break;
        };
        // A second challenge is worth answering only if the nonce went stale.
        if nc == 1 && !(ch.stale && stale_retry) {
            break;
        }
        stale_retry = nc == 0;
        nc += 1;
        let cnonce = format!("{:016x}", seed());
        let auth = digest::respond(&ch, "GET", &path, &c.user, &c.password, &cnonce, 1);
        answer = http_get(addr, c.timeout, &http, &path, Some(&auth)).await?;
    }
    if answer.status != 200 {
        let hint = if answer.status == 401 {
            " (wrong user or password?)"
        } else {
            ""
        };
        return Err(format!(
            "history: HTTP {} {}{hint}",
            answer.status, answer.reason
        ));
    }
    let doc: serde_json::Value = serde_json::from_slice(&answer.body)
        .map_err(|e| format!("history: the answer is not JSON: {e}"))?;
    let Some(messages) = doc.get("messages").and_then(|m| m.as_array()) else {
        return Err("history: the answer has no \"messages\" list".into());
    };
    for m in messages {
        if c.json {
            emit(&m.to_string());
        } else {
            emit(&history_line(m));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `2026-11-25T16:00:00Z sent → bob@localhost [delivered] hello`.
pub(super) fn history_line(m: &serde_json::Value) -> String {
    let s = |k: &str| m.get(k).and_then(|v| v.as_str()).unwrap_or("");
    let when = m
        .get("created_at_ms")
        .and_then(serde_json::Value::as_u64)
        .map_or_else(|| "-".to_owned(), cpm_client::time::rfc3339_secs);
    let direction = s("direction");
    let arrow = if direction == "received" {
        "←"
    } else {
        "→"
    };
    format!(
        "{when} {direction} {arrow} {} [{}] {}",
        s("peer"),
        s("state"),
        one_line(s("text"))
    )
}
