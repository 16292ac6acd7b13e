//! The file transfer attributes of RFC 5547 section 6.
//!
//! ```text
//! file-selector-attr  = "file-selector" [":" selector *(SP selector)]
//! selector            = filename-selector / filesize-selector / filetype-selector / hash-selector
//! filename-selector   = "name:" DQUOTE filename-string DQUOTE   ; percent-encoded " % CR LF NUL
//! filetype-selector   = "type:" type "/" subtype *(";" ft-parameter)
//! filesize-selector   = "size:" filesize-value
//! hash-selector       = "hash:" hash-algorithm ":" hash-value   ; hash-value = 2UHEX *(":" 2UHEX)
//! file-transfer-id    = "file-transfer-id:" token
//! file-disposition    = "file-disposition:" token
//! file-date           = "file-date:" date-param *(SP date-param) ; creation:/modification:/read:
//! file-icon           = "file-icon:" cid-url
//! file-range          = "file-range:" start-offset "-" (stop-offset / "*")
//! ```

use std::fmt::Write as _;

use crate::error::SdpError;
use crate::sdp::{Attribute, is_token};

/// The RFC 5547 description of a file offered for sending or asked for.
///
/// Present on an [`crate::MsrpMedia`] when its media has an `a=file-selector`; the other
/// `file-*` attributes without one are kept as unknown attributes.
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct FileTransfer {
    /// `a=file-selector`: which file.
    pub selector: FileSelector,
    /// `a=file-transfer-id`: unique per transfer, echoed in the answer (RFC 5547 section 8.3),
    /// and a new one in a re-offer starts a new transfer.
    pub transfer_id: Option<String>,
    /// `a=file-disposition` (`render`, `attachment`, ...).
    pub disposition: Option<String>,
    /// `a=file-date`, the raw value (`creation:"<RFC 5322 date>" modification:"..."`).
    pub date: Option<String>,
    /// `a=file-icon`, a `cid:` URL into a body part of the SIP request.
    pub icon: Option<String>,
    /// `a=file-range`: the first and last octet (1-based, inclusive); `None` last is `*`, to
    /// the end.
    pub range: Option<(u64, Option<u64>)>,
}

/// `a=file-selector`: the name, type, size and hash that identify the file.
#[derive(Clone, Debug, Default, Eq, PartialEq)]
pub struct FileSelector {
    /// The file name, percent-decoded.
    pub name: Option<String>,
    /// The media type with any parameters, as written (`image/jpeg`).
    pub media_type: Option<String>,
    /// Octets.
    pub size: Option<u64>,
    /// A hash of the content.
    pub hash: Option<FileHash>,
}

/// `hash:<algorithm>:<hex>:<hex>...` of a file selector.
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct FileHash {
    /// The IANA hash function textual name (`sha-1`, the only one RFC 5547 names).
    pub algorithm: String,
    /// The hash octets.
    pub value: Vec<u8>,
}

impl FileTransfer {
    /// A transfer of the file `selector` describes, with no other attribute.
    pub fn new(selector: FileSelector) -> Self {
        Self {
            selector,
            transfer_id: None,
            disposition: None,
            date: None,
            icon: None,
            range: None,
        }
    }

    /// The attributes, in the order of the RFC 5547 examples.
    pub(crate) fn to_attributes(&self) -> Vec<Attribute> {
        let mut out = vec![Attribute::new("file-selector", self.selector.to_string())];
        let mut push = |name: &str, v: &Option<String>| {
            if let Some(v) = v {
                out.push(Attribute::new(name, v.clone()));
            }
        };
        push("file-transfer-id", &self.transfer_id);
        push("file-disposition", &self.disposition);
        push("file-date", &self.date);
        push("file-icon", &self.icon);
        if let Some((start, stop)) = self.range {
            let stop = stop.map_or_else(|| "*".to_owned(), |s| s.to_string());
            out.push(Attribute::new("file-range", format!("{start}-{stop}")));
        }
        out
    }
}

/// Whether an attribute is one of the RFC 5547 `file-*` attributes.
pub(crate) fn is_file_attribute(a: &Attribute) -> bool {
    [
        "file-selector",
        "file-transfer-id",
        "file-disposition",
        "file-date",
        "file-icon",
        "file-range",
    ]
    .iter()
    .any(|n| a.is(n))
}

/// Builds the [`FileTransfer`] from a media's attributes; `None` without `a=file-selector`.
pub(crate) fn from_attributes(attrs: &[Attribute]) -> Result<Option<FileTransfer>, SdpError> {
    let Some(selector) = single(attrs, "file-selector")? else {
        return Ok(None);
    };
    let selector = FileSelector::parse(selector.value.as_deref().unwrap_or(""))?;
    let token = |name: &'static str, what: &'static str| -> Result<Option<String>, SdpError> {
        match single(attrs, name)? {
            None => Ok(None),
            Some(a) => match a.value.as_deref() {
                Some(v) if is_token(v) => Ok(Some(v.to_owned())),
                _ => Err(SdpError::syntax(what)),
            },
        }
    };
    let raw = |name: &'static str, what: &'static str| -> Result<Option<String>, SdpError> {
        match single(attrs, name)? {
            None => Ok(None),
            Some(a) => match a.value.as_deref() {
                Some(v) if !v.trim().is_empty() => Ok(Some(v.to_owned())),
                _ => Err(SdpError::syntax(what)),
            },
        }
    };
    let range = match single(attrs, "file-range")? {
        None => None,
        Some(a) => Some(parse_range(a.value.as_deref().unwrap_or(""))?),
    };
    Ok(Some(FileTransfer {
        selector,
        transfer_id: token("file-transfer-id", "bad a=file-transfer-id")?,
        disposition: token("file-disposition", "bad a=file-disposition")?,
        date: raw("file-date", "bad a=file-date")?,
        icon: raw("file-icon", "bad a=file-icon")?,
        range,
    }))
}

/// The one attribute called `name`; a second one is an error (each of these is single-valued).
pub(crate) fn single<'a>(
    attrs: &'a [Attribute],
    name: &str,
) -> Result<Option<&'a Attribute>, SdpError> {
    let mut found = attrs.iter().filter(|a| a.is(name));
    let first = found.next();
    if found.next().is_some() {
        return Err(SdpError::syntax("repeated single-valued MSRP attribute"));
    }
    Ok(first)
}

/// `start-offset "-" stop-offset`, offsets 1-based, stop `*` or not before start.
fn parse_range(v: &str) -> Result<(u64, Option<u64>), SdpError> {
    let bad = || SdpError::syntax("bad a=file-range");
    let (start, stop) = v.trim().split_once('-').ok_or_else(bad)?;
    let num = |s: &str| -> Result<u64, SdpError> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        s.parse().map_err(|_| bad())
    };
    let start = num(start)?;
    let stop = if stop == "*" { None } else { Some(num(stop)?) };
    if start == 0 || stop.is_some_and(|s| s < start) {
        return Err(bad());
    }
    Ok((start, stop))
}

impl FileSelector {
    /// Parses the value of `a=file-selector` (what follows the colon; may be empty).
    pub fn parse(value: &str) -> Result<Self, SdpError> {
        let bad = |what| SdpError::syntax(what);
        let mut sel = Self::default();
        for item in split_outside_quotes(value)? {
            let (key, v) = item
                .split_once(':')
                .ok_or_else(|| bad("bad a=file-selector"))?;
            if key.eq_ignore_ascii_case("name") {
                let inner = v
                    .strip_prefix('"')
                    .and_then(|v| v.strip_suffix('"'))
                    .filter(|i| !i.is_empty() && !i.contains('"'))
                    .ok_or_else(|| bad("bad file-selector name"))?;
                set(&mut sel.name, percent_decode(inner)?)?;
            } else if key.eq_ignore_ascii_case("type") {
                // `type "/" subtype *(";" ft-parameter)`; parameters are kept as written.
                let (t, rest) = v
                    .split_once('/')
                    .ok_or_else(|| bad("bad file-selector type"))?;
                let subtype = rest.split(';').next().unwrap_or_default();
                if !is_token(t) || !is_token(subtype) {
                    return Err(bad("bad file-selector type"));
                }
                set(&mut sel.media_type, v.to_owned())?;
            } else if key.eq_ignore_ascii_case("size") {
                if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(bad("bad file-selector size"));
                }
                let n = v.parse().map_err(|_| bad("bad file-selector size"))?;
                set(&mut sel.size, n)?;
            } else if key.eq_ignore_ascii_case("hash") {
                set(&mut sel.hash, FileHash::parse(v)?)?;
            } else {
                return Err(bad("unknown file-selector selector"));
            }
        }
        Ok(sel)
    }
}

fn set<T>(slot: &mut Option<T>, v: T) -> Result<(), SdpError> {
    if slot.is_some() {
        return Err(SdpError::syntax("repeated file-selector selector"));
    }
    *slot = Some(v);
    Ok(())
}

/// Splits on spaces that are not inside a quoted string; empty pieces are dropped.
fn split_outside_quotes(v: &str) -> Result<Vec<&str>, SdpError> {
    let mut out = Vec::new();
    let mut quoted = false;
    let mut start = 0;
    for (i, c) in v.char_indices() {
        match c {
            '"' => quoted = !quoted,
            ' ' | '\t' if !quoted => {
                if start < i {
                    out.push(&v[start..i]);
                }
                start = i + 1;
            }
            _ => {}
        }
    }
    if quoted {
        return Err(SdpError::syntax("unterminated quote in a=file-selector"));
    }
    if start < v.len() {
        out.push(&v[start..]);
    }
    Ok(out)
}

fn percent_decode(s: &str) -> Result<String, SdpError> {
    let bad = || SdpError::syntax("bad percent-encoding in file-selector name");
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s.get(i + 1..i + 3).ok_or_else(bad)?;
            // from_str_radix alone would take "+1".
            if !hex.bytes().all(|h| h.is_ascii_hexdigit()) {
                return Err(bad());
            }
            out.push(u8::from_str_radix(hex, 16).map_err(|_| bad())?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| bad())
}

/// RFC 5547 section 6: `"`, `%`, CR, LF and NUL cannot appear in `filename-string` as
/// themselves.
fn percent_encode(s: &str, out: &mut String) {
    for c in s.chars() {
        match c {
            '"' | '%' | '\r' | '\n' | '\0' => {
                let _ = write!(out, "%{:02X}", c as u32);
            }
            _ => out.push(c),
        }
    }
}

impl std::fmt::Display for FileSelector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut parts: Vec<String> = Vec::new();
        if let Some(n) = &self.name {
            let mut s = String::from("name:\"");
            percent_encode(n, &mut s);
            s.push('"');
            parts.push(s);
        }
        if let Some(t) = &self.media_type {
            parts.push(format!("type:{t}"));
        }
        if let Some(n) = self.size {
            parts.push(format!("size:{n}"));
        }
        if let Some(h) = &self.hash {
            parts.push(format!("hash:{h}"));
        }
        f.write_str(&parts.join(" "))
    }
}

impl FileHash {
    /// Parses `<algorithm>:<hex>:<hex>...`. RFC 5547 writes upper-case hex; lower case is
    /// accepted too.
    pub fn parse(v: &str) -> Result<Self, SdpError> {
        let bad = || SdpError::syntax("bad file-selector hash");
        let (algorithm, hex) = v.split_once(':').ok_or_else(bad)?;
        if !is_token(algorithm) {
            return Err(bad());
        }
        let value = hex
            .split(':')
            .map(|pair| {
                if pair.len() == 2 && pair.bytes().all(|b| b.is_ascii_hexdigit()) {
                    u8::from_str_radix(pair, 16).map_err(|_| bad())
                } else {
                    Err(bad())
                }
            })
            .collect::<Result<Vec<u8>, _>>()?;
        Ok(Self {
            algorithm: algorithm.to_owned(),
            value,
        })
    }
}

impl std::fmt::Display for FileHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.algorithm)?;
        for b in &self.value {
            write!(f, ":{b:02X}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The selector of RFC 5547 section 9.1, Figure 8, unfolded as its NOTE says (the RFC splits
    // it over lines for print); read from tex2e/rfc-translater html/rfc5547.html.
    const RFC5547_SELECTOR: &str = "name:\"My cool picture.jpg\" type:image/jpeg size:4092 \
        hash:sha-1:72:24:5F:E8:65:3D:DA:F3:71:36:2F:86:D4:71:91:3E:E4:A2:CE:2E";

    #[test]
    fn parses_every_selector() {
        let s = FileSelector::parse(RFC5547_SELECTOR).unwrap();
        assert_eq!(s.name.as_deref(), Some("My cool picture.jpg"));
        assert_eq!(s.media_type.as_deref(), Some("image/jpeg"));
        assert_eq!(s.size, Some(4092));
        let h = s.hash.as_ref().unwrap();
        assert_eq!(h.algorithm, "sha-1");
        assert_eq!(h.value.len(), 20);
        assert_eq!(h.value[..3], [0x72, 0x24, 0x5F]);
        assert_eq!(s.to_string(), RFC5547_SELECTOR);
    }

    #[test]
    fn names_are_percent_decoded_and_encoded() {
        let s = FileSelector::parse("name:\"a%22b%25c d.txt\"").unwrap();
        assert_eq!(s.name.as_deref(), Some("a\"b%c d.txt"));
        assert_eq!(s.to_string(), "name:\"a%22b%25c d.txt\"");
        assert_eq!(FileSelector::parse(&s.to_string()).unwrap(), s);
        // A UTF-8 name, written raw or escaped.
        let raw = FileSelector::parse("name:\"été.png\"").unwrap();
        let esc = FileSelector::parse("name:\"%C3%A9t%C3%A9.png\"").unwrap();
        assert_eq!(raw, esc);
    }

    #[test]
    fn type_parameters_may_hold_quoted_spaces() {
        let s = FileSelector::parse("type:text/plain;charset=\"utf 8\" size:3").unwrap();
        assert_eq!(
            s.media_type.as_deref(),
            Some("text/plain;charset=\"utf 8\"")
        );
        assert_eq!(s.size, Some(3));
    }

    #[test]
    fn empty_selector_and_lower_case_hash() {
        assert_eq!(FileSelector::parse("").unwrap(), FileSelector::default());
        let s = FileSelector::parse("hash:sha-1:ab:cd").unwrap();
        assert_eq!(s.hash.unwrap().to_string(), "sha-1:AB:CD");
    }

    #[test]
    fn bad_selectors_are_syntax_errors() {
        for v in [
            "name:unquoted",
            "name:\"\"",
            "name:\"open",
            "name:\"a\"b\"",
            "name:\"%zz\"",
            "name:\"%+1\"",
            "name:\"%ff\"",
            "type:image",
            "type:/jpeg",
            "size:",
            "size:-1",
            "size:99999999999999999999999",
            "hash:sha-1",
            "hash:sha-1:7",
            "hash:sha-1:72:",
            "hash::72",
            "colour:red",
            "size:1 size:2",
            "nocolon",
        ] {
            assert_eq!(FileSelector::parse(v).unwrap_err().status(), 400, "{v}");
        }
    }

    #[test]
    fn ranges() {
        assert_eq!(parse_range("1-32349").unwrap(), (1, Some(32349)));
        assert_eq!(parse_range("10-*").unwrap(), (10, None));
        for v in ["0-5", "5-4", "1", "-5", "a-b", "1-", ""] {
            assert!(parse_range(v).is_err(), "{v}");
        }
    }

    #[test]
    fn attributes_round_trip() {
        let ft = FileTransfer {
            selector: FileSelector::parse(RFC5547_SELECTOR).unwrap(),
            transfer_id: Some("Q6LMoGymJdh0IKIgD6wD0jkcfgva4xvE".into()),
            disposition: Some("attachment".into()),
            date: Some("creation:\"Mon, 15 May 2006 15:01:31 +0300\"".into()),
            icon: Some("cid:id2@alicepc.example.com".into()),
            range: Some((1, None)),
        };
        let attrs = ft.to_attributes();
        assert_eq!(attrs.len(), 6);
        assert!(attrs.iter().all(is_file_attribute));
        assert_eq!(from_attributes(&attrs).unwrap(), Some(ft));
    }

    #[test]
    fn file_attributes_without_a_selector_are_not_a_transfer() {
        let attrs = [Attribute::new("file-transfer-id", "x")];
        assert_eq!(from_attributes(&attrs).unwrap(), None);
    }

    #[test]
    fn bad_file_attributes() {
        let sel = Attribute::new("file-selector", "size:1");
        for extra in [
            Attribute::new("file-transfer-id", "a b"),
            Attribute::flag("file-disposition"),
            Attribute::new("file-date", " "),
            Attribute::new("file-range", "0-1"),
            Attribute::new("file-selector", "size:2"),
        ] {
            let attrs = [sel.clone(), extra.clone()];
            assert_eq!(
                from_attributes(&attrs).unwrap_err().status(),
                400,
                "{extra:?}"
            );
        }
    }
}
