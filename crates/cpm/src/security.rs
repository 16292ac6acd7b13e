//! Security log lines: what the cores report as [`SecurityEvent`]s, written with the target
//! `cpm::security` and the source address as `source=ADDR`, one line each, so fail2ban (or any
//! log watcher) can match them. The source comes first, as an address; the user (chosen by
//! the client) is quoted and escaped, so it cannot forge a `source=` of its own.
//!
//! ```text
//! WARN cpm::security: auth failure source=203.0.113.9 user="bob@localhost" proto=sip
//! WARN cpm::security: auth blocked source=203.0.113.9 seconds=60 proto=sip
//! WARN cpm::security: auth refused source=203.0.113.9 refused=1312 proto=sip
//! WARN cpm::security: replay refused source=203.0.113.9 user="bob@localhost" proto=http
//! WARN cpm::security: rate limited source=203.0.113.9 refused=90210 proto=sip
//! WARN cpm::security: lines suppressed kind="auth failure" suppressed=4180 per_sec=20
//! ```
//!
//! The cores bound what one source makes them report (a blocked or rate-limited source is
//! reported with a count now and then, not per request), but not what many sources do
//! together: a guessing run from a botnet, or from the 65536 /64s of one IPv6 /48, reports
//! every first failure of every source. So each kind of line is also capped here at
//! [`LINES_PER_SEC`] a second for the whole node; past that lines are counted, and the count
//! is written once the second is over (`lines suppressed`, which no `source=` pattern
//! matches). A log watcher then misses some sources of a large distributed run (the metrics
//! still count every event); the disk does not fill.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use cpm_proxy::SecurityEvent;

/// Most lines of one kind written per second (for the whole node).
pub(crate) const LINES_PER_SEC: u32 = 20;
/// The budget's window.
const WINDOW: Duration = Duration::from_secs(1);

/// The kinds of line, each with its own budget.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    AuthFailure,
    AuthBlocked,
    AuthUserBlocked,
    AuthRefused,
    ReplayRefused,
    RateLimited,
}

impl Kind {
    const COUNT: usize = 6;

    fn of(event: &SecurityEvent) -> Self {
        match event {
            SecurityEvent::AuthFailure { .. } => Self::AuthFailure,
            SecurityEvent::AuthBlocked { user: None, .. } => Self::AuthBlocked,
            SecurityEvent::AuthBlocked { user: Some(_), .. } => Self::AuthUserBlocked,
            SecurityEvent::AuthRefused { .. } => Self::AuthRefused,
            SecurityEvent::ReplayRefused { .. } => Self::ReplayRefused,
            SecurityEvent::RateLimited { .. } => Self::RateLimited,
        }
    }

    /// The line's message.
    fn name(self) -> &'static str {
        match self {
            Self::AuthFailure => "auth failure",
            Self::AuthBlocked => "auth blocked",
            Self::AuthUserBlocked => "auth user blocked",
            Self::AuthRefused => "auth refused",
            Self::ReplayRefused => "replay refused",
            Self::RateLimited => "rate limited",
        }
    }
}

/// What [`LineBudget::admit`] decides.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Admit {
    /// Write the line.
    write: bool,
    /// This is the first line suppressed in the window: arrange for the count to be
    /// written when the window ends.
    first_suppressed: bool,
    /// Lines suppressed in the window that just ended, to be reported now (0: none).
    ended_suppressed: u64,
}

/// One kind's budget: at most `max` lines per one-second window, the rest counted.
#[derive(Debug, Default)]
struct LineBudget {
    window_start: Option<Instant>,
    written: u32,
    suppressed: u64,
}

impl LineBudget {
    /// Whether a line may be written at `now`.
    fn admit(&mut self, now: Instant, max: u32) -> Admit {
        let mut ended_suppressed = 0;
        if self
            .window_start
            .is_none_or(|s| now.saturating_duration_since(s) >= WINDOW)
        {
            ended_suppressed = std::mem::take(&mut self.suppressed);
            self.window_start = Some(now);
            self.written = 0;
        }
        if self.written < max {
            self.written += 1;
            return Admit {
                write: true,
                first_suppressed: false,
                ended_suppressed,
            };
        }
        self.suppressed += 1;
        Admit {
            write: false,
            first_suppressed: self.suppressed == 1,
            ended_suppressed,
        }
    }

    /// The lines suppressed in a window that is over by `now` (taken; 0 if the window is
    /// still running or nothing was suppressed).
    fn take_ended(&mut self, now: Instant) -> u64 {
        match self.window_start {
            Some(s) if now.saturating_duration_since(s) >= WINDOW => {
                std::mem::take(&mut self.suppressed)
            }
            _ => 0,
        }
    }
}

/// The node's budgets, one per kind.
static BUDGETS: Mutex<[LineBudget; Kind::COUNT]> = Mutex::new(
    [const {
        LineBudget {
            window_start: None,
            written: 0,
            suppressed: 0,
        }
    }; Kind::COUNT],
);

fn budget<T>(kind: Kind, f: impl FnOnce(&mut LineBudget) -> T) -> T {
    let mut b = BUDGETS.lock().unwrap_or_else(PoisonError::into_inner);
    f(&mut b[kind as usize])
}

fn suppressed_line(kind: Kind, suppressed: u64) {
    tracing::warn!(
        target: "cpm::security",
        kind = kind.name(),
        suppressed,
        per_sec = LINES_PER_SEC,
        "lines suppressed"
    );
}

/// Writes one event (within the kind's budget); `proto` is `sip` or `http`.
pub(crate) fn log(event: &SecurityEvent, proto: &'static str) {
    let kind = Kind::of(event);
    let admit = budget(kind, |b| b.admit(Instant::now(), LINES_PER_SEC));
    if admit.ended_suppressed > 0 {
        suppressed_line(kind, admit.ended_suppressed);
    }
    if admit.first_suppressed {
        // The count is written when the window ends, even if no further line of the kind
        // comes (outside a runtime, with the next line of the kind).
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                tokio::time::sleep(WINDOW).await;
                let n = budget(kind, |b| b.take_ended(Instant::now()));
                if n > 0 {
                    suppressed_line(kind, n);
                }
            });
        }
    }
    if admit.write {
        write(event, proto);
    }
}

/// Writes the line of one event.
fn write(event: &SecurityEvent, proto: &'static str) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_budget_writes_max_lines_a_second_and_counts_the_rest() {
        let t0 = Instant::now();
        let mut b = LineBudget::default();
        for _ in 0..3 {
            assert!(b.admit(t0, 3).write);
        }
        let a = b.admit(t0 + Duration::from_millis(10), 3);
        assert_eq!(
            a,
            Admit {
                write: false,
                first_suppressed: true,
                ended_suppressed: 0
            }
        );
        for _ in 0..4 {
            let a = b.admit(t0 + Duration::from_millis(500), 3);
            assert!(!a.write && !a.first_suppressed);
        }
        // Within the window nothing is reported; after it, the five lines are, once.
        assert_eq!(b.take_ended(t0 + Duration::from_millis(999)), 0);
        assert_eq!(b.take_ended(t0 + WINDOW), 5);
        assert_eq!(b.take_ended(t0 + WINDOW), 0);
        // The next window starts with a full budget.
        let a = b.admit(t0 + Duration::from_millis(1500), 3);
        assert_eq!(
            a,
            Admit {
                write: true,
                first_suppressed: false,
                ended_suppressed: 0
            }
        );
    }

    #[test]
    fn the_next_line_reports_what_a_past_window_suppressed_when_no_timer_did() {
        let t0 = Instant::now();
        let mut b = LineBudget::default();
        assert!(b.admit(t0, 1).write);
        assert!(!b.admit(t0, 1).write);
        assert!(!b.admit(t0, 1).write);
        let a = b.admit(t0 + Duration::from_secs(5), 1);
        assert!(a.write);
        assert_eq!(a.ended_suppressed, 2);
    }

    #[test]
    fn every_event_has_its_own_kind() {
        use std::net::{IpAddr, Ipv4Addr};
        let source = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let events = [
            SecurityEvent::AuthFailure {
                source,
                user: "u".into(),
            },
            SecurityEvent::AuthBlocked {
                source,
                user: None,
                seconds: 1,
            },
            SecurityEvent::AuthBlocked {
                source,
                user: Some("u".into()),
                seconds: 1,
            },
            SecurityEvent::AuthRefused {
                source,
                user: None,
                refused: 1,
            },
            SecurityEvent::ReplayRefused {
                source,
                user: "u".into(),
            },
            SecurityEvent::RateLimited { source, refused: 1 },
        ];
        let mut kinds: Vec<usize> = events.iter().map(|e| Kind::of(e) as usize).collect();
        kinds.dedup();
        assert_eq!(kinds, (0..Kind::COUNT).collect::<Vec<_>>());
    }
}
