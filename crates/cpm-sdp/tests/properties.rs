//! Property tests: arbitrary input never panics and every refusal is a 400; whatever parses
//! writes back to a description that parses to the same value; the MSRP view and the answer
//! never panic on what parses.

use cpm_sdp::offer_answer::{AnswerPolicy, answer};
use cpm_sdp::{MsrpMedia, Sdp, Setup};
use proptest::prelude::*;

/// Lines that look like SDP often enough to get past the first checks.
fn sdp_like() -> impl Strategy<Value = Vec<u8>> {
    let line = prop_oneof![
        Just("t=0 0".to_owned()),
        Just("c=IN IP6 2001:db8::1".to_owned()),
        Just("m=message 2855 TCP/MSRP *".to_owned()),
        Just("m=message 9 TCP/TLS/MSRP *".to_owned()),
        Just("a=path:msrp://192.0.2.1:2855/abc;tcp".to_owned()),
        Just("a=accept-types:message/cpim text/*".to_owned()),
        Just("a=setup:actpass".to_owned()),
        Just("a=sendonly".to_owned()),
        Just("a=file-selector:name:\"a b\" size:3 hash:sha-1:AB:CD".to_owned()),
        Just("a=file-range:1-*".to_owned()),
        "[a-z]=[ -~]{0,24}",
        "a=[a-z-]{1,12}(:[ -~]{0,24})?",
    ];
    (
        prop::collection::vec(line, 0..24),
        prop::bool::ANY,
        prop::collection::vec(any::<(usize, u8)>(), 0..2),
    )
        .prop_map(|(lines, crlf, noise)| {
            let sep = if crlf { "\r\n" } else { "\n" };
            // A valid head, so that most cases get past it to the lines that vary.
            let head = ["v=0", "o=- 1 2 IN IP4 192.0.2.1", "s=-", "t=0 0"];
            let all: Vec<&str> = head
                .iter()
                .copied()
                .chain(lines.iter().map(String::as_str))
                .collect();
            let mut bytes = all.join(sep).into_bytes();
            for (at, b) in noise {
                if !bytes.is_empty() {
                    let i = at % bytes.len();
                    bytes[i] = b;
                }
            }
            bytes
        })
}

/// Parses; on success checks the round trip and the MSRP paths. Returns whether it parsed.
fn exercise(bytes: &[u8]) -> bool {
    let sdp = match Sdp::parse(bytes) {
        Ok(s) => s,
        Err(e) => {
            assert_eq!(e.status(), 400, "{e}");
            return false;
        }
    };
    let again = Sdp::parse(&sdp.to_bytes()).expect("what we write parses");
    assert_eq!(again, sdp);
    if let Some(Ok((_, m))) = sdp.msrp() {
        assert_eq!(MsrpMedia::from_media(&m.to_media(), None).unwrap(), m);
        let policy = AnswerPolicy {
            path: m.path.clone(),
            accept_types: vec!["message/cpim".into()],
            accept_wrapped_types: Vec::new(),
            prefer: Setup::Active,
            max_size: None,
        };
        let _ = answer(&m, &policy);
    }
    true
}

proptest! {
    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        exercise(&bytes);
    }

    #[test]
    fn sdp_like_text_round_trips(bytes in sdp_like()) {
        exercise(&bytes);
    }
}

/// The generator is only worth something if a fair share of its cases parse.
#[test]
fn sdp_like_cases_often_parse() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let strategy = sdp_like();
    let parsed = (0..400)
        .filter(|_| exercise(&strategy.new_tree(&mut runner).unwrap().current()))
        .count();
    assert!(parsed > 40, "only {parsed} of 400 parsed");
}
