//! Character classes of RFC 3261 section 25.1 and a small cursor for header-value grammars.
//!
//! The whole crate uses one approach: a hand-written byte scanner for framing and start lines,
//! and this cursor (hand-written recursive descent) for header values. Header values reach the
//! cursor unfolded (line folding replaced by whitespace), so `LWS` here is `1*WSP`.

/// A set of bytes as a 256-entry table: one load per test, where a chain of comparisons would
/// cost a dozen branches on every byte of every header (the classes below run over each value
/// the parser reads).
pub(crate) struct ByteClass([bool; 256]);

impl ByteClass {
    /// ASCII letters and digits (when `alphanum`) plus the bytes of `extra`.
    pub(crate) const fn new(alphanum: bool, extra: &[u8]) -> Self {
        let mut table = [false; 256];
        let mut b = 0;
        while b < 256 {
            // Invariant: b < 256, so the cast is lossless.
            table[b] = alphanum && (b as u8).is_ascii_alphanumeric();
            b += 1;
        }
        let mut i = 0;
        while i < extra.len() {
            table[extra[i] as usize] = true;
            i += 1;
        }
        Self(table)
    }

    /// Whether `b` is in the set.
    pub(crate) fn contains(&self, b: u8) -> bool {
        self.0[usize::from(b)]
    }
}

/// RFC 3261 `token` characters.
static TOKEN: ByteClass = ByteClass::new(true, b"-.!%*_+`'~");

/// RFC 3261 `word` characters.
static WORD: ByteClass = ByteClass::new(true, b"-.!%*_+`'~()<>:\\\"/[]?{}");

/// RFC 3261 `unreserved` characters.
static UNRESERVED: ByteClass = ByteClass::new(true, b"-_.!~*'()");

/// RFC 3261 `reserved` characters.
static RESERVED: ByteClass = ByteClass::new(false, b";/?:@&=+$,");

/// RFC 3261 `alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" / "'" / "~"`.
pub(crate) fn is_token(b: u8) -> bool {
    TOKEN.contains(b)
}

/// RFC 3261 `word` characters: token characters plus `( ) < > : \ " / [ ] ? { }`.
pub(crate) fn is_word(b: u8) -> bool {
    WORD.contains(b)
}

/// RFC 3261 `unreserved = alphanum / mark`, `mark = "-" / "_" / "." / "!" / "~" / "*" / "'" /
/// "(" / ")"`.
pub(crate) fn is_unreserved(b: u8) -> bool {
    UNRESERVED.contains(b)
}

/// RFC 3261 `reserved = ";" / "/" / "?" / ":" / "@" / "&" / "=" / "+" / "$" / ","`.
pub(crate) fn is_reserved(b: u8) -> bool {
    RESERVED.contains(b)
}

/// Space or horizontal tab.
pub(crate) fn is_wsp(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// `s` without leading and trailing spaces and tabs: `str::trim_matches([' ', '\t'])`, with a
/// byte loop instead of a char pattern (this runs on several header values of every message).
pub(crate) fn trim_wsp(s: &str) -> &str {
    let b = s.as_bytes();
    let start = b.iter().position(|&c| !is_wsp(c)).unwrap_or(b.len());
    let end = b.iter().rposition(|&c| !is_wsp(c)).map_or(start, |i| i + 1);
    // Spaces and tabs are ASCII: both cuts are char boundaries.
    &s[start..end]
}

/// The position of the first `b` (an ASCII byte) in `s`.
///
/// URI components and header values are short; for them a plain loop costs less than setting
/// up `str::find`'s searcher, and these searches run on every message.
pub(crate) fn find_byte(s: &str, b: u8) -> Option<usize> {
    debug_assert!(b.is_ascii());
    s.bytes().position(|c| c == b)
}

/// `str::split_once` at an ASCII byte, with [`find_byte`].
pub(crate) fn split_once_byte(s: &str, b: u8) -> Option<(&str, &str)> {
    // An ASCII byte is a char boundary, and so is the position after it.
    find_byte(s, b).map(|i| (&s[..i], &s[i + 1..]))
}

/// `str::split` at an ASCII byte, with [`find_byte`].
pub(crate) fn split_byte(s: &str, b: u8) -> impl Iterator<Item = &str> {
    let mut rest = Some(s);
    std::iter::from_fn(move || {
        let r = rest?;
        match split_once_byte(r, b) {
            Some((piece, after)) => {
                rest = Some(after);
                Some(piece)
            }
            None => {
                rest = None;
                Some(r)
            }
        }
    })
}

/// Checks that every `%` in `s` starts a valid `escaped = "%" HEXDIG HEXDIG` and every other
/// byte satisfies `allowed`.
pub(crate) fn is_escaped_run(s: &str, allowed: impl Fn(u8) -> bool) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            if i + 2 >= b.len() {
                return false;
            }
            if !(b[i + 1].is_ascii_hexdigit() && b[i + 2].is_ascii_hexdigit()) {
                return false;
            }
            i += 3;
        } else if allowed(b[i]) {
            i += 1;
        } else {
            return false;
        }
    }
    true
}

/// A cursor over an unfolded header value.
pub(crate) struct Cursor<'a> {
    s: &'a str,
    pos: usize,
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(s: &'a str) -> Self {
        Self { s, pos: 0 }
    }

    pub(crate) fn pos(&self) -> usize {
        self.pos
    }

    /// Moves to `pos`, which must be a position this cursor has already been at (a char
    /// boundary).
    pub(crate) fn set_pos(&mut self, pos: usize) {
        self.pos = pos.min(self.s.len());
    }

    pub(crate) fn rest(&self) -> &'a str {
        &self.s[self.pos..]
    }

    pub(crate) fn slice(&self, from: usize, to: usize) -> &'a str {
        &self.s[from..to]
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.pos >= self.s.len()
    }

    pub(crate) fn peek(&self) -> Option<u8> {
        self.s.as_bytes().get(self.pos).copied()
    }

    /// Skips `SWS` (optional whitespace).
    pub(crate) fn sws(&mut self) {
        while self.peek().is_some_and(is_wsp) {
            self.pos += 1;
        }
    }

    /// Skips `LWS` and says whether there was any.
    pub(crate) fn lws(&mut self) -> bool {
        let start = self.pos;
        self.sws();
        self.pos > start
    }

    /// Consumes `c` if it is next.
    pub(crate) fn eat(&mut self, c: u8) -> bool {
        if self.peek() == Some(c) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    /// `SWS c SWS` (RFC 3261 `SEMI`, `COMMA`, `EQUAL`, `SLASH`, `COLON`): consumes it if `c` comes
    /// after optional whitespace; otherwise leaves the cursor where it was.
    pub(crate) fn sep(&mut self, c: u8) -> bool {
        let save = self.pos;
        self.sws();
        if self.eat(c) {
            self.sws();
            true
        } else {
            self.pos = save;
            false
        }
    }

    /// Takes the longest run of bytes matching `f` (possibly empty).
    pub(crate) fn take_while(&mut self, f: impl Fn(u8) -> bool) -> &'a str {
        let start = self.pos;
        let b = self.s.as_bytes();
        // A local index: the loop does not write the cursor back on every byte.
        let mut end = start;
        while end < b.len() && f(b[end]) {
            end += 1;
        }
        self.pos = end;
        // The run stops either at the end or before an ASCII byte matched by `f`'s negation;
        // every predicate used here accepts only ASCII, so both ends are char boundaries.
        &self.s[start..end]
    }

    /// A non-empty `token`.
    pub(crate) fn token(&mut self) -> Option<&'a str> {
        let t = self.take_while(is_token);
        (!t.is_empty()).then_some(t)
    }

    /// A `quoted-string` including its quotes; `None` if it is unterminated or holds a byte the
    /// grammar forbids (`quoted-pair = "\" (%x00-09 / %x0B-0C / %x0E-7F)`).
    pub(crate) fn quoted_string(&mut self) -> Option<&'a str> {
        let start = self.pos;
        if !self.eat(b'"') {
            return None;
        }
        let b = self.s.as_bytes();
        while self.pos < b.len() {
            match b[self.pos] {
                b'"' => {
                    self.pos += 1;
                    return Some(&self.s[start..self.pos]);
                }
                b'\\' => match b.get(self.pos + 1) {
                    Some(&c) if c <= 0x7f && c != b'\r' && c != b'\n' => self.pos += 2,
                    _ => break,
                },
                b'\r' | b'\n' => break,
                // qdtext: LWS / %x21 / %x23-5B / %x5D-7E / UTF8-NONASCII; controls are not qdtext.
                c if c < 0x20 && c != b'\t' => break,
                0x7f => break,
                _ => self.pos += 1,
            }
        }
        self.pos = start;
        None
    }
}

/// Removes the quotes and `quoted-pair` escapes of a `quoted-string`; other strings are returned
/// as they are.
pub fn unquote(s: &str) -> std::borrow::Cow<'_, str> {
    let Some(inner) = s.strip_prefix('"').and_then(|s| s.strip_suffix('"')) else {
        return s.into();
    };
    if !inner.contains('\\') {
        return inner.into();
    }
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(n) = chars.next() {
                out.push(n);
            }
        } else {
            out.push(c);
        }
    }
    out.into()
}

/// Quotes `s` as a `quoted-string`, escaping `"` and `\`.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_strings() {
        let mut c = Cursor::new(r#""J Rosenberg \\\""  x"#);
        assert_eq!(c.quoted_string(), Some(r#""J Rosenberg \\\"""#));
        assert_eq!(unquote(r#""J Rosenberg \\\"""#), r#"J Rosenberg \""#);
        let mut c = Cursor::new(r#""unterminated"#);
        assert_eq!(c.quoted_string(), None);
        assert_eq!(c.pos(), 0);
        assert_eq!(quote(r#"a"b\c"#), r#""a\"b\\c""#);
    }

    #[test]
    fn byte_classes_follow_the_grammar() {
        // The RFC 3261 section 25.1 definitions, written out as comparisons.
        let mark = |b: u8| {
            matches!(
                b,
                b'-' | b'_' | b'.' | b'!' | b'~' | b'*' | b'\'' | b'(' | b')'
            )
        };
        for b in 0..=255u8 {
            let alnum = b.is_ascii_alphanumeric();
            let token = alnum
                || matches!(
                    b,
                    b'-' | b'.' | b'!' | b'%' | b'*' | b'_' | b'+' | b'`' | b'\'' | b'~'
                );
            let word = token || b"()<>:\\\"/[]?{}".contains(&b);
            assert_eq!(is_token(b), token, "token {b}");
            assert_eq!(is_word(b), word, "word {b}");
            assert_eq!(is_unreserved(b), alnum || mark(b), "unreserved {b}");
            assert_eq!(is_reserved(b), b";/?:@&=+$,".contains(&b), "reserved {b}");
        }
    }

    #[test]
    fn trim_matches_str() {
        for s in ["", " ", "\t \t", "a", " a\t", "\ta b ", "é ", " ü"] {
            assert_eq!(trim_wsp(s), s.trim_matches([' ', '\t']), "{s:?}");
        }
    }

    #[test]
    fn byte_splits_match_str() {
        for s in ["", ";", "a", "a;b", ";a;;b;", "é;ü=x;"] {
            let ours: Vec<_> = split_byte(s, b';').collect();
            let std: Vec<_> = s.split(';').collect();
            assert_eq!(ours, std, "{s:?}");
            assert_eq!(split_once_byte(s, b';'), s.split_once(';'), "{s:?}");
            assert_eq!(find_byte(s, b';'), s.find(';'), "{s:?}");
        }
    }

    #[test]
    fn escapes() {
        assert!(is_escaped_run("a%20b", is_unreserved));
        assert!(!is_escaped_run("a%2", is_unreserved));
        assert!(!is_escaped_run("a%", is_unreserved));
        assert!(!is_escaped_run("a%zz", is_unreserved));
        assert!(!is_escaped_run("a b", is_unreserved));
    }
}
