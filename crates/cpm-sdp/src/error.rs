//! The one error type of the crate, with the SIP status code a failure is answered with.

use thiserror::Error;

/// What kind of failure an [`SdpError`] is; decides [`SdpError::status`].
#[derive(Clone, Copy, Debug, Eq, Hash, PartialEq)]
#[non_exhaustive]
pub enum SdpErrorKind {
    /// The text is not SDP (RFC 8866 section 9 grammar), or a known attribute's value does not
    /// follow its RFC's syntax.
    Syntax,
    /// Over one of the parser's bounds (size, lines, media descriptions).
    TooLarge,
    /// The description parses but offers nothing we can use (for MSRP: no `a=path`, no
    /// `a=accept-types`, not an MSRP m-line).
    Unusable,
}

/// Why a session description was refused.
///
/// [`SdpError::status`] is the SIP response to the request that carried it: 400 for text that
/// does not parse, 488 (Not Acceptable Here, RFC 3261 section 21.4.26) for a description that
/// parses but cannot be used.
#[derive(Clone, Debug, Eq, Error, PartialEq)]
#[error("{reason}{}", at_line(*.line))]
pub struct SdpError {
    kind: SdpErrorKind,
    reason: &'static str,
    line: Option<usize>,
}

fn at_line(line: Option<usize>) -> String {
    line.map(|l| format!(" (line {l})")).unwrap_or_default()
}

impl SdpError {
    pub(crate) fn syntax(reason: &'static str) -> Self {
        Self {
            kind: SdpErrorKind::Syntax,
            reason,
            line: None,
        }
    }

    pub(crate) fn too_large(reason: &'static str) -> Self {
        Self {
            kind: SdpErrorKind::TooLarge,
            reason,
            line: None,
        }
    }

    pub(crate) fn unusable(reason: &'static str) -> Self {
        Self {
            kind: SdpErrorKind::Unusable,
            reason,
            line: None,
        }
    }

    /// The same error, placed at a 1-based line of the description.
    pub(crate) fn at(mut self, line: usize) -> Self {
        self.line.get_or_insert(line);
        self
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> SdpErrorKind {
        self.kind
    }

    /// The SIP status code to answer with: 400 for syntax and bounds, 488 for a description
    /// that offers nothing usable.
    pub fn status(&self) -> u16 {
        match self.kind {
            SdpErrorKind::Syntax | SdpErrorKind::TooLarge => 400,
            SdpErrorKind::Unusable => 488,
        }
    }

    /// A short reason, fit for a Warning header or a log line (no peer text in it).
    pub fn reason(&self) -> &'static str {
        self.reason
    }

    /// The 1-based line of the description the error was found on, when known.
    pub fn line(&self) -> Option<usize> {
        self.line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_follows_kind() {
        assert_eq!(SdpError::syntax("x").status(), 400);
        assert_eq!(SdpError::too_large("x").status(), 400);
        assert_eq!(SdpError::unusable("x").status(), 488);
    }

    #[test]
    fn display_names_the_line_once() {
        let e = SdpError::syntax("bad o= line").at(2).at(5);
        assert_eq!(e.line(), Some(2));
        assert_eq!(e.to_string(), "bad o= line (line 2)");
        assert_eq!(SdpError::unusable("no a=path").to_string(), "no a=path");
    }
}
