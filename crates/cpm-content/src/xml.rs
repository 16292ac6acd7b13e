//! quick-xml helpers shared by the XML body parsers.

use quick_xml::NsReader;
use quick_xml::events::Event;
use quick_xml::name::{Namespace, ResolveResult};

use crate::ContentError;

/// Largest XML body the parsers accept.
pub const MAX_XML_SIZE: usize = 64 * 1024;
/// Deepest element nesting the parsers accept.
pub(crate) const MAX_DEPTH: usize = 32;

/// Checks size and UTF-8 and makes a namespace-aware reader.
pub(crate) fn reader<'a>(
    input: &'a [u8],
    what: &'static str,
) -> Result<NsReader<&'a [u8]>, ContentError> {
    if input.len() > MAX_XML_SIZE {
        return Err(ContentError::TooLarge {
            what,
            size: input.len(),
            limit: MAX_XML_SIZE,
        });
    }
    let text =
        std::str::from_utf8(input).map_err(|_| ContentError::malformed(what, "not UTF-8"))?;
    let mut r = NsReader::from_str(text);
    r.resolver_mut().set_max_namespace_bindings(64);
    Ok(r)
}

/// Maps a quick-xml error.
pub(crate) fn err(what: &'static str, e: impl std::fmt::Display) -> ContentError {
    ContentError::Xml {
        what,
        reason: e.to_string(),
    }
}

/// True if `res` is the namespace `ns`.
pub(crate) fn is_ns(res: &ResolveResult<'_>, ns: &str) -> bool {
    matches!(res, ResolveResult::Bound(Namespace(n)) if *n == ns)
}

/// Appends character data of `ev` (text, CDATA, entity and character references) to `out`.
/// Other events are ignored.
pub(crate) fn append_text(
    out: &mut String,
    ev: &Event<'_>,
    what: &'static str,
) -> Result<(), ContentError> {
    match ev {
        Event::Text(t) => out.push_str(&t.xml10_content()),
        Event::CData(t) => out.push_str(&t.xml10_content()),
        Event::GeneralRef(r) => {
            if r.is_char_ref() {
                match r.resolve_char_ref() {
                    Ok(Some(c)) => out.push(c),
                    _ => return Err(ContentError::malformed(what, "invalid character reference")),
                }
            } else {
                let s = quick_xml::escape::resolve_predefined_entity(r)
                    .ok_or_else(|| ContentError::malformed(what, "unknown entity reference"))?;
                out.push_str(s);
            }
        }
        _ => {}
    }
    Ok(())
}

/// Escapes text for element content and attribute values.
pub(crate) fn escape(s: &str) -> std::borrow::Cow<'_, str> {
    quick_xml::escape::escape(s)
}
