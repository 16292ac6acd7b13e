//! Security log lines: what the cores report as [`SecurityEvent`]s, written with the target
//! `cpm::security` and the source address as `source=ADDR`, one line each, so fail2ban (or any
//! log watcher) can match them. The cores already rate-limit what they report.
//!
//! ```text
//! WARN cpm::security: auth failure source=203.0.113.9 user=bob@localhost proto=sip
//! WARN cpm::security: auth blocked source=203.0.113.9 seconds=60 proto=sip
//! WARN cpm::security: auth refused source=203.0.113.9 refused=1312 proto=sip
//! WARN cpm::security: replay refused source=203.0.113.9 user=bob@localhost proto=http
//! WARN cpm::security: rate limited source=203.0.113.9 refused=90210 proto=sip
//! ```

use cpm_proxy::SecurityEvent;

/// Writes one event; `proto` is `sip` or `http`.
pub(crate) fn log(event: &SecurityEvent, proto: &'static str) {
    match event {
        SecurityEvent::AuthFailure { source, user } => {
            tracing::warn!(target: "cpm::security", %source, %user, proto, "auth failure");
        }
        SecurityEvent::AuthBlocked {
            source,
            user: None,
            seconds,
        } => {
            tracing::warn!(target: "cpm::security", %source, seconds, proto, "auth blocked");
        }
        SecurityEvent::AuthBlocked {
            source,
            user: Some(user),
            seconds,
        } => {
            tracing::warn!(
                target: "cpm::security", %source, %user, seconds, proto, "auth user blocked"
            );
        }
        SecurityEvent::AuthRefused {
            source,
            user: None,
            refused,
        } => {
            tracing::warn!(target: "cpm::security", %source, refused, proto, "auth refused");
        }
        SecurityEvent::AuthRefused {
            source,
            user: Some(user),
            refused,
        } => {
            tracing::warn!(
                target: "cpm::security", %source, %user, refused, proto, "auth refused"
            );
        }
        SecurityEvent::ReplayRefused { source, user } => {
            tracing::warn!(target: "cpm::security", %source, %user, proto, "replay refused");
        }
        SecurityEvent::RateLimited { source, refused } => {
            tracing::warn!(target: "cpm::security", %source, refused, proto, "rate limited");
        }
    }
}
