//! CPM message bodies: `message/cpim` (RFC 3862), `message/imdn+xml` (RFC 5438),
//! `application/resource-lists+xml` (RFC 4826, with RFC 5364 copyControl, as the RFC 5365
//! 1-N pager uses it) and `multipart/mixed` (RFC 2046 §5.1).
//!
//! # Sans-IO contract
//!
//! This crate is pure: no IO, no clock, no randomness, no async. Parsers take bytes and
//! return values or a [`ContentError`]; builders take values and return bytes. Callers that
//! need the current time (a CPIM `DateTime`, an IMDN `datetime`) pass it in as text.
//!
//! # Use
//!
//! 1. Take the body and its `Content-Type` off a SIP `MESSAGE` or MSRP `SEND`.
//! 2. Call [`Content::parse`]; on `Err(e)` answer `e.status()` (`400` malformed, `415`
//!    unsupported media type, `413` too large). Nothing here panics on input, and every
//!    parser is size-bounded ([`MAX_CPIM_SIZE`], [`MAX_XML_SIZE`], [`MAX_MULTIPART_SIZE`]).
//! 3. Read a [`Cpim`] through its accessors ([`Cpim::message_id`],
//!    [`Cpim::disposition_notification`], ...), which look CPIM headers up by namespace URN
//!    so the sender's choice of prefix does not matter. Its [`Cpim::body`] is parsed again
//!    with [`Content::parse`] and [`Cpim::content_type`] (an IMDN inside CPIM, say).
//! 4. To send, build with [`CpimBuilder`], [`Imdn::to_xml`], [`ResourceList::to_xml`] and
//!    [`Multipart::to_bytes`].
//!
//! # Main types
//!
//! * [`Cpim`], [`CpimHeader`], [`CpimAddress`], [`Disposition`], [`CpimBuilder`];
//! * [`Imdn`] with [`Notification`] and its [`DeliveryStatus`], [`DisplayStatus`],
//!   [`ProcessingStatus`];
//! * [`ResourceList`] of [`ListEntry`] with [`CopyControl`];
//! * [`Multipart`] of [`Part`];
//! * [`ContentError`].
#![forbid(unsafe_code)]
#![warn(clippy::unwrap_used)]
#![deny(unused_must_use)]

mod cpim;
mod error;
mod imdn;
pub mod mime;
mod multipart;
mod resource_lists;
mod text;
pub mod time;
mod xml;

use bytes::Bytes;

pub use cpim::{
    CPIM_HEADERS_NS, CPM_NS, Cpim, CpimAddress, CpimBuilder, CpimHeader, Disposition, IMDN_NS,
    MAX_CPIM_HEADERS, MAX_CPIM_SIZE,
};
pub use error::ContentError;
pub use imdn::{DeliveryStatus, DisplayStatus, IMDN_XML_NS, Imdn, Notification, ProcessingStatus};
pub use multipart::{MAX_MULTIPART_SIZE, MAX_PART_HEADERS, MAX_PARTS, Multipart, Part};
pub use resource_lists::{
    COPY_CONTROL_NS, CopyControl, ListEntry, MAX_ENTRIES, RESOURCE_LISTS_NS, ResourceList,
};
pub use xml::MAX_XML_SIZE;

/// A body of one of the media types this crate handles.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Content {
    /// `message/cpim`
    Cpim(Cpim),
    /// `message/imdn+xml`
    Imdn(Imdn),
    /// `application/resource-lists+xml`
    ResourceList(ResourceList),
    /// `multipart/mixed`
    Multipart(Multipart),
}

impl Content {
    /// Parses `body` by its `Content-Type` header value. Unknown media types are
    /// [`ContentError::UnsupportedContentType`] (`415`).
    pub fn parse(content_type: &str, body: Bytes) -> Result<Self, ContentError> {
        let media = mime::media_type(content_type);
        match media.as_str() {
            mime::MESSAGE_CPIM => Cpim::parse(body).map(Self::Cpim),
            mime::MESSAGE_IMDN_XML => Imdn::parse(&body).map(Self::Imdn),
            mime::APPLICATION_RESOURCE_LISTS_XML => {
                ResourceList::parse(&body).map(Self::ResourceList)
            }
            mime::MULTIPART_MIXED => {
                Multipart::parse_with_content_type(content_type, body).map(Self::Multipart)
            }
            _ => Err(ContentError::UnsupportedContentType(media)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dispatch_and_415() {
        let e = Content::parse("text/html", Bytes::new()).unwrap_err();
        assert_eq!(
            (e.status(), e),
            (
                415,
                ContentError::UnsupportedContentType("text/html".into())
            )
        );
        assert_eq!(Content::parse("", Bytes::new()).unwrap_err().status(), 415);
        assert_eq!(
            Content::parse("Message/CPIM", Bytes::new())
                .unwrap_err()
                .status(),
            400
        );
        assert_eq!(
            Content::parse("message/imdn+xml", Bytes::new())
                .unwrap_err()
                .status(),
            400
        );
        let rl = ResourceList {
            entries: vec![ListEntry {
                uri: "sip:a@b".into(),
                copy_control: None,
            }],
        };
        let got = Content::parse(
            "application/resource-lists+xml; charset=UTF-8",
            Bytes::from(rl.to_xml()),
        );
        assert_eq!(got.unwrap(), Content::ResourceList(rl));
    }

    #[test]
    fn imdn_inside_cpim() {
        let imdn = Imdn {
            message_id: "Mq3Yx1Pz".into(),
            datetime: "2026-11-25T10:00:00.000Z".into(),
            recipient_uri: Some("sip:bob@example.com".into()),
            original_recipient_uri: None,
            notification: Notification::Display(DisplayStatus::Displayed),
        };
        let cpim = CpimBuilder::new()
            .from(&CpimAddress::new("sip:bob@example.com"))
            .to(&CpimAddress::new("sip:alice@example.com"))
            .date_time("2026-11-25T10:00:01.000Z")
            .message_id("n1")
            .content_type(mime::MESSAGE_IMDN_XML)
            .content_header("Content-Disposition", "notification")
            .body(imdn.to_xml())
            .build()
            .unwrap();
        let Content::Cpim(c) = Content::parse("message/cpim", cpim.to_bytes()).unwrap() else {
            panic!("not cpim")
        };
        assert_eq!(
            c.content_header("content-disposition"),
            Some("notification")
        );
        let inner = Content::parse(c.content_type().unwrap(), c.body.clone()).unwrap();
        assert_eq!(inner, Content::Imdn(imdn));
    }
}
