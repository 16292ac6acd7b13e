//! Line and MIME header helpers shared by CPIM and multipart.

use crate::ContentError;

/// Finds the line starting at `start`. Returns `(line_end, next_start)`; accepts CRLF and
/// bare LF. `None` if no line terminator follows.
pub(crate) fn next_line(buf: &[u8], start: usize) -> Option<(usize, usize)> {
    let nl = start + memchr::memchr(b'\n', buf.get(start..)?)?;
    let end = if nl > start && buf.get(nl - 1) == Some(&b'\r') {
        nl - 1
    } else {
        nl
    };
    Some((end, nl + 1))
}

/// RFC 5322 `ftext`-like header name characters (printable ASCII except `:`), without
/// whitespace.
pub(crate) fn is_name(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_graphic() && b != b':')
}

/// Parses a header block that ends with an empty line.
///
/// Returns the `(name, value)` pairs (trimmed) and the offset just after the empty line.
/// With `folding`, lines that start with SP/HTAB continue the previous value (RFC 5322 §2.2.3);
/// CPIM (RFC 3862 §3.1) has no folding.
pub(crate) fn parse_header_block(
    buf: &[u8],
    mut pos: usize,
    max_headers: usize,
    folding: bool,
    what: &'static str,
) -> Result<(Vec<(String, String)>, usize), ContentError> {
    let mut headers: Vec<(String, String)> = Vec::new();
    loop {
        let Some((end, next)) = next_line(buf, pos) else {
            return Err(ContentError::malformed(
                what,
                "header block not terminated by an empty line",
            ));
        };
        let line = buf.get(pos..end).unwrap_or_default();
        pos = next;
        if line.is_empty() {
            return Ok((headers, pos));
        }
        let line = std::str::from_utf8(line)
            .map_err(|_| ContentError::malformed(what, "header line is not UTF-8"))?;
        if line.starts_with([' ', '\t']) {
            match headers.last_mut() {
                Some((_, value)) if folding => {
                    value.push(' ');
                    value.push_str(line.trim());
                    continue;
                }
                _ => {
                    return Err(ContentError::malformed(
                        what,
                        "unexpected continuation line",
                    ));
                }
            }
        }
        let Some((name, value)) = line.split_once(':') else {
            return Err(ContentError::malformed(what, "header line without a colon"));
        };
        let name = name.trim_end();
        if !is_name(name) {
            return Err(ContentError::malformed(what, "invalid header name"));
        }
        if headers.len() >= max_headers {
            return Err(ContentError::malformed(what, "too many header lines"));
        }
        headers.push((name.to_owned(), value.trim().to_owned()));
    }
}

/// True if `s` can go into a header line unchanged (no CR, LF or NUL).
pub(crate) fn is_header_value(s: &str) -> bool {
    !s.bytes().any(|b| matches!(b, b'\r' | b'\n' | 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_crlf_and_lf() {
        let b = b"a\r\nb\nc";
        assert_eq!(next_line(b, 0), Some((1, 3)));
        assert_eq!(next_line(b, 3), Some((4, 5)));
        assert_eq!(next_line(b, 5), None);
        assert_eq!(next_line(b, 99), None);
    }

    #[test]
    fn folding() {
        let b = b"A: 1\r\n  2\r\nB:3\r\n\r\nrest";
        let (h, pos) = parse_header_block(b, 0, 8, true, "t").unwrap();
        assert_eq!(
            h,
            vec![("A".into(), "1 2".into()), ("B".into(), "3".into())]
        );
        assert_eq!(&b[pos..], b"rest");
        assert!(parse_header_block(b, 0, 8, false, "t").is_err());
        assert!(parse_header_block(b, 0, 1, true, "t").is_err());
        assert!(parse_header_block(b"A: 1\r\n", 0, 8, true, "t").is_err());
        assert!(parse_header_block(b"no colon\r\n\r\n", 0, 8, true, "t").is_err());
        assert!(parse_header_block(b"A B: x\r\n\r\n", 0, 8, true, "t").is_err());
    }
}
