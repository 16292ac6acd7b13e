//! `cpm client listen`: register, print every message, notification and event, take the
//! file transfers into `--download-dir`, until a stop signal.

use std::process::ExitCode;
use std::time::Instant;

use cpm_client::Event;

use super::{
    Common, Driver, Step, UNREGISTER_TIMEOUT, auth_hint, emit, event_line, file, stop_signal,
};

pub(super) async fn listen(
    c: &Common,
    auto_display: bool,
    expires: u32,
    download_dir: Option<std::path::PathBuf>,
) -> Result<ExitCode, String> {
    if expires == 0 {
        return Err("--expires must be at least 1".into());
    }
    let device = c.device.clone().unwrap_or_else(|| "default".to_owned());
    let stop = stop_signal();
    let mut d = Driver::open(c, &device, expires, true, download_dir.is_some()).await?;
    let mut downloads = download_dir.map(file::Downloads::new);
    d.stop = Some(stop);
    let start = Instant::now();
    d.client.register(start);
    loop {
        // Until the server has answered once, wait for it at most --timeout: nothing
        // listening there is a mistake to report, not a reason to wait forever. Later
        // failures (the node restarted, a network outage) are retried with back-off.
        match d.step(d.answer_deadline(start, None)).await {
            Step::Event(ev) => {
                if let Some(line) = event_line(&ev, c, &device, c.json) {
                    emit(&line);
                }
                if let Some(line) = downloads
                    .as_mut()
                    .and_then(|dl| dl.on_event(&mut d, &ev, c.json))
                {
                    emit(&line);
                }
                match ev {
                    Event::RegistrationFailed {
                        status,
                        reason,
                        will_retry: false,
                    } => {
                        eprintln!(
                            "cpm: registration failed: {status} {reason}{}",
                            auth_hint(status)
                        );
                        return Ok(ExitCode::from(1));
                    }
                    Event::RegistrationFailed {
                        status,
                        reason,
                        will_retry: true,
                    } => {
                        eprintln!("cpm: registration failed: {status} {reason}; retrying");
                    }
                    Event::Message(m) if auto_display && m.display_requested => {
                        d.client.send_displayed(Instant::now(), &m.message_id);
                    }
                    // Printed above; nothing else to do (listed, so a new event is a compile
                    // error here until it is handled). Incoming sessions are accepted by the
                    // core (`ClientConfig::auto_accept`); their messages come as `Message`.
                    Event::Registered { .. }
                    | Event::Unregistered { .. }
                    | Event::SendResult { .. }
                    | Event::Message(_)
                    | Event::Imdn(_)
                    | Event::NotificationSent { .. }
                    | Event::SessionIncoming { .. }
                    | Event::SessionStarted { .. }
                    | Event::SessionEnded { .. }
                    | Event::Composing { .. } => {}
                    // Handled by `downloads` above (refused by the core without it).
                    Event::FileIncoming { .. }
                    | Event::FileNeeded { .. }
                    | Event::FileData { .. }
                    | Event::FileProgress { .. }
                    | Event::FileSent { .. }
                    | Event::FileReceived { .. }
                    | Event::FileFailed { .. } => {}
                }
            }
            Step::Stop => break,
            // `listen` reads no input.
            Step::Line(_) | Step::InputEnd | Step::Input => {}
            Step::Deadline => {
                if !d.heard {
                    return Err(d.no_answer());
                }
            }
        }
    }
    if let Some(dl) = downloads.as_mut() {
        dl.discard_all();
    }
    let unregistered = d
        .shutdown(|ev| {
            if let Some(line) = event_line(ev, c, &device, c.json) {
                emit(&line);
            }
        })
        .await;
    match unregistered {
        Some(0 | 200..=299) => {}
        Some(status) => {
            eprintln!("cpm: de-registration refused ({status}); the binding stays until it expires")
        }
        None => eprintln!(
            "cpm: de-registration got no answer within {} s; the binding stays until it expires",
            UNREGISTER_TIMEOUT.as_secs()
        ),
    }
    Ok(ExitCode::SUCCESS)
}
