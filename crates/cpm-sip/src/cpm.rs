//! What CPM adds to SIP that every CPM element shares: the service identifiers (ICSIs,
//! PROTOCOL.md rows 5 and 12–14), the routing phase the SIP/IP Core marks on its own Route
//! entry, the address-of-record of a URI, and the HTTP-date of the `Date` header. One copy,
//! used by the core, the Conversation Server and the client.

use crate::uri::{SipUri, Uri, unescape};

/// The prefix of every CPM service identifier (OMA CPM; 3GPP TS 24.229 7.2A.8 ICSI).
pub const ICSI_PREFIX: &str = "urn:urn-7:3gpp-service.ims.icsi.oma.cpm";
/// ICSI of the pager-mode standalone message.
pub const ICSI_MSG: &str = "urn:urn-7:3gpp-service.ims.icsi.oma.cpm.msg";
/// ICSI of the 1-N pager-mode message.
pub const ICSI_MSG_GROUP: &str = "urn:urn-7:3gpp-service.ims.icsi.oma.cpm.msg.group";
/// The Contact parameter that names a Participating Function's dialog (its value: the
/// node shard the PF runs on): the core hands in-dialog requests for it to that PF.
pub const PF_CONTACT_PARAM: &str = "cpm-pf";
/// ICSI of a Large Message Mode message.
pub const ICSI_LARGEMSG: &str = "urn:urn-7:3gpp-service.ims.icsi.oma.cpm.largemsg";
/// ICSI of a deferred message delivered by the Participating Function.
pub const ICSI_DEFERRED: &str = "urn:urn-7:3gpp-service.ims.icsi.oma.cpm.deferred";
/// ICSI of a CPM session (1-1 or group chat over MSRP).
pub const ICSI_SESSION: &str = "urn:urn-7:3gpp-service.ims.icsi.oma.cpm.session";
/// ICSI of a CPM file transfer.
pub const ICSI_FILETRANSFER: &str = "urn:urn-7:3gpp-service.ims.icsi.oma.cpm.filetransfer";

/// Whether `icsi` names a CPM service (case-insensitive prefix match).
pub fn is_cpm_icsi(icsi: &str) -> bool {
    icsi.get(..ICSI_PREFIX.len())
        .is_some_and(|p| p.eq_ignore_ascii_case(ICSI_PREFIX))
}

/// Which side of a CPM request the Participating Function serves (outline 5.2.3.2): the
/// core routes a request through the sender's PF (`Orig`) and then the recipient's (`Term`),
/// and marks which on the Route entry that brings the request back to itself
/// (`<sip:core;lr;cpm=orig>`).
#[derive(Clone, Copy, Debug, Eq, Hash, PartialEq)]
pub enum Phase {
    /// Originating: the PF of the user who sent the request.
    Orig,
    /// Terminating: the PF of the user the request is for.
    Term,
}

impl Phase {
    /// The name of the Route URI parameter that carries the phase.
    pub const PARAM: &'static str = "cpm";

    /// The parameter's value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Orig => "orig",
            Self::Term => "term",
        }
    }

    /// Parses the parameter's value (case-insensitive).
    pub fn parse(value: &str) -> Option<Self> {
        if value.eq_ignore_ascii_case("orig") {
            Some(Self::Orig)
        } else if value.eq_ignore_ascii_case("term") {
            Some(Self::Term)
        } else {
            None
        }
    }

    /// The phase a SIP URI's `cpm` parameter names, if any.
    pub fn of_uri(uri: &SipUri) -> Option<Self> {
        uri.params
            .iter()
            .find(|p| p.name.eq_ignore_ascii_case(Self::PARAM))
            .and_then(|p| p.value.as_deref())
            .and_then(Self::parse)
    }
}

/// The canonical address-of-record `user@host` of a SIP URI: the user part unescaped, the
/// host in lower case, port and parameters dropped (RFC 3261 section 10.3 step 5). `None`
/// for a URI without a user part.
pub fn aor_of(uri: &SipUri) -> Option<String> {
    let user = uri.user.as_deref()?;
    let user = String::from_utf8_lossy(&unescape(user)).into_owned();
    Some(format!(
        "{user}@{}",
        uri.host.to_string().to_ascii_lowercase()
    ))
}

/// [`aor_of`] for any URI: `None` unless it is a `sip:`/`sips:` URI with a user part.
pub fn aor_of_uri(uri: &Uri) -> Option<String> {
    match uri {
        Uri::Sip(u) => aor_of(u),
        _ => None,
    }
}

/// [`aor_of`] for a URI written as text: `sip:bob@localhost`, `<sip:bob@localhost>`,
/// `im:bob@localhost` (RFC 3860, as CPIM headers write it) or a bare `bob@localhost`.
pub fn aor_of_text(text: &str) -> Option<String> {
    let s = text.trim().trim_start_matches('<').trim_end_matches('>');
    let scheme = |p: &str| s.get(..p.len()).is_some_and(|x| x.eq_ignore_ascii_case(p));
    if scheme("sip:") || scheme("sips:") {
        return Uri::parse(s).ok().as_ref().and_then(aor_of_uri);
    }
    let bare = if scheme("im:") { &s[3..] } else { s };
    let bare = bare.split([';', '?', '>']).next().unwrap_or_default();
    Uri::parse(&format!("sip:{bare}"))
        .ok()
        .as_ref()
        .and_then(aor_of_uri)
}

/// A Unix time as an RFC 1123 date (`Wed, 25 Nov 2026 14:20:58 GMT`), the `Date` header's
/// form (RFC 3261 section 20.17; see `is_sip_date` for the other direction).
pub fn http_date(unix: u64) -> String {
    let days = (unix / 86_400) as i64;
    let secs = unix % 86_400;
    // Civil from days (proleptic Gregorian), after H. Hinnant's algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    const WD: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MO: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format!(
        "{}, {:02} {} {} {:02}:{:02}:{:02} GMT",
        WD[(days.rem_euclid(7)) as usize],
        d,
        MO[(m - 1) as usize],
        y,
        secs / 3600,
        (secs / 60) % 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aors_of_every_written_form_agree() {
        for t in [
            "sip:Bob@LocalHost",
            "<sip:Bob@localhost;transport=tcp>",
            "sip:Bob@localhost:5070",
            "im:Bob@localhost",
            "Bob@LOCALHOST",
            "sip:%42ob@localhost",
        ] {
            assert_eq!(aor_of_text(t).as_deref(), Some("Bob@localhost"), "{t}");
        }
        assert_eq!(aor_of_text("sip:localhost"), None);
        assert_eq!(aor_of_text("tel:+1555"), None);
    }

    #[test]
    fn phases_and_icsis() {
        assert_eq!(Phase::parse("TERM"), Some(Phase::Term));
        assert_eq!(Phase::parse(Phase::Orig.as_str()), Some(Phase::Orig));
        assert_eq!(Phase::parse("x"), None);
        assert!(is_cpm_icsi(ICSI_SESSION) && is_cpm_icsi(&ICSI_MSG.to_uppercase()));
        assert!(!is_cpm_icsi("urn:urn-7:3gpp-service.ims.icsi.mmtel"));
    }

    #[test]
    fn http_dates() {
        assert_eq!(http_date(0), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(http_date(1_795_622_400), "Wed, 25 Nov 2026 16:00:00 GMT");
        assert!(crate::is_sip_date(&http_date(1_795_622_400)));
    }
}
