//! `cpm client chat`: one chat session (MSRP) with a peer, fed from stdin.
//!
//! The core does the session (INVITE, MSRP, IMDNs); this program registers, starts it, reads
//! lines on a thread of its own, hands each to [`cpm_client::Client::send_chat`] and prints
//! what happens. On a terminal it runs until EOF, SIGINT or the session's end; from a pipe it
//! sends every line and exits once each got its MSRP 200 (and, with `--wait-delivered`, its
//! delivery notification).

use std::collections::{HashMap, HashSet, VecDeque};
use std::io::{BufRead as _, IsTerminal as _};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use cpm_client::{Event, Notification, SendId, SessionId};
use serde_json::json;
use tokio::sync::mpsc;

use super::{
    Common, Driver, RESPONSE_TIMEOUT, Step, UNREGISTER_TIMEOUT, auth_hint, emit, event_line,
    message_line, one_line,
};

/// A chat event as one JSON object: `type` (as `listen --json` names its objects) and
/// `event` carry the same name.
fn chat_json(name: &str, mut fields: serde_json::Value) -> String {
    if let Some(o) = fields.as_object_mut() {
        o.insert("type".into(), name.into());
        o.insert("event".into(), name.into());
    }
    fields.to_string()
}

/// Reads stdin lines on a thread (a blocking read has no place on the runtime).
fn stdin_lines() -> mpsc::UnboundedReceiver<String> {
    let (tx, rx) = mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// What the chat waits for.
#[derive(Default)]
struct Chat {
    session: Option<SessionId>,
    up: bool,
    /// Lines read before the session was up.
    pending: VecDeque<String>,
    /// Messages sent and not answered yet, with their `imdn.Message-ID`.
    unanswered: HashMap<SendId, String>,
    /// Messages whose delivery notification is awaited (`--wait-delivered`).
    undelivered: HashSet<String>,
    input_done: bool,
    sent: usize,
}

/// Runs `cpm client chat`.
pub(super) async fn chat(
    c: &Common,
    peer: &str,
    wait_delivered: Option<f64>,
) -> Result<ExitCode, String> {
    let terminal = std::io::stdin().is_terminal();
    let device = c
        .device
        .clone()
        .unwrap_or_else(|| "default-chat".to_owned());
    let mut d = Driver::open(c, &device, 600, c.device.is_some(), false).await?;
    d.stop = Some(super::stop_signal());
    // Register first, as `listen` does: the peer's messages and notifications reach this
    // device too.
    if !d.register_and_wait().await? {
        return Ok(ExitCode::from(1));
    }
    let mut st = Chat {
        session: Some(
            d.client
                .start_session(Instant::now(), peer)
                .map_err(|e| e.to_string())?,
        ),
        ..Chat::default()
    };
    d.input = Some(stdin_lines());
    let json_out = c.json;
    // Until the session is up: the INVITE's own timeout (Timer B, 32 s) ends it; this is a
    // backstop. Later: each message's MSRP timeout (30 s) answers it.
    let mut deadline = Some(Instant::now() + RESPONSE_TIMEOUT);
    let mut delivered_deadline: Option<Instant> = None;
    let result: Result<(), String> = loop {
        // A pipe is done once every line is answered (and delivered, if asked).
        if !terminal && st.input_done && st.pending.is_empty() && st.unanswered.is_empty() {
            match wait_delivered {
                Some(w) if !st.undelivered.is_empty() => {
                    let at = *delivered_deadline
                        .get_or_insert_with(|| Instant::now() + Duration::from_secs_f64(w));
                    deadline = Some(at);
                }
                _ => break Ok(()),
            }
        }
        match d.step(deadline).await {
            Step::Line(line) => {
                if line.is_empty() {
                    continue;
                }
                if st.up {
                    send_line(&mut d, &mut st, &line, wait_delivered.is_some());
                } else {
                    st.pending.push_back(line);
                }
            }
            Step::Input => {}
            Step::InputEnd => {
                st.input_done = true;
                if terminal {
                    break Ok(());
                }
                if st.sent == 0 && st.pending.is_empty() && st.up {
                    break Ok(());
                }
            }
            Step::Event(ev) => match ev {
                Event::SessionStarted { session, .. } if Some(session) == st.session => {
                    st.up = true;
                    deadline = None;
                    emit(&session_line(&ev, json_out));
                    while let Some(line) = st.pending.pop_front() {
                        send_line(&mut d, &mut st, &line, wait_delivered.is_some());
                    }
                    if st.input_done && st.sent == 0 {
                        break Ok(());
                    }
                }
                Event::SessionEnded {
                    session,
                    status,
                    ref reason,
                    ..
                } if Some(session) == st.session => {
                    emit(&session_line(&ev, json_out));
                    st.session = None;
                    let reason = reason.clone();
                    // Results of what was still waiting came before this event.
                    if !st.up {
                        break Err(format!(
                            "session refused: {status} {reason}{}",
                            auth_hint(status)
                        ));
                    }
                    if terminal {
                        break Ok(());
                    }
                    if st.unanswered.is_empty() && st.pending.is_empty() && st.input_done {
                        break Ok(());
                    }
                    break Err(format!("session ended: {status} {reason}"));
                }
                Event::SendResult {
                    id,
                    status,
                    reason,
                    message_id,
                } if st.unanswered.contains_key(&id) => {
                    st.unanswered.remove(&id);
                    if json_out {
                        emit(&chat_json(
                            "sent",
                            json!({"message_id": message_id, "status": status, "reason": reason}),
                        ));
                    } else {
                        emit(&format!("sent id={message_id}: {status} {reason}"));
                    }
                    if status != 200 {
                        st.undelivered.remove(&message_id);
                        if !terminal {
                            break Err(format!("message not sent: {status} {reason}"));
                        }
                    }
                }
                Event::Imdn(i) => {
                    let name = match i.notification {
                        Notification::Delivery(_) => "delivered",
                        Notification::Display(_) => "displayed",
                        Notification::Processing(_) => "processed",
                    };
                    let status = cpm_client::notification_status(i.notification);
                    if json_out {
                        emit(&chat_json(
                            name,
                            json!({"from": i.from, "message_id": i.message_id, "status": status}),
                        ));
                    } else {
                        emit(&format!("{status} from={} id={}", i.from, i.message_id));
                    }
                    if matches!(i.notification, Notification::Delivery(_)) {
                        st.undelivered.remove(&i.message_id);
                    }
                }
                Event::Message(m) => {
                    if json_out {
                        let mut v: serde_json::Value =
                            serde_json::from_str(&message_line(&m, true)).unwrap_or_default();
                        if let Some(o) = v.as_object_mut() {
                            o.insert("event".into(), "message".into());
                        }
                        emit(&v.to_string());
                    } else {
                        emit(&message_line(&m, false));
                    }
                    // On a terminal the message was shown to the user (RFC 5438 section
                    // 5.1: display notifications say so).
                    if terminal && m.display_requested {
                        d.client.send_displayed(Instant::now(), &m.message_id);
                    }
                }
                Event::Composing { from, active, .. } => {
                    let state = if active { "active" } else { "idle" };
                    if json_out {
                        emit(&chat_json(
                            "composing",
                            json!({"from": from, "state": state}),
                        ));
                    } else {
                        emit(&format!("composing from={from} state={state}"));
                    }
                }
                Event::RegistrationFailed {
                    status,
                    reason,
                    will_retry: false,
                } => {
                    break Err(format!(
                        "registration failed: {status} {reason}{}",
                        auth_hint(status)
                    ));
                }
                // Other sessions, our own notifications, refreshes: as `listen` prints them.
                other => {
                    if let Some(line) = event_line(&other, c, &device, json_out) {
                        emit(&line);
                    }
                }
            },
            Step::Stop => {
                break if terminal {
                    Ok(())
                } else {
                    Err("interrupted".into())
                };
            }
            Step::Deadline if !d.heard => break Err(d.no_answer()),
            Step::Deadline if !st.up => {
                break Err(format!(
                    "session with {peer}: no answer within {} s",
                    RESPONSE_TIMEOUT.as_secs()
                ));
            }
            Step::Deadline => {
                let mut missing: Vec<&str> = st.undelivered.iter().map(String::as_str).collect();
                missing.sort_unstable();
                break Err(format!(
                    "no delivery notification for {} within {} s: {}",
                    missing.len(),
                    wait_delivered.unwrap_or_default(),
                    missing.join(", ")
                ));
            }
        }
    };
    // End the session (BYE), then the registration.
    if let Some(session) = st.session {
        d.client.end_session(Instant::now(), session);
        let until = Instant::now() + UNREGISTER_TIMEOUT;
        while d.client.has_pending() {
            match d.step(Some(until)).await {
                Step::Event(ev @ Event::SessionEnded { .. }) => {
                    emit(&session_line(&ev, json_out));
                }
                Step::Deadline | Step::Stop => break,
                Step::Event(_) | Step::Line(_) | Step::InputEnd | Step::Input => {}
            }
        }
    }
    d.input = None;
    d.shutdown(|_| {}).await;
    result.map(|()| ExitCode::SUCCESS)
}

/// Sends one line in the session.
fn send_line(d: &mut Driver, st: &mut Chat, line: &str, wait_delivered: bool) {
    let Some(session) = st.session else { return };
    match d.client.send_chat(Instant::now(), session, line) {
        Ok(id) => {
            let message_id = d.client.message_id(id).unwrap_or_default().to_owned();
            if wait_delivered {
                st.undelivered.insert(message_id.clone());
            }
            st.unanswered.insert(id, message_id);
            st.sent += 1;
        }
        Err(e) => eprintln!("cpm: not sent ({e}): {}", one_line(line)),
    }
}

/// `session-started` / `session-ended`.
fn session_line(ev: &Event, json_out: bool) -> String {
    match ev {
        Event::SessionStarted { peer, .. } if json_out => {
            chat_json("session-started", json!({"peer": peer}))
        }
        Event::SessionStarted { peer, .. } => format!("session-started peer={peer}"),
        Event::SessionEnded {
            status,
            reason,
            by_peer,
            ..
        } if json_out => chat_json(
            "session-ended",
            json!({"status": status, "reason": reason, "by_peer": by_peer}),
        ),
        Event::SessionEnded { status, reason, .. } => format!("session-ended: {status} {reason}"),
        _ => String::new(),
    }
}
