//! `application/resource-lists+xml` (RFC 4826 §3) as a URI list for the 1-N pager
//! (RFC 5365), with the `copyControl` attribute of RFC 5364.
//!
//! ```xml
//! <resource-lists xmlns="urn:ietf:params:xml:ns:resource-lists"
//!     xmlns:cp="urn:ietf:params:xml:ns:copyControl">
//!   <list>
//!     <entry uri="sip:bill@example.com" cp:copyControl="to"/>
//!   </list>
//! </resource-lists>
//! ```

use quick_xml::events::Event;
use quick_xml::name::ResolveResult;

use crate::ContentError;
use crate::xml::{MAX_DEPTH, err, escape, is_ns, reader};

const WHAT: &str = "application/resource-lists+xml";

/// The resource-lists XML namespace (RFC 4826 §3.2).
pub const RESOURCE_LISTS_NS: &str = "urn:ietf:params:xml:ns:resource-lists";
/// The copy-control XML namespace (RFC 5364 §4).
pub const COPY_CONTROL_NS: &str = "urn:ietf:params:xml:ns:copyControl";
/// Most entries [`ResourceList::parse`] accepts.
pub const MAX_ENTRIES: usize = 1000;

/// RFC 5364 `copyControl`: how a recipient appears to the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyControl {
    /// `to`
    To,
    /// `cc`
    Cc,
    /// `bcc`: hidden from the other recipients.
    Bcc,
}

impl CopyControl {
    /// The attribute value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::To => "to",
            Self::Cc => "cc",
            Self::Bcc => "bcc",
        }
    }
}

/// One `<entry>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListEntry {
    /// The `uri` attribute.
    pub uri: String,
    /// The `cp:copyControl` attribute, if present.
    pub copy_control: Option<CopyControl>,
}

/// The entries of a resource list, nested `<list>`s flattened in document order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResourceList {
    /// The entries.
    pub entries: Vec<ListEntry>,
}

impl ResourceList {
    /// Parses a resource-lists document (at most [`crate::MAX_XML_SIZE`] bytes and
    /// [`MAX_ENTRIES`] entries). `<entry-ref>`, `<external>`, `<display-name>` and foreign
    /// elements are ignored.
    pub fn parse(input: &[u8]) -> Result<Self, ContentError> {
        #[derive(Clone, Copy, PartialEq, Eq)]
        enum Slot {
            Root,
            List,
            Other,
        }
        let mut r = reader(input, WHAT)?;
        let mut stack: Vec<Slot> = Vec::new();
        let mut entries = Vec::new();
        let mut seen_root = false;
        loop {
            let (res, ev) = r.read_resolved_event().map_err(|e| err(WHAT, e))?;
            let (e, empty) = match &ev {
                Event::Start(e) => (e, false),
                Event::Empty(e) => (e, true),
                Event::End(_) => {
                    stack.pop();
                    continue;
                }
                Event::Eof => break,
                _ => continue,
            };
            let local = e.local_name();
            let name = local.as_ref();
            let rl = is_ns(&res, RESOURCE_LISTS_NS);
            let slot = match stack.last() {
                None if seen_root => {
                    return Err(ContentError::malformed(
                        WHAT,
                        "content after the root element",
                    ));
                }
                None if rl && name == "resource-lists" => Slot::Root,
                None => {
                    return Err(ContentError::malformed(
                        WHAT,
                        "root element is not resource-lists",
                    ));
                }
                Some(Slot::Root | Slot::List) if rl && name == "list" => Slot::List,
                Some(Slot::List) if rl && name == "entry" => {
                    let mut uri = None;
                    let mut copy_control = None;
                    for a in e.attributes() {
                        let a = a.map_err(|e| err(WHAT, e))?;
                        let (ares, alocal) = r.resolver().resolve_attribute(a.key);
                        let value = || {
                            a.normalized_value(quick_xml::XmlVersion::Implicit1_0)
                                .map_err(|e| err(WHAT, e))
                        };
                        match (&ares, alocal.as_ref()) {
                            (ResolveResult::Unbound, "uri") => {
                                uri = Some(value()?.trim().to_owned())
                            }
                            (res, "copyControl") if is_ns(res, COPY_CONTROL_NS) => {
                                copy_control =
                                    Some(match value()?.trim().to_ascii_lowercase().as_str() {
                                        "to" => CopyControl::To,
                                        "cc" => CopyControl::Cc,
                                        "bcc" => CopyControl::Bcc,
                                        _ => {
                                            return Err(ContentError::malformed(
                                                WHAT,
                                                "invalid copyControl",
                                            ));
                                        }
                                    });
                            }
                            _ => {}
                        }
                    }
                    let uri = uri
                        .filter(|u| !u.is_empty())
                        .ok_or(ContentError::malformed(WHAT, "entry without uri"))?;
                    if entries.len() >= MAX_ENTRIES {
                        return Err(ContentError::malformed(WHAT, "too many entries"));
                    }
                    entries.push(ListEntry { uri, copy_control });
                    Slot::Other
                }
                Some(_) => Slot::Other,
            };
            seen_root = true;
            if !empty {
                if stack.len() >= MAX_DEPTH {
                    return Err(ContentError::malformed(WHAT, "nesting too deep"));
                }
                stack.push(slot);
            }
        }
        if !stack.is_empty() || !seen_root {
            return Err(ContentError::malformed(WHAT, "document not complete"));
        }
        Ok(Self { entries })
    }

    /// Serializes as one `<list>`; the copy-control namespace is declared only if used.
    pub fn to_xml(&self) -> String {
        let cp = self.entries.iter().any(|e| e.copy_control.is_some());
        let mut s = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\r\n<resource-lists xmlns=\"{RESOURCE_LISTS_NS}\""
        );
        if cp {
            s.push_str(&format!(" xmlns:cp=\"{COPY_CONTROL_NS}\""));
        }
        s.push_str("><list>\r\n");
        for e in &self.entries {
            s.push_str(&format!("<entry uri=\"{}\"", escape(&e.uri)));
            if let Some(c) = e.copy_control {
                s.push_str(&format!(" cp:copyControl=\"{}\"", c.as_str()));
            }
            s.push_str("/>\r\n");
        }
        s.push_str("</list></resource-lists>\r\n");
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// RFC 5365 §4 style list with RFC 5364 copyControl.
    const THREE: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<resource-lists xmlns="urn:ietf:params:xml:ns:resource-lists"
        xmlns:cp="urn:ietf:params:xml:ns:copyControl">
  <list>
    <entry uri="sip:bill@example.com" cp:copyControl="to"/>
    <entry uri="sip:randy@example.net" cp:copyControl="cc">
      <display-name>Randy</display-name>
    </entry>
    <entry uri="sip:joe@example.org&amp;x" cp:copyControl="bcc" cp:anonymize="true"/>
  </list>
</resource-lists>"#;

    #[test]
    fn parse_three_entries() {
        let l = ResourceList::parse(THREE.as_bytes()).unwrap();
        let got: Vec<_> = l
            .entries
            .iter()
            .map(|e| (e.uri.as_str(), e.copy_control))
            .collect();
        assert_eq!(
            got,
            [
                ("sip:bill@example.com", Some(CopyControl::To)),
                ("sip:randy@example.net", Some(CopyControl::Cc)),
                ("sip:joe@example.org&x", Some(CopyControl::Bcc)),
            ]
        );
    }

    #[test]
    fn other_prefixes_and_nesting() {
        let s = r#"<rl:resource-lists xmlns:rl="urn:ietf:params:xml:ns:resource-lists" xmlns:c="urn:ietf:params:xml:ns:copyControl" xmlns:x="urn:x">
<rl:list><rl:entry uri="tel:+1" copyControl="bcc"/><x:entry uri="sip:ignored@x"/><rl:list><rl:entry uri="sip:b@x" c:copyControl="TO"/></rl:list></rl:list></rl:resource-lists>"#;
        let l = ResourceList::parse(s.as_bytes()).unwrap();
        assert_eq!(
            l.entries,
            vec![
                ListEntry {
                    uri: "tel:+1".into(),
                    copy_control: None
                },
                ListEntry {
                    uri: "sip:b@x".into(),
                    copy_control: Some(CopyControl::To)
                },
            ]
        );
    }

    #[test]
    fn round_trip() {
        let l = ResourceList {
            entries: vec![
                ListEntry {
                    uri: "sip:a@example.com;x=\"<&>\"".into(),
                    copy_control: Some(CopyControl::To),
                },
                ListEntry {
                    uri: "tel:+15551234".into(),
                    copy_control: None,
                },
                ListEntry {
                    uri: "sip:c@example.com".into(),
                    copy_control: Some(CopyControl::Bcc),
                },
            ],
        };
        assert_eq!(ResourceList::parse(l.to_xml().as_bytes()).unwrap(), l);
        let plain = ResourceList {
            entries: vec![ListEntry {
                uri: "sip:x@y".into(),
                copy_control: None,
            }],
        };
        assert!(!plain.to_xml().contains("copyControl"));
        assert_eq!(
            ResourceList::parse(plain.to_xml().as_bytes()).unwrap(),
            plain
        );
        let empty = ResourceList::default();
        assert_eq!(
            ResourceList::parse(empty.to_xml().as_bytes()).unwrap(),
            empty
        );
    }

    #[test]
    fn errors_are_400() {
        let cases = [
            "",
            "<list/>",
            r#"<resource-lists xmlns="urn:ietf:params:xml:ns:resource-lists"><list><entry/></list></resource-lists>"#,
            r#"<resource-lists xmlns="urn:ietf:params:xml:ns:resource-lists"><list><entry uri=""/></list></resource-lists>"#,
            r#"<resource-lists xmlns="urn:ietf:params:xml:ns:resource-lists" xmlns:cp="urn:ietf:params:xml:ns:copyControl"><list><entry uri="sip:a@b" cp:copyControl="x"/></list></resource-lists>"#,
            r#"<resource-lists xmlns="urn:ietf:params:xml:ns:resource-lists"><list><entry uri="a" uri="b"/></list></resource-lists>"#,
            r#"<resource-lists xmlns="urn:ietf:params:xml:ns:resource-lists"><list>"#,
            r#"<resource-lists xmlns="urn:ietf:params:xml:ns:resource-lists"><list></wrong></resource-lists>"#,
        ];
        for c in cases {
            let e = ResourceList::parse(c.as_bytes()).unwrap_err();
            assert_eq!(e.status(), 400, "{c}: {e}");
        }
    }

    proptest! {
        #[test]
        fn no_panic_on_arbitrary_bytes(data in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = ResourceList::parse(&data);
        }

        #[test]
        fn no_panic_on_xmlish_input(s in "[<>/a-z:=\"&;# -]{0,200}") {
            let doc = format!(r#"<resource-lists xmlns="urn:ietf:params:xml:ns:resource-lists"><list>{s}"#);
            let _ = ResourceList::parse(doc.as_bytes());
        }
    }
}
