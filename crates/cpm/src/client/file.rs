//! `cpm client send-file` and the downloads of `cpm client listen --download-dir`: the file
//! side of a file transfer. The core does the protocol (INVITE, chunks, window, hash check);
//! this reads the chunks it asks for, writes the ones it hands on to `<name>.part`, and
//! renames or deletes that file when the core says the transfer ended.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{IsTerminal as _, Read as _};
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use bytes::Bytes;
use cpm_client::{Event, FileDescription, FileHasher, SessionId, hex, media_type_for};
use serde_json::json;

use super::{Common, Driver, RESPONSE_TIMEOUT, Step, auth_hint, emit};

/// Reads a file once: its size and SHA-1.
fn describe(path: &Path) -> Result<(File, FileDescription), String> {
    let shown = path.display();
    let mut f = File::open(path).map_err(|e| format!("cannot read {shown}: {e}"))?;
    let mut hasher = FileHasher::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut size = 0u64;
    loop {
        let n = f
            .read(&mut buf)
            .map_err(|e| format!("cannot read {shown}: {e}"))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| format!("{shown} has no file name"))?;
    Ok((
        f,
        FileDescription {
            media_type: media_type_for(&name).to_owned(),
            name,
            size,
            sha1: Some(hasher.finish()),
        },
    ))
}

/// Runs `cpm client send-file`.
pub(super) async fn send_file(c: &Common, peer: &str, path: &Path) -> Result<ExitCode, String> {
    let (file, desc) = describe(path)?;
    let device = c
        .device
        .clone()
        .unwrap_or_else(|| "default-file".to_owned());
    let mut d = Driver::open(c, &device, 600, false, false).await?;
    d.stop = Some(super::stop_signal());
    let start = Instant::now();
    let session = d
        .client
        .send_file(start, peer, desc.clone())
        .map_err(|e| e.to_string())?;
    let bar = (!c.json && std::io::stderr().is_terminal()).then(|| {
        let bar = indicatif::ProgressBar::new(desc.size);
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(desc.name.clone());
        bar
    });
    // Until the session is up, the INVITE's own timeout (Timer B) ends it; this is a
    // backstop. Afterwards each chunk's MSRP timeout (30 s) does.
    let mut deadline = Some(start + RESPONSE_TIMEOUT);
    let result = loop {
        match d.step(d.answer_deadline(start, deadline)).await {
            Step::Event(Event::FileNeeded {
                session: s,
                offset,
                len,
            }) if s == session => {
                let mut buf = vec![0u8; usize::try_from(len).unwrap_or(0)];
                match file.read_exact_at(&mut buf, offset) {
                    Ok(()) => {
                        d.client.provide_file_data(
                            Instant::now(),
                            session,
                            offset,
                            Bytes::from(buf),
                        );
                    }
                    Err(e) => {
                        let reason = format!("cannot read {}: {e}", path.display());
                        d.client.file_read_failed(Instant::now(), session, &reason);
                    }
                }
            }
            Step::Event(Event::SessionStarted { session: s, .. }) if s == session => {
                deadline = None;
            }
            Step::Event(Event::FileProgress {
                session: s, done, ..
            }) if s == session => {
                if let Some(b) = &bar {
                    b.set_position(done);
                }
            }
            Step::Event(Event::FileSent { session: s, file }) if s == session => {
                if let Some(b) = &bar {
                    b.finish_and_clear();
                }
                let sha1 = file.sha1.map(|h| hex(&h)).unwrap_or_default();
                if c.json {
                    emit(
                        &json!({"type": "file-sent", "event": "file-sent", "name": file.name,
                            "size": file.size, "sha1": sha1})
                        .to_string(),
                    );
                } else {
                    emit(&format!(
                        "sent {} {} bytes sha-1 {sha1}",
                        file.name, file.size
                    ));
                }
                break Ok(());
            }
            Step::Event(Event::FileFailed {
                session: s,
                status,
                reason,
                ..
            }) if s == session => {
                break Err(format!(
                    "file not sent: {status} {reason}{}",
                    auth_hint(status)
                ));
            }
            Step::Event(Event::SessionEnded {
                session: s,
                status,
                reason,
                ..
            }) if s == session => {
                break Err(format!("file not sent: {status} {reason}"));
            }
            Step::Event(_) | Step::Line(_) | Step::InputEnd | Step::Input => {}
            Step::Deadline if !d.heard => break Err(d.no_answer()),
            Step::Deadline => {
                break Err(format!(
                    "file transfer to {peer}: no answer within {} s",
                    RESPONSE_TIMEOUT.as_secs()
                ));
            }
            Step::Stop => {
                d.client.end_session(Instant::now(), session);
                break Err("interrupted".into());
            }
        }
    };
    if let Some(b) = &bar {
        b.abandon();
    }
    // The BYE (after success or failure) goes out, briefly.
    d.settle().await;
    result.map(|()| ExitCode::SUCCESS)
}

/// A file being received into `<name>.part`.
struct Part {
    file: File,
    path: PathBuf,
    from: String,
}

/// The files `listen --download-dir` is receiving.
pub(super) struct Downloads {
    dir: PathBuf,
    parts: HashMap<SessionId, Part>,
}

/// `name` with ` (n)` before its extension (`a.tar.gz` gives `a.tar (1).gz`).
fn numbered(name: &str, n: u32) -> String {
    if n == 0 {
        return name.to_owned();
    }
    match name.rsplit_once('.') {
        Some((stem, ext)) if !stem.is_empty() => format!("{stem} ({n}).{ext}"),
        _ => format!("{name} ({n})"),
    }
}

impl Downloads {
    /// Downloads into `dir`.
    pub(super) fn new(dir: PathBuf) -> Self {
        Self {
            dir,
            parts: HashMap::new(),
        }
    }

    /// Handles a file event of the core; returns a line to print, if any. A file that
    /// cannot be written ends its session (the core then reports it failed).
    pub(super) fn on_event(
        &mut self,
        d: &mut Driver,
        ev: &Event,
        json_out: bool,
    ) -> Option<String> {
        match ev {
            Event::FileIncoming {
                session,
                from,
                file,
            } => {
                match self.create_part(&file.name) {
                    Ok((f, path)) => {
                        self.parts.insert(
                            *session,
                            Part {
                                file: f,
                                path,
                                from: from.clone(),
                            },
                        );
                    }
                    Err(e) => {
                        eprintln!("cpm: cannot store {}: {e}", file.name);
                        d.client.end_session(Instant::now(), *session);
                    }
                }
                None
            }
            Event::FileData {
                session,
                offset,
                data,
            } => {
                let failed = match self.parts.get(session) {
                    Some(p) => p.file.write_all_at(data, *offset).err(),
                    None => None,
                };
                if let Some(e) = failed {
                    eprintln!("cpm: cannot write a received file: {e}");
                    d.client.end_session(Instant::now(), *session);
                }
                None
            }
            Event::FileReceived {
                session,
                from,
                file,
            } => {
                let part = self.parts.remove(session)?;
                let sha1 = file.sha1.map(|h| hex(&h)).unwrap_or_default();
                match self.finish(part, &file.name) {
                    Ok(path) => Some(file_line(json_out, from, file, &sha1, &path)),
                    Err((part_path, e)) => {
                        let _ = std::fs::remove_file(part_path);
                        Some(failed_line(
                            json_out,
                            from,
                            &file.name,
                            500,
                            &format!("cannot store the file: {e}"),
                        ))
                    }
                }
            }
            Event::FileFailed {
                session,
                incoming: true,
                name,
                status,
                reason,
            } => {
                let from = match self.parts.remove(session) {
                    Some(p) => {
                        drop(p.file);
                        let _ = std::fs::remove_file(&p.path);
                        p.from
                    }
                    None => String::new(),
                };
                Some(failed_line(json_out, &from, name, *status, reason))
            }
            _ => None,
        }
    }

    /// `<name>.part`, or `<name> (n).part` if that is taken (another transfer of that name).
    fn create_part(&self, name: &str) -> std::io::Result<(File, PathBuf)> {
        let mut n = 0;
        loop {
            let path = self.dir.join(format!("{}.part", numbered(name, n)));
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(f) => return Ok((f, path)),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && n < 1000 => n += 1,
                Err(e) => return Err(e),
            }
        }
    }

    /// Flushes the part file and gives it its name (never replacing a file: a hard link
    /// fails where the name exists, then ` (1)`, ` (2)`...).
    fn finish(&self, part: Part, name: &str) -> Result<PathBuf, (PathBuf, std::io::Error)> {
        if let Err(e) = part.file.sync_all() {
            return Err((part.path, e));
        }
        drop(part.file);
        let mut n = 0;
        loop {
            let path = self.dir.join(numbered(name, n));
            match std::fs::hard_link(&part.path, &path) {
                Ok(()) => {
                    let _ = std::fs::remove_file(&part.path);
                    return Ok(path);
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && n < 10_000 => n += 1,
                Err(e) => return Err((part.path, e)),
            }
        }
    }

    /// Deletes what is still being received (at exit: never a half file left behind).
    pub(super) fn discard_all(&mut self) {
        for (_, p) in self.parts.drain() {
            drop(p.file);
            let _ = std::fs::remove_file(&p.path);
        }
    }
}

fn file_line(
    json_out: bool,
    from: &str,
    file: &FileDescription,
    sha1: &str,
    path: &Path,
) -> String {
    if json_out {
        return json!({"type": "file", "from": from, "name": file.name, "size": file.size,
            "sha1": sha1, "path": path.display().to_string()})
        .to_string();
    }
    format!(
        "file from={from} name={} size={} sha1={sha1} path={}",
        file.name,
        file.size,
        path.display()
    )
}

fn failed_line(json_out: bool, from: &str, name: &str, status: u16, reason: &str) -> String {
    if json_out {
        return json!({"type": "file-failed", "from": from, "name": name, "status": status,
            "reason": reason})
        .to_string();
    }
    format!("file-failed from={from} name={name}: {status} {reason}")
}
