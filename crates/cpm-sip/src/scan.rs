//! Character classes of RFC 3261 section 25.1 and a small cursor for header-value grammars.
//!
//! The whole crate uses one approach: a hand-written byte scanner for framing and start lines,
//! and this cursor (hand-written recursive descent) for header values. Header values reach the
//! cursor unfolded (line folding replaced by whitespace), so `LWS` here is `1*WSP`.

/// RFC 3261 `alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" / "'" / "~"`.
pub(crate) fn is_token(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'-' | b'.' | b'!' | b'%' | b'*' | b'_' | b'+' | b'`' | b'\'' | b'~'
        )
}

/// RFC 3261 `word` characters: token characters plus `( ) < > : \ " / [ ] ? { }`.
pub(crate) fn is_word(b: u8) -> bool {
    is_token(b)
        || matches!(
            b,
            b'(' | b')'
                | b'<'
                | b'>'
                | b':'
                | b'\\'
                | b'"'
                | b'/'
                | b'['
                | b']'
                | b'?'
                | b'{'
                | b'}'
        )
}

/// RFC 3261 `unreserved = alphanum / mark`.
pub(crate) fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'-' | b'_' | b'.' | b'!' | b'~' | b'*' | b'\'' | b'(' | b')'
        )
}

/// RFC 3261 `reserved`.
pub(crate) fn is_reserved(b: u8) -> bool {
    matches!(
        b,
        b';' | b'/' | b'?' | b':' | b'@' | b'&' | b'=' | b'+' | b'$' | b','
    )
}

/// Space or horizontal tab.
pub(crate) fn is_wsp(b: u8) -> bool {
    b == b' ' || b == b'\t'
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
        while self.pos < b.len() && f(b[self.pos]) {
            self.pos += 1;
        }
        // The run stops either at the end or before an ASCII byte matched by `f`'s negation;
        // every predicate used here accepts only ASCII, so both ends are char boundaries.
        &self.s[start..self.pos]
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
    fn escapes() {
        assert!(is_escaped_run("a%20b", is_unreserved));
        assert!(!is_escaped_run("a%2", is_unreserved));
        assert!(!is_escaped_run("a%", is_unreserved));
        assert!(!is_escaped_run("a%zz", is_unreserved));
        assert!(!is_escaped_run("a b", is_unreserved));
    }
}
