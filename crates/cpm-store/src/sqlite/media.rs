//! Media objects (files a transfer brought) on disk: `data_dir/media/<id>.part` while it is
//! written, `data_dir/media/<id>` once complete. The database holds what links to them (the
//! history records, with the object's name, type, size and hash); the files hold the bytes.

use std::fs::{self, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::batch::Answer;
use crate::ops::OpError;

fn part(dir: &Path, id: &str) -> PathBuf {
    dir.join(format!("{id}.part"))
}

fn backend(e: &std::io::Error) -> Answer {
    Answer::Refused(OpError::Backend(format!("media: {e}")))
}

/// Writes a piece at `offset` of an incomplete object (creating it).
pub(super) fn write(dir: &Path, id: &str, offset: u64, data: &[u8]) -> Answer {
    let run = || -> std::io::Result<()> {
        let mut f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(part(dir, id))?;
        f.seek(SeekFrom::Start(offset))?;
        f.write_all(data)
    };
    match run() {
        Ok(()) => Answer::Done,
        Err(e) => backend(&e),
    }
}

/// Completes an object of `size` octets: synced to disk, then renamed to its final name
/// (and the directory synced, so the name survives a crash). `None` when it is complete;
/// otherwise the answer to give (the object is deleted when its size is wrong).
pub(super) fn finish(dir: &Path, id: &str, size: u64) -> Option<Answer> {
    let path = part(dir, id);
    let len = fs::metadata(&path).map_or(0, |m| m.len());
    if len != size {
        let _ = fs::remove_file(&path);
        return Some(Answer::Refused(OpError::Invalid(format!(
            "media object {id} holds {len} octets, not {size}"
        ))));
    }
    let run = || -> std::io::Result<()> {
        OpenOptions::new().write(true).open(&path)?.sync_all()?;
        fs::rename(&path, dir.join(id))?;
        fs::File::open(dir)?.sync_all()
    };
    run().err().map(|e| backend(&e))
}

/// Deletes an incomplete object (a complete one stays: its history links to it).
pub(super) fn drop_incomplete(dir: &Path, id: &str) -> Answer {
    match fs::remove_file(part(dir, id)) {
        Ok(()) => Answer::Done,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Answer::Done,
        Err(e) => backend(&e),
    }
}
