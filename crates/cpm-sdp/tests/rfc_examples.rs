//! The SDP examples of RFC 4975 and RFC 5547 as conformance vectors: each parses, writes back
//! to the same octets, reads as the RFC describes it, and our answer to each offer agrees
//! with the RFC's answer on everything the RFC negotiates.
//!
//! # Provenance
//!
//! Copied from the RFC text as rendered by the public repository `tex2e/rfc-translater`
//! (the source the cpm-msrp vectors use too), not from memory:
//!
//! * RFC 4975 section 8.7, Figures 9 and 10: `html/rfc4975.html` at commit
//!   `0295ab02ab3d1fc399a3d10b98fa9aed0a221ebf`, where they sit verbatim in `<pre>` blocks;
//!   only the 4-space figure indentation was removed.
//! * RFC 5547 section 9.1 (Figures 8 and 9) and 9.2 (Figures 15 and 16): `html/rfc5547.html`
//!   at commit `01b8a5384dcd114b30f9912eaa9dca63445c9e76`. That rendering puts these figures
//!   in flowing paragraphs, so their line breaks were lost; they were put back before each
//!   `<letter>=`, the only places SDP breaks lines. The RFC folds `a=file-selector` after
//!   `hash:sha-1:` for print and its NOTE says "Real implementations will encode it in a
//!   single line": the fold is removed. One detail could not be checked against the
//!   original layout: whether `s=` is followed by a space; it is kept empty here.
//!
//! Every vector gets CRLF line ends, as on the wire (RFC 8866 section 5).

use cpm_msrp::MsrpUri;
use cpm_sdp::offer_answer::{AnswerPolicy, answer, connects};
use cpm_sdp::{Direction, FileHash, MsrpMedia, Sdp, Setup};

/// LF figure to CRLF wire text.
fn wire(figure: &str) -> Vec<u8> {
    figure.replace('\n', "\r\n").into_bytes()
}

/// Parses, checks the octets round trip, returns the description and its MSRP media.
fn vector(figure: &str) -> (Sdp, MsrpMedia) {
    let bytes = wire(figure);
    let sdp = Sdp::parse(&bytes).unwrap_or_else(|e| panic!("{e}: {figure}"));
    assert_eq!(
        String::from_utf8(sdp.to_bytes()).unwrap(),
        String::from_utf8(bytes).unwrap(),
        "round trip"
    );
    // LF-only input reads the same (RFC 8866 section 5 asks for that tolerance).
    assert_eq!(Sdp::parse(figure.as_bytes()).unwrap(), sdp);
    let (index, media) = sdp.msrp().expect("an MSRP m-line").expect("a usable one");
    assert_eq!(index, 0);
    // The typed view writes back to an equal view.
    assert_eq!(
        MsrpMedia::from_media(&media.to_media(), None).unwrap(),
        media
    );
    (sdp, media)
}

fn uri(s: &str) -> MsrpUri {
    s.parse().unwrap()
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| (*s).to_owned()).collect()
}

// RFC 4975 section 8.7, Figure 9: SDP from Endpoint A.
const RFC4975_8_7_OFFER: &str = "v=0
o=usera 2890844526 2890844527 IN IP4 alice.example.com
s= -
c=IN IP4 alice.example.com
t=0 0
m=message 7394 TCP/MSRP *
a=accept-types:message/cpim text/plain text/html
a=path:msrp://alice.example.com:7394/2s93i93idj;tcp
";

// RFC 4975 section 8.7, Figure 10: SDP from Endpoint B.
const RFC4975_8_7_ANSWER: &str = "v=0
o=userb 2890844530 2890844532 IN IP4 bob.example.com
s= -
c=IN IP4 bob.example.com
t=0 0
m=message 8493 TCP/MSRP *
a=accept-types:message/cpim text/plain
a=path:msrp://bob.example.com:8493/si438dsaodes;tcp
";

#[test]
fn rfc4975_8_7_offer_and_answer() {
    let (offer_sdp, offer) = vector(RFC4975_8_7_OFFER);
    assert_eq!(offer_sdp.origin.username, "usera");
    assert_eq!(offer_sdp.origin.session_version, 2890844527);
    assert_eq!(offer_sdp.session_name, " -");
    assert_eq!(offer.port, 7394);
    assert!(!offer.secure);
    assert_eq!(
        offer.path,
        vec![uri("msrp://alice.example.com:7394/2s93i93idj;tcp")]
    );
    assert_eq!(
        offer.accept_types,
        strings(&["message/cpim", "text/plain", "text/html"])
    );
    assert_eq!(offer.setup, None);
    assert_eq!(offer.direction, Direction::SendRecv);
    // c= names a host, not an address.
    assert_eq!(offer.connection, None);

    let (_, rfc_answer) = vector(RFC4975_8_7_ANSWER);
    let policy = AnswerPolicy {
        path: rfc_answer.path.clone(),
        accept_types: strings(&["message/cpim", "text/plain"]),
        accept_wrapped_types: Vec::new(),
        prefer: Setup::Passive,
        max_size: None,
    };
    let ours = answer(&offer, &policy).unwrap();
    assert_eq!(ours.port, rfc_answer.port);
    assert_eq!(ours.path, rfc_answer.path);
    assert_eq!(ours.accept_types, rfc_answer.accept_types);
    assert_eq!(ours.direction, rfc_answer.direction);
    // RFC 6135 adds an explicit a=setup; the RFC 4975 answer has none. Either way A, the
    // offerer, connects (RFC 4975 section 5.4).
    assert_eq!(ours.setup, Some(Setup::Passive));
    assert!(connects(offer.setup, rfc_answer.setup, true));
    assert!(connects(offer.setup, ours.setup, true));
    assert!(!connects(ours.setup, offer.setup, false));
}

// RFC 5547 section 9.1, Figure 8: the SDP offer for file transfer (push).
const RFC5547_9_1_OFFER: &str = "v=0
o=alice 2890844526 2890844526 IN IP4 alicepc.example.com
s=
c=IN IP4 alicepc.example.com
t=0 0
m=message 7654 TCP/MSRP *
i=This is my latest picture
a=sendonly
a=accept-types:message/cpim
a=accept-wrapped-types:*
a=path:msrp://alicepc.example.com:7654/jshA7we;tcp
a=file-selector:name:\"My cool picture.jpg\" type:image/jpeg size:4092 hash:sha-1:72:24:5F:E8:65:3D:DA:F3:71:36:2F:86:D4:71:91:3E:E4:A2:CE:2E
a=file-transfer-id:Q6LMoGymJdh0IKIgD6wD0jkcfgva4xvE
a=file-disposition:render
a=file-date:creation:\"Mon, 15 May 2006 15:01:31 +0300\"
a=file-icon:cid:id2@alicepc.example.com
";

// RFC 5547 section 9.1, Figure 9: the SDP answer accepting it.
const RFC5547_9_1_ANSWER: &str = "v=0
o=bob 2890844656 2890844656 IN IP4 bobpc.example.com
s=
c=IN IP4 bobpc.example.com
t=0 0
m=message 8888 TCP/MSRP *
a=recvonly
a=accept-types:message/cpim
a=accept-wrapped-types:*
a=path:msrp://bobpc.example.com:8888/9di4ea;tcp
a=file-selector:name:\"My cool picture.jpg\" type:image/jpeg size:4092 hash:sha-1:72:24:5F:E8:65:3D:DA:F3:71:36:2F:86:D4:71:91:3E:E4:A2:CE:2E
a=file-transfer-id:Q6LMoGymJdh0IKIgD6wD0jkcfgva4xvE
";

const HASH: [u8; 20] = [
    0x72, 0x24, 0x5F, 0xE8, 0x65, 0x3D, 0xDA, 0xF3, 0x71, 0x36, 0x2F, 0x86, 0xD4, 0x71, 0x91, 0x3E,
    0xE4, 0xA2, 0xCE, 0x2E,
];

#[test]
fn rfc5547_9_1_push_offer_and_answer() {
    let (sdp, offer) = vector(RFC5547_9_1_OFFER);
    assert_eq!(sdp.session_name, "");
    assert_eq!(
        sdp.media[0].information.as_deref(),
        Some("This is my latest picture")
    );
    assert_eq!(offer.direction, Direction::SendOnly);
    assert_eq!(offer.accept_wrapped_types, strings(&["*"]));
    let f = offer.file.as_ref().unwrap();
    assert_eq!(f.selector.name.as_deref(), Some("My cool picture.jpg"));
    assert_eq!(f.selector.media_type.as_deref(), Some("image/jpeg"));
    assert_eq!(f.selector.size, Some(4092));
    assert_eq!(
        f.selector.hash,
        Some(FileHash {
            algorithm: "sha-1".into(),
            value: HASH.to_vec(),
        })
    );
    assert_eq!(
        f.transfer_id.as_deref(),
        Some("Q6LMoGymJdh0IKIgD6wD0jkcfgva4xvE")
    );
    assert_eq!(f.disposition.as_deref(), Some("render"));
    assert_eq!(
        f.date.as_deref(),
        Some("creation:\"Mon, 15 May 2006 15:01:31 +0300\"")
    );
    assert_eq!(f.icon.as_deref(), Some("cid:id2@alicepc.example.com"));
    assert_eq!(f.range, None);
    assert!(offer.other.is_empty());

    let (_, rfc_answer) = vector(RFC5547_9_1_ANSWER);
    let policy = AnswerPolicy {
        path: rfc_answer.path.clone(),
        accept_types: strings(&["message/cpim"]),
        accept_wrapped_types: strings(&["*"]),
        prefer: Setup::Passive,
        max_size: None,
    };
    let ours = answer(&offer, &policy).unwrap();
    // Everything the RFC's answer says, ours says; ours adds a=setup (RFC 6135).
    assert_eq!(
        MsrpMedia {
            setup: None,
            ..ours.clone()
        },
        rfc_answer
    );
    assert_eq!(ours.setup, Some(Setup::Passive));
}

// RFC 5547 section 9.2, Figure 15: the offerer asks for a file by its hash (pull).
const RFC5547_9_2_OFFER: &str = "v=0
o=alice 2890844526 2890844526 IN IP4 alicepc.example.com
s=
c=IN IP4 alicepc.example.com
t=0 0
m=message 7654 TCP/MSRP *
a=recvonly
a=accept-types:message/cpim
a=accept-wrapped-types:*
a=path:msrp://alicepc.example.com:7654/jshA7we;tcp
a=file-selector:hash:sha-1:72:24:5F:E8:65:3D:DA:F3:71:36:2F:86:D4:71:91:3E:E4:A2:CE:2E
a=file-transfer-id:aCQYuBRVoUPGVsFZkCK98vzcX2FXDIk2
";

// RFC 5547 section 9.2, Figure 16: the answerer sends it, adding the type selector.
const RFC5547_9_2_ANSWER: &str = "v=0
o=bob 2890844656 2890855439 IN IP4 bobpc.example.com
s=
c=IN IP4 bobpc.example.com
t=0 0
m=message 8888 TCP/MSRP *
a=sendonly
a=accept-types:message/cpim
a=accept-wrapped-types:*
a=path:msrp://bobpc.example.com:8888/9di4ea;tcp
a=file-selector:type:image/jpeg hash:sha-1:72:24:5F:E8:65:3D:DA:F3:71:36:2F:86:D4:71:91:3E:E4:A2:CE:2E
a=file-transfer-id:aCQYuBRVoUPGVsFZkCK98vzcX2FXDIk2
";

#[test]
fn rfc5547_9_2_pull_offer_and_answer() {
    let (_, offer) = vector(RFC5547_9_2_OFFER);
    let sel = &offer.file.as_ref().unwrap().selector;
    assert_eq!((sel.name.as_ref(), sel.size), (None, None));
    assert_eq!(sel.hash.as_ref().unwrap().value, HASH);

    let (_, rfc_answer) = vector(RFC5547_9_2_ANSWER);
    let policy = AnswerPolicy {
        path: rfc_answer.path.clone(),
        accept_types: strings(&["message/cpim"]),
        accept_wrapped_types: strings(&["*"]),
        prefer: Setup::Passive,
        max_size: None,
    };
    let mut ours = answer(&offer, &policy).unwrap();
    assert_eq!(ours.direction, Direction::SendOnly);
    // The file sender MAY add a type selector (RFC 5547 section 8.3.2); ours echoes the offer's
    // and the caller adds what it knows of the file.
    assert_eq!(ours.file.as_ref().unwrap().selector, *sel);
    ours.file.as_mut().unwrap().selector.media_type = Some("image/jpeg".into());
    ours.setup = None;
    assert_eq!(ours, rfc_answer);
}

#[test]
fn our_answers_are_whole_descriptions_that_parse_back() {
    let (_, offer) = vector(RFC5547_9_1_OFFER);
    let policy = AnswerPolicy {
        path: vec![uri("msrp://[2001:db8::8]:8888/9di4ea;tcp")],
        accept_types: strings(&["message/cpim"]),
        accept_wrapped_types: strings(&["*"]),
        prefer: Setup::Active,
        max_size: Some(1 << 20),
    };
    let ours = answer(&offer, &policy).unwrap();
    let sdp = Sdp::for_msrp(
        "bob",
        2890844656,
        2890844656,
        "2001:db8::8".parse().unwrap(),
        &ours,
    );
    let text = String::from_utf8(sdp.to_bytes()).unwrap();
    assert!(text.contains("\r\nc=IN IP6 2001:db8::8\r\n"), "{text}");
    let (_, back) = Sdp::parse(text.as_bytes())
        .unwrap()
        .msrp()
        .unwrap()
        .unwrap();
    assert_eq!(
        back,
        MsrpMedia {
            connection: Some("2001:db8::8".parse().unwrap()),
            ..ours
        }
    );
}
