//! What a file transfer needs besides the protocol: the description of a file, its SHA-1
//! (computed incrementally, RFC 5547 section 6 names `sha-1`), a safe local name for a
//! received file, and a media type guessed from a name. Pure: the driver reads and writes
//! the files.

use sha1::{Digest as _, Sha1};

/// A file offered or received: what an RFC 5547 `a=file-selector` says about it.
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct FileDescription {
    /// The file name (for a received file: made safe by [`sanitize_file_name`]).
    pub name: String,
    /// The media type (`image/jpeg`).
    pub media_type: String,
    /// Octets.
    pub size: u64,
    /// The SHA-1 of the content, when known.
    pub sha1: Option<[u8; 20]>,
}

/// The SHA-1 of a file, fed piece by piece.
#[derive(Clone, Debug, Default)]
pub struct FileHasher(Sha1);

impl FileHasher {
    /// An empty hash.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the next octets.
    pub fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }

    /// The hash of everything added.
    pub fn finish(self) -> [u8; 20] {
        self.0.finalize().into()
    }
}

/// Lower-case hex without separators (`sha1sum`'s form): what `cpm client` prints.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// The longest local name we make (in octets, below every common file system's 255).
const MAX_NAME: usize = 200;

/// A name a received file can be stored under in a directory without leaving it or hiding:
/// the last path component only (`/` and `\` both separate), no control characters, none of
/// `:*?"<>|`, no `..`, no leading dot or space, at most 200 octets; `file` when nothing
/// is left.
pub fn sanitize_file_name(name: &str) -> String {
    let base = name.rsplit(['/', '\\']).next().unwrap_or_default();
    let mut out: String = base
        .chars()
        .filter(|c| !c.is_control())
        .map(|c| if ":*?\"<>|".contains(c) { '_' } else { c })
        .collect();
    while out.contains("..") {
        out = out.replace("..", ".");
    }
    let mut out = out
        .trim_start_matches(['.', ' '])
        .trim_end_matches([' ', '.'])
        .to_owned();
    if out.len() > MAX_NAME {
        let mut cut = MAX_NAME;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
    }
    if out.is_empty() {
        "file".to_owned()
    } else {
        out
    }
}

/// The media type for a file name's extension (a small table: jpg/jpeg, png, gif, txt, pdf,
/// mp4), `application/octet-stream` otherwise.
pub fn media_type_for(name: &str) -> &'static str {
    let ext = name
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "jpg" | "jpeg" => "image/jpeg",
        "png" => "image/png",
        "gif" => "image/gif",
        "txt" => "text/plain",
        "pdf" => "application/pdf",
        "mp4" => "video/mp4",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_made_safe() {
        assert_eq!(sanitize_file_name("photo.jpg"), "photo.jpg");
        assert_eq!(sanitize_file_name("../../etc/passwd"), "passwd");
        assert_eq!(sanitize_file_name("..\\..\\boot.ini"), "boot.ini");
        assert_eq!(sanitize_file_name(".bashrc"), "bashrc");
        assert_eq!(sanitize_file_name(".."), "file");
        assert_eq!(sanitize_file_name("dir/"), "file");
        assert_eq!(sanitize_file_name(""), "file");
        assert_eq!(sanitize_file_name("a..b"), "a.b");
        assert_eq!(sanitize_file_name("x\0y\r\n.txt"), "xy.txt");
        assert_eq!(sanitize_file_name("c:evil?.txt"), "c_evil_.txt");
        assert_eq!(sanitize_file_name(&"é".repeat(300)).len(), 200);
    }

    #[test]
    fn types_and_hashes() {
        assert_eq!(media_type_for("a.JPG"), "image/jpeg");
        assert_eq!(media_type_for("a.tar.gz"), "application/octet-stream");
        assert_eq!(media_type_for("README"), "application/octet-stream");
        let mut h = FileHasher::new();
        h.update(b"ab");
        h.update(b"c");
        assert_eq!(hex(&h.finish()), "a9993e364706816aba3e25717850c26c9cd0d89d");
    }
}
