//! `message/imdn+xml` (RFC 5438 §7): delivery, display and processing notifications.
//!
//! ```xml
//! <imdn xmlns="urn:ietf:params:xml:ns:imdn">
//!   <message-id>34jk324j</message-id>
//!   <datetime>2008-04-04T12:16:49-05:00</datetime>
//!   <recipient-uri>im:bob@example.com</recipient-uri>
//!   <original-recipient-uri>im:bob@example.com</original-recipient-uri>
//!   <delivery-notification><status><delivered/></status></delivery-notification>
//! </imdn>
//! ```

use quick_xml::events::Event;

use crate::ContentError;
use crate::xml::{MAX_DEPTH, append_text, err, escape, is_ns, reader};

const WHAT: &str = "message/imdn+xml";

/// The IMDN XML namespace (RFC 5438 §7.1).
pub const IMDN_XML_NS: &str = "urn:ietf:params:xml:ns:imdn";

/// `<delivery-notification>` status (RFC 5438 §7.2.1.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryStatus {
    /// `<delivered/>`
    Delivered,
    /// `<failed/>`
    Failed,
    /// `<forbidden/>`
    Forbidden,
    /// `<error/>`
    Error,
}

/// `<display-notification>` status (RFC 5438 §7.2.1.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DisplayStatus {
    /// `<displayed/>`
    Displayed,
    /// `<forbidden/>`
    Forbidden,
    /// `<error/>`
    Error,
}

/// `<processing-notification>` status (RFC 5438 §7.2.1.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcessingStatus {
    /// `<processed/>`
    Processed,
    /// `<stored/>`
    Stored,
    /// `<forbidden/>`
    Forbidden,
    /// `<error/>`
    Error,
}

/// Which notification an IMDN carries, with its status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notification {
    /// `<delivery-notification>`
    Delivery(DeliveryStatus),
    /// `<display-notification>`
    Display(DisplayStatus),
    /// `<processing-notification>`
    Processing(ProcessingStatus),
}

impl Notification {
    fn element(self) -> &'static str {
        match self {
            Self::Delivery(_) => "delivery-notification",
            Self::Display(_) => "display-notification",
            Self::Processing(_) => "processing-notification",
        }
    }

    fn status_element(self) -> &'static str {
        match self {
            Self::Delivery(DeliveryStatus::Delivered) => "delivered",
            Self::Delivery(DeliveryStatus::Failed) => "failed",
            Self::Display(DisplayStatus::Displayed) => "displayed",
            Self::Processing(ProcessingStatus::Processed) => "processed",
            Self::Processing(ProcessingStatus::Stored) => "stored",
            Self::Delivery(DeliveryStatus::Forbidden)
            | Self::Display(DisplayStatus::Forbidden)
            | Self::Processing(ProcessingStatus::Forbidden) => "forbidden",
            Self::Delivery(DeliveryStatus::Error)
            | Self::Display(DisplayStatus::Error)
            | Self::Processing(ProcessingStatus::Error) => "error",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Delivery,
    Display,
    Processing,
}

impl Kind {
    fn status(self, name: &str) -> Option<Notification> {
        use Notification as N;
        Some(match (self, name) {
            (Self::Delivery, "delivered") => N::Delivery(DeliveryStatus::Delivered),
            (Self::Delivery, "failed") => N::Delivery(DeliveryStatus::Failed),
            (Self::Delivery, "forbidden") => N::Delivery(DeliveryStatus::Forbidden),
            (Self::Delivery, "error") => N::Delivery(DeliveryStatus::Error),
            (Self::Display, "displayed") => N::Display(DisplayStatus::Displayed),
            (Self::Display, "forbidden") => N::Display(DisplayStatus::Forbidden),
            (Self::Display, "error") => N::Display(DisplayStatus::Error),
            (Self::Processing, "processed") => N::Processing(ProcessingStatus::Processed),
            (Self::Processing, "stored") => N::Processing(ProcessingStatus::Stored),
            (Self::Processing, "forbidden") => N::Processing(ProcessingStatus::Forbidden),
            (Self::Processing, "error") => N::Processing(ProcessingStatus::Error),
            _ => return None,
        })
    }
}

/// Where the parser is in the document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    Root,
    Field(usize),
    Kind(Kind),
    Status(Kind),
    Other,
}

const FIELDS: [&str; 4] = [
    "message-id",
    "datetime",
    "recipient-uri",
    "original-recipient-uri",
];

/// A parsed or built IMDN document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Imdn {
    /// `<message-id>`: the `imdn.Message-ID` of the message this notification is about.
    pub message_id: String,
    /// `<datetime>`: when the original message was sent (RFC 3339).
    pub datetime: String,
    /// `<recipient-uri>`, if present.
    pub recipient_uri: Option<String>,
    /// `<original-recipient-uri>`, if present.
    pub original_recipient_uri: Option<String>,
    /// The notification and its status.
    pub notification: Notification,
}

impl Imdn {
    /// Parses an IMDN document (at most [`crate::MAX_XML_SIZE`] bytes). Namespace prefixes
    /// are resolved; elements outside the IMDN namespace and unknown IMDN elements are
    /// ignored. `message-id`, `datetime` and exactly one notification with a known status
    /// are required.
    pub fn parse(input: &[u8]) -> Result<Self, ContentError> {
        let mut r = reader(input, WHAT)?;
        let mut stack: Vec<Slot> = Vec::new();
        let mut fields: [Option<String>; 4] = Default::default();
        let mut kind: Option<Kind> = None;
        let mut notification: Option<Notification> = None;
        let mut seen_root = false;
        loop {
            let (res, ev) = r.read_resolved_event().map_err(|e| err(WHAT, e))?;
            let (start, end) = match &ev {
                Event::Start(_) => (true, false),
                Event::Empty(_) => (true, true),
                Event::End(_) => (false, true),
                Event::Eof => break,
                _ => (false, false),
            };
            if start {
                let (Event::Start(e) | Event::Empty(e)) = &ev else {
                    continue;
                };
                let local = e.local_name();
                let name = local.as_ref();
                let imdn = is_ns(&res, IMDN_XML_NS);
                let slot = match stack.last().copied() {
                    None if seen_root => {
                        return Err(ContentError::malformed(
                            WHAT,
                            "content after the root element",
                        ));
                    }
                    None if imdn && name == "imdn" => Slot::Root,
                    None => return Err(ContentError::malformed(WHAT, "root element is not imdn")),
                    Some(Slot::Root) if imdn => match name {
                        "delivery-notification"
                        | "display-notification"
                        | "processing-notification" => {
                            if kind.is_some() {
                                return Err(ContentError::malformed(
                                    WHAT,
                                    "more than one notification",
                                ));
                            }
                            let k = match name {
                                "delivery-notification" => Kind::Delivery,
                                "display-notification" => Kind::Display,
                                _ => Kind::Processing,
                            };
                            kind = Some(k);
                            Slot::Kind(k)
                        }
                        _ => match FIELDS.iter().position(|f| *f == name) {
                            Some(i) if fields[i].is_some() => {
                                return Err(ContentError::malformed(WHAT, "repeated element"));
                            }
                            Some(i) => {
                                fields[i] = Some(String::new());
                                Slot::Field(i)
                            }
                            None => Slot::Other,
                        },
                    },
                    Some(Slot::Kind(k)) if imdn && name == "status" => Slot::Status(k),
                    Some(Slot::Status(k)) if imdn => {
                        if let Some(n) = k.status(name)
                            && notification.replace(n).is_some()
                        {
                            return Err(ContentError::malformed(WHAT, "more than one status"));
                        }
                        Slot::Other
                    }
                    Some(_) => Slot::Other,
                };
                if stack.len() >= MAX_DEPTH {
                    return Err(ContentError::malformed(WHAT, "nesting too deep"));
                }
                stack.push(slot);
                seen_root = true;
            }
            if end {
                stack.pop();
                continue;
            }
            if let Some(Slot::Field(i)) = stack.last()
                && let Some(buf) = fields[*i].as_mut()
            {
                append_text(buf, &ev, WHAT)?;
            }
        }
        if !stack.is_empty() || !seen_root {
            return Err(ContentError::malformed(WHAT, "document not complete"));
        }
        let [message_id, datetime, recipient_uri, original_recipient_uri] =
            fields.map(|f| f.map(|s| s.trim().to_owned()));
        let message_id = message_id
            .filter(|s| !s.is_empty())
            .ok_or(ContentError::malformed(WHAT, "missing message-id"))?;
        let datetime = datetime
            .filter(|s| !s.is_empty())
            .ok_or(ContentError::malformed(WHAT, "missing datetime"))?;
        let notification = match (kind, notification) {
            (None, _) => return Err(ContentError::malformed(WHAT, "missing notification")),
            (Some(_), None) => {
                return Err(ContentError::malformed(WHAT, "missing or unknown status"));
            }
            (Some(_), Some(n)) => n,
        };
        Ok(Self {
            message_id,
            datetime,
            recipient_uri,
            original_recipient_uri,
            notification,
        })
    }

    /// Serializes as a UTF-8 XML document in the default IMDN namespace.
    pub fn to_xml(&self) -> String {
        let mut s = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\r\n<imdn xmlns=\"");
        s.push_str(IMDN_XML_NS);
        s.push_str("\">");
        let mut field = |name: &str, v: &str| {
            s.push_str(&format!("<{name}>{}</{name}>", escape(v)));
        };
        field("message-id", &self.message_id);
        field("datetime", &self.datetime);
        if let Some(v) = &self.recipient_uri {
            field("recipient-uri", v);
        }
        if let Some(v) = &self.original_recipient_uri {
            field("original-recipient-uri", v);
        }
        let n = self.notification;
        s.push_str(&format!(
            "<{0}><status><{1}/></status></{0}></imdn>",
            n.element(),
            n.status_element()
        ));
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// RFC 5438 §7.2.1.1 example (delivery notification).
    const RFC_DELIVERY: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<imdn xmlns="urn:ietf:params:xml:ns:imdn">
  <message-id>34jk324j</message-id>
  <datetime>2008-04-04T12:16:49-05:00</datetime>
  <recipient-uri>im:bob@example.com</recipient-uri>
  <original-recipient-uri
    >im:bob@example.com</original-recipient-uri>
  <delivery-notification>
    <status>
      <delivered/>
    </status>
  </delivery-notification>
</imdn>"#;

    /// RFC 5438 §7.2.1.2 example (display notification), with a `<subject>`.
    const RFC_DISPLAY: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<imdn xmlns="urn:ietf:params:xml:ns:imdn">
  <message-id>34jk324j</message-id>
  <datetime>2008-04-04T12:16:49-05:00</datetime>
  <recipient-uri>im:bob@example.com</recipient-uri>
  <original-recipient-uri
    >im:bob@example.com</original-recipient-uri>
  <subject>Hello</subject>
  <display-notification>
    <status>
      <displayed/>
    </status>
  </display-notification>
</imdn>"#;

    #[test]
    fn rfc_delivery_example() {
        let i = Imdn::parse(RFC_DELIVERY.as_bytes()).unwrap();
        assert_eq!(i.message_id, "34jk324j");
        assert_eq!(i.datetime, "2008-04-04T12:16:49-05:00");
        assert_eq!(i.recipient_uri.as_deref(), Some("im:bob@example.com"));
        assert_eq!(
            i.original_recipient_uri.as_deref(),
            Some("im:bob@example.com")
        );
        assert_eq!(
            i.notification,
            Notification::Delivery(DeliveryStatus::Delivered)
        );
    }

    #[test]
    fn rfc_display_example() {
        let i = Imdn::parse(RFC_DISPLAY.as_bytes()).unwrap();
        assert_eq!(
            i.notification,
            Notification::Display(DisplayStatus::Displayed)
        );
    }

    #[test]
    fn prefixed_and_foreign_elements() {
        let s = r#"<i:imdn xmlns:i="urn:ietf:params:xml:ns:imdn" xmlns:x="urn:other">
<i:message-id>a&amp;b&#x41;<![CDATA[<c>]]></i:message-id><i:datetime>2026-11-25T10:00:00Z</i:datetime>
<x:message-id>ignored</x:message-id><i:unknown><i:message-id>nested</i:message-id></i:unknown>
<i:processing-notification><i:status><x:stored/><i:stored/></i:status></i:processing-notification></i:imdn>"#;
        let i = Imdn::parse(s.as_bytes()).unwrap();
        assert_eq!(i.message_id, "a&bA<c>");
        assert_eq!(i.recipient_uri, None);
        assert_eq!(
            i.notification,
            Notification::Processing(ProcessingStatus::Stored)
        );
    }

    #[test]
    fn round_trip_all_statuses() {
        use Notification as N;
        let all = [
            N::Delivery(DeliveryStatus::Delivered),
            N::Delivery(DeliveryStatus::Failed),
            N::Delivery(DeliveryStatus::Forbidden),
            N::Delivery(DeliveryStatus::Error),
            N::Display(DisplayStatus::Displayed),
            N::Display(DisplayStatus::Forbidden),
            N::Display(DisplayStatus::Error),
            N::Processing(ProcessingStatus::Processed),
            N::Processing(ProcessingStatus::Stored),
            N::Processing(ProcessingStatus::Forbidden),
            N::Processing(ProcessingStatus::Error),
        ];
        for (k, notification) in all.into_iter().enumerate() {
            let i = Imdn {
                message_id: format!("id<&>\"{k}"),
                datetime: "2026-11-25T10:00:00.000Z".into(),
                recipient_uri: (k % 2 == 0).then(|| "sip:bob@example.com".into()),
                original_recipient_uri: (k % 3 == 0).then(|| "tel:+1555".into()),
                notification,
            };
            assert_eq!(Imdn::parse(i.to_xml().as_bytes()).unwrap(), i);
        }
    }

    #[test]
    fn errors_are_400() {
        let cases = [
            "",
            "not xml",
            "<imdn/>",
            r#"<imdn xmlns="urn:wrong"/>"#,
            r#"<imdn xmlns="urn:ietf:params:xml:ns:imdn"><datetime>x</datetime><delivery-notification><status><delivered/></status></delivery-notification></imdn>"#,
            r#"<imdn xmlns="urn:ietf:params:xml:ns:imdn"><message-id>1</message-id><delivery-notification><status><delivered/></status></delivery-notification></imdn>"#,
            r#"<imdn xmlns="urn:ietf:params:xml:ns:imdn"><message-id>1</message-id><datetime>x</datetime></imdn>"#,
            r#"<imdn xmlns="urn:ietf:params:xml:ns:imdn"><message-id>1</message-id><datetime>x</datetime><display-notification><status><delivered/></status></display-notification></imdn>"#,
            r#"<imdn xmlns="urn:ietf:params:xml:ns:imdn"><message-id>1</message-id><datetime>x</datetime><display-notification><status><displayed/></status></display-notification><delivery-notification/></imdn>"#,
            r#"<imdn xmlns="urn:ietf:params:xml:ns:imdn"><message-id>1</message-id><message-id>2</message-id></imdn>"#,
            r#"<imdn xmlns="urn:ietf:params:xml:ns:imdn"><message-id>&bogus;</message-id></imdn>"#,
            r#"<imdn xmlns="urn:ietf:params:xml:ns:imdn"><message-id>1</message-id>"#,
            r#"<imdn xmlns="urn:ietf:params:xml:ns:imdn"></imdn><imdn xmlns="urn:ietf:params:xml:ns:imdn"/>"#,
        ];
        for c in cases {
            let e = Imdn::parse(c.as_bytes()).unwrap_err();
            assert_eq!(e.status(), 400, "{c}: {e}");
        }
        assert_eq!(Imdn::parse(b"\xff\xfe").unwrap_err().status(), 400);
        let deep = format!(
            r#"<imdn xmlns="urn:ietf:params:xml:ns:imdn">{}{}</imdn>"#,
            "<a>".repeat(40),
            "</a>".repeat(40)
        );
        assert_eq!(Imdn::parse(deep.as_bytes()).unwrap_err().status(), 400);
        let big = vec![b' '; crate::MAX_XML_SIZE + 1];
        assert_eq!(Imdn::parse(&big).unwrap_err().status(), 413);
    }

    proptest! {
        #[test]
        fn no_panic_on_arbitrary_bytes(data in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = Imdn::parse(&data);
        }

        #[test]
        fn no_panic_on_xmlish_input(s in "[<>/a-z:=\"&;# -]{0,200}") {
            let doc = format!(r#"<imdn xmlns="urn:ietf:params:xml:ns:imdn">{s}"#);
            let _ = Imdn::parse(doc.as_bytes());
        }
    }
}
