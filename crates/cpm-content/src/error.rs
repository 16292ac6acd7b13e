//! The one error type of this crate and its mapping to the SIP status to answer.

/// Why a body could not be parsed (or built).
///
/// Every variant that comes from peer input maps to a SIP status through
/// [`ContentError::status`]: malformed bodies are `400 Bad Request`, unknown media types
/// `415 Unsupported Media Type`, oversized bodies `413 Request Entity Too Large`
/// (RFC 3261 §21.4).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ContentError {
    /// The body is larger than the parser accepts.
    #[error("{what} body too large: {size} bytes, limit {limit}")]
    TooLarge {
        /// Which kind of body.
        what: &'static str,
        /// Size of the body received.
        size: usize,
        /// The configured limit.
        limit: usize,
    },
    /// The body breaks the syntax of its media type.
    #[error("malformed {what}: {reason}")]
    Malformed {
        /// Which kind of body (`message/cpim`, `message/imdn+xml`, ...).
        what: &'static str,
        /// What is wrong.
        reason: &'static str,
    },
    /// The XML is not well-formed (quick-xml's message).
    #[error("malformed {what}: XML error: {reason}")]
    Xml {
        /// Which kind of body.
        what: &'static str,
        /// The XML reader's error message.
        reason: String,
    },
    /// The media type is not one this crate handles.
    #[error("unsupported content type: {0}")]
    UnsupportedContentType(String),
    /// Caller misuse of a builder (a value that would break the syntax, e.g. a CR or LF in a
    /// header value). Never caused by peer input.
    #[error("invalid value for {what}: {reason}")]
    ApiMisuse {
        /// What was being built.
        what: &'static str,
        /// What is wrong with the value.
        reason: &'static str,
    },
}

impl ContentError {
    /// The SIP status code to answer a request carrying this body with.
    pub fn status(&self) -> u16 {
        match self {
            Self::TooLarge { .. } => 413,
            Self::Malformed { .. } | Self::Xml { .. } => 400,
            Self::UnsupportedContentType(_) => 415,
            Self::ApiMisuse { .. } => 500,
        }
    }

    /// The reason phrase that goes with [`ContentError::status`].
    pub fn reason_phrase(&self) -> &'static str {
        match self.status() {
            413 => "Request Entity Too Large",
            400 => "Bad Request",
            415 => "Unsupported Media Type",
            _ => "Server Internal Error",
        }
    }

    pub(crate) const fn malformed(what: &'static str, reason: &'static str) -> Self {
        Self::Malformed { what, reason }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_mapping() {
        assert_eq!(ContentError::malformed("x", "y").status(), 400);
        assert_eq!(
            ContentError::UnsupportedContentType("a/b".into()).status(),
            415
        );
        let e = ContentError::TooLarge {
            what: "x",
            size: 2,
            limit: 1,
        };
        assert_eq!(
            (e.status(), e.reason_phrase()),
            (413, "Request Entity Too Large")
        );
        let e = ContentError::ApiMisuse {
            what: "x",
            reason: "y",
        };
        assert_eq!(e.status(), 500);
        assert_eq!(
            ContentError::malformed("x", "y").reason_phrase(),
            "Bad Request"
        );
    }
}
