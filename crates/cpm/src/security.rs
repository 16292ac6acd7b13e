//! Security log lines: what the cores report as [`SecurityEvent`]s, written with the target
//! `cpm::security` and the source address as `source=ADDR`, one line each, so fail2ban (or any
//! log watcher) can match them. The source comes first, as an address; the user (chosen by
//! the client) is quoted and escaped, so it cannot forge a `source=` of its own. The cores
//! already rate-limit what they report.
//!
//! ```text
//! WARN cpm::security: auth failure source=203.0.113.9 user="bob@localhost" proto=sip
//! WARN cpm::security: auth blocked source=203.0.113.9 seconds=60 proto=sip
//! WARN cpm::security: auth refused source=203.0.113.9 refused=1312 proto=sip
//! WARN cpm::security: replay refused source=203.0.113.9 user="bob@localhost" proto=http
//! WARN cpm::security: rate limited source=203.0.113.9 refused=90210 proto=sip
//! ```

use cpm_proxy::SecurityEvent;

/// Writes one event; `proto` is `sip` or `http`.
pub(crate) fn log(event: &SecurityEvent, proto: &'static str) {
    match event {
        SecurityEvent::AuthFailure { source, user } => {
            tracing::warn!(target: "cpm::security", %source, ?user, proto = %proto, "auth failure");
        }
        SecurityEvent::AuthBlocked {
            source,
            user: None,
            seconds,
        } => {
            tracing::warn!(target: "cpm::security", %source, seconds, proto = %proto, "auth blocked");
        }
        SecurityEvent::AuthBlocked {
            source,
            user: Some(user),
            seconds,
        } => {
            tracing::warn!(
                target: "cpm::security", %source, ?user, seconds, proto = %proto, "auth user blocked"
            );
        }
        SecurityEvent::AuthRefused {
            source,
            user: None,
            refused,
        } => {
            tracing::warn!(target: "cpm::security", %source, refused, proto = %proto, "auth refused");
        }
        SecurityEvent::AuthRefused {
            source,
            user: Some(user),
            refused,
        } => {
            tracing::warn!(
                target: "cpm::security", %source, ?user, refused, proto = %proto, "auth refused"
            );
        }
        SecurityEvent::ReplayRefused { source, user } => {
            tracing::warn!(target: "cpm::security", %source, ?user, proto = %proto, "replay refused");
        }
        SecurityEvent::RateLimited { source, refused } => {
            tracing::warn!(target: "cpm::security", %source, refused, proto = %proto, "rate limited");
        }
    }
}
