//! Media type names and `Content-Type` helpers (RFC 2045 §5.1).

/// `message/cpim` (RFC 3862).
pub const MESSAGE_CPIM: &str = "message/cpim";
/// `message/imdn+xml` (RFC 5438).
pub const MESSAGE_IMDN_XML: &str = "message/imdn+xml";
/// `application/resource-lists+xml` (RFC 4826).
pub const APPLICATION_RESOURCE_LISTS_XML: &str = "application/resource-lists+xml";
/// `multipart/mixed` (RFC 2046).
pub const MULTIPART_MIXED: &str = "multipart/mixed";

/// The `type/subtype` of a `Content-Type` value, lower-cased, parameters dropped.
pub fn media_type(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

/// The value of parameter `name` (case-insensitive) of a `Content-Type` value, unquoted.
///
/// RFC 2045 §5.1 `parameter := attribute "=" value`, `value := token / quoted-string`.
pub fn param(content_type: &str, name: &str) -> Option<String> {
    let mut rest = content_type.split_once(';')?.1;
    loop {
        let (key, after) = rest.split_once('=')?;
        let after = after.trim_start();
        let (value, next) = if let Some(q) = after.strip_prefix('"') {
            let mut out = String::new();
            let mut chars = q.char_indices();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                match c {
                    '"' => {
                        end = Some(i + 1);
                        break;
                    }
                    '\\' => out.push(chars.next()?.1),
                    c => out.push(c),
                }
            }
            let tail = q.get(end?..)?;
            (out, tail.split_once(';').map_or("", |(_, t)| t))
        } else {
            let (v, t) = after.split_once(';').unwrap_or((after, ""));
            (v.trim().to_owned(), t)
        };
        if key.trim().eq_ignore_ascii_case(name) {
            return Some(value);
        }
        if next.is_empty() {
            return None;
        }
        rest = next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn params() {
        let ct = "Multipart/Mixed; charset=utf-8 ; Boundary=\"a \\\"b\\\";c\";x=y";
        assert_eq!(media_type(ct), "multipart/mixed");
        assert_eq!(param(ct, "boundary").as_deref(), Some("a \"b\";c"));
        assert_eq!(param(ct, "charset").as_deref(), Some("utf-8"));
        assert_eq!(param(ct, "x").as_deref(), Some("y"));
        assert_eq!(param(ct, "z"), None);
        assert_eq!(param("text/plain", "charset"), None);
        assert_eq!(param("a/b;boundary=\"open", "boundary"), None);
    }

    proptest! {
        #[test]
        fn no_panic(s in "[a-z;=\"\\\\ /]{0,60}") {
            let _ = (media_type(&s), param(&s, "boundary"));
        }
    }
}
