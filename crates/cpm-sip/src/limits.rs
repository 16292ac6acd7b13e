//! Limits that bound what hostile input can cost.

/// Size limits applied while parsing. Exceeding one is [`ParseErrorKind::TooLarge`]
/// (answered with 513 Message Too Large, RFC 3261 section 21.5.14).
///
/// [`ParseErrorKind::TooLarge`]: crate::ParseErrorKind::TooLarge
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub struct Limits {
    /// Largest header section (start line and header fields), in octets.
    pub max_head_len: usize,
    /// Largest body, in octets.
    pub max_body_len: usize,
    /// Most header fields in one message.
    pub max_headers: usize,
    /// Longest single line (start line or one physical header line), in octets.
    pub max_line_len: usize,
}

impl Default for Limits {
    /// 32 KiB of headers, 1 MiB of body, 256 header fields, 8 KiB lines: far above what real
    /// SIP traffic uses (RFC 4475's long-values message has 3.5 KB), small enough that a stream
    /// connection cannot make us buffer without bound.
    fn default() -> Self {
        Self {
            max_head_len: 32 * 1024,
            max_body_len: 1024 * 1024,
            max_headers: 256,
            max_line_len: 8 * 1024,
        }
    }
}
