//! Identifiers and small formats the Conversation Server needs: CPM service identifiers
//! (ICSIs), derived UUIDs for `Conversation-ID`/`Contribution-ID`, RFC 3339 times, and the
//! address-of-record of a SIP URI.

use sha2::{Digest, Sha256};

pub use cpm_sip::cpm::{ICSI_DEFERRED, ICSI_MSG, ICSI_MSG_GROUP};

/// The `Accept-Contact` value asking for devices that registered `icsi` (RFC 3841; the ICSI
/// percent-encoded as a feature-tag value, TS 24.229 7.2A.8).
pub fn accept_contact(icsi: &str) -> String {
    format!(
        "*;+g.3gpp.icsi-ref=\"{}\"",
        icsi.replace(':', "%3A").replace(',', "%2C")
    )
}

/// A UUID (RFC 9562 version 8, "custom") derived from `parts` with SHA-256: the same inputs
/// give the same UUID. The PF creates missing `Conversation-ID`/`Contribution-ID` values this
/// way from the request's `Call-ID`, so a retransmission after a restart gets the same
/// identifiers and is recognised as a duplicate.
pub fn derived_uuid(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_be_bytes());
        h.update(p.as_bytes());
    }
    let d = h.finalize();
    let mut b = [0u8; 16];
    b.copy_from_slice(&d[..16]);
    b[6] = (b[6] & 0x0f) | 0x80; // version 8
    b[8] = (b[8] & 0x3f) | 0x80; // RFC 9562 variant
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// `2026-11-25T16:00:00.123Z` for a time in milliseconds since the Unix epoch (RFC 3339, the
/// CPIM `DateTime` and IMDN `<datetime>` format).
pub fn rfc3339(unix_ms: u64) -> String {
    cpm_content::time::rfc3339_ms(unix_ms)
}

// The address-of-record of a URI, in the codec's one copy: of a parsed URI and of text.
pub use cpm_sip::cpm::{aor_of_text as aor_of_str, aor_of_uri as aor_of};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_uuids_are_stable_and_well_formed() {
        let a = derived_uuid(&["call-1", "conversation"]);
        assert_eq!(a, derived_uuid(&["call-1", "conversation"]));
        assert_ne!(a, derived_uuid(&["call-1", "contribution"]));
        // Length-prefixed parts: ["ab","c"] and ["a","bc"] differ.
        assert_ne!(derived_uuid(&["ab", "c"]), derived_uuid(&["a", "bc"]));
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "8");
        assert!(matches!(&a[19..20], "8" | "9" | "a" | "b"));
    }

    #[test]
    fn rfc3339_formats_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(rfc3339(1_795_622_400_123), "2026-11-25T16:00:00.123Z");
    }

    #[test]
    fn aors() {
        let u = cpm_sip::Uri::parse("sip:b%6Fb@LocalHost;transport=tcp").unwrap();
        assert_eq!(aor_of(&u).as_deref(), Some("bob@localhost"));
        assert_eq!(
            aor_of_str("<sip:bob@Example.COM>").as_deref(),
            Some("bob@example.com")
        );
        assert_eq!(aor_of_str("bob@x").as_deref(), Some("bob@x"));
        assert_eq!(aor_of_str("nobody"), None);
        assert_eq!(aor_of(&cpm_sip::Uri::parse("sip:localhost").unwrap()), None);
    }

    #[test]
    fn accept_contact_escapes_the_icsi() {
        assert_eq!(
            accept_contact(ICSI_MSG),
            "*;+g.3gpp.icsi-ref=\"urn%3Aurn-7%3A3gpp-service.ims.icsi.oma.cpm.msg\""
        );
    }
}
