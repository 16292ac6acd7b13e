//! The message examples of RFC 4975 and RFC 4976, shared by `rfc4975_examples.rs` (our codec
//! against the RFC) and `cross_check.rs` (our codec against an independent implementation).
//!
//! # Provenance
//!
//! Every vector below was copied from the RFC text, not from memory. The text was read from
//! the public repository `tex2e/rfc-translater`, which renders each RFC's `.txt` into HTML
//! and keeps every figure verbatim in a `<pre>` block:
//!
//! * RFC 4975: `html/rfc4975.html` at commit `0295ab02ab3d1fc399a3d10b98fa9aed0a221ebf`
//!   (original: <https://datatracker.ietf.org/doc/html/rfc4975>);
//! * RFC 4976: `html/rfc4976.html` at commit `010b2134f86b904a2f0106d10519d9cfeab08f1d`
//!   (original: <https://datatracker.ietf.org/doc/html/rfc4976>).
//!
//! What was done to the figures, and nothing else:
//! * HTML entities decoded (`&lt;` `&gt;` `&#34;` `&#39;`);
//! * the figure's left indentation (3 to 7 spaces) removed;
//! * the rendering splits a figure at each empty line; the one empty line between the
//!   header section and the body is put back;
//! * the RFC lays figures out with LF; [`wire`] makes every line end in CRLF;
//! * RFC 4976 folds long lines with a trailing `\` ("Neither the backslash nor the extra
//!   CRLF is included in the actual request or response", RFC 4976 section 3): [`wire`]
//!   removes the backslash, the line end and the next line's indentation.
//!
//! Where a figure is not a complete message, the change made is said next to the vector.
//! No vector here is "transcribed, not verified": each one was compared line by line with
//! the rendering named above. Two details could not be compared with a second copy of the
//! RFC: the two spaces in "Hi, Alice!  I'm Bob!" (section 11.1) and the underscores around
//! the DTD URL in the section 11.2 body; both are kept as the rendering shows them.

// Each test crate that includes this module uses a different subset of it.
#![allow(dead_code)]

/// One example message.
pub(crate) struct Vector {
    /// A short name for failure messages.
    pub(crate) name: &'static str,
    /// RFC, section and figure.
    pub(crate) source: &'static str,
    /// The figure, as described in the module documentation (LF line ends, RFC 4976 line
    /// folds still in).
    pub(crate) text: &'static str,
}

/// The example as it goes on the wire: RFC 4976 folds undone, every line ending in CRLF.
pub(crate) fn wire(example: &str) -> Vec<u8> {
    let mut lines: Vec<String> = Vec::new();
    let mut folding = false;
    for line in example.trim_start_matches('\n').lines() {
        let piece = if folding { line.trim_start() } else { line };
        match lines.last_mut() {
            Some(last) if folding => last.push_str(piece),
            _ => lines.push(piece.to_owned()),
        }
        folding = piece.ends_with('\\');
        if folding && let Some(last) = lines.last_mut() {
            last.pop();
        }
    }
    let mut s = lines.join("\r\n");
    s.push_str("\r\n");
    s.into_bytes()
}

// ---------------------------------------------------------------------------------------
// RFC 4975 section 4, Figure 2: Example MSRP Exchange.

pub(crate) const S4_SEND: &str = r#"
MSRP a786hjs2 SEND
To-Path: msrp://biloxi.example.com:12763/kjhd37s2s20w2a;tcp
From-Path: msrp://atlanta.example.com:7654/jshA7weztas;tcp
Message-ID: 87652491
Byte-Range: 1-25/25
Content-Type: text/plain

Hey Bob, are you there?
-------a786hjs2$
"#;

pub(crate) const S4_200: &str = r#"
MSRP a786hjs2 200 OK
To-Path: msrp://atlanta.example.com:7654/jshA7weztas;tcp
From-Path: msrp://biloxi.example.com:12763/kjhd37s2s20w2a;tcp
-------a786hjs2$
"#;

// ---------------------------------------------------------------------------------------
// RFC 4975 section 5.1, Figure 3: Breaking a Message into Chunks. As printed, without
// To-Path and From-Path ("a snippet"); [`S5_1_CHUNK1`] and [`S5_1_CHUNK2`] add paths, which
// are ours, not the RFC's.

pub(crate) const S5_1_CHUNK1_AS_PRINTED: &str = r#"
MSRP dkei38sd SEND
Message-ID: 4564dpWd
Byte-Range: 1-*/8
Content-Type: text/plain

abcd
-------dkei38sd+
"#;

pub(crate) const S5_1_CHUNK2_AS_PRINTED: &str = r#"
MSRP dkei38ia SEND
Message-ID: 4564dpWd
Byte-Range: 5-8/8
Content-Type: text/plain

EFGH
-------dkei38ia$
"#;

pub(crate) const S5_1_CHUNK1: &str = r#"
MSRP dkei38sd SEND
To-Path: msrp://alice.example.com:7777/foo;tcp
From-Path: msrp://bob.example.com:7777/bar;tcp
Message-ID: 4564dpWd
Byte-Range: 1-*/8
Content-Type: text/plain

abcd
-------dkei38sd+
"#;

pub(crate) const S5_1_CHUNK2: &str = r#"
MSRP dkei38ia SEND
To-Path: msrp://alice.example.com:7777/foo;tcp
From-Path: msrp://bob.example.com:7777/bar;tcp
Message-ID: 4564dpWd
Byte-Range: 5-8/8
Content-Type: text/plain

EFGH
-------dkei38ia$
"#;

// ---------------------------------------------------------------------------------------
// RFC 4975 section 11.1: Basic IM Session, steps 4 to 7.

pub(crate) const S11_1_SEND_ALICE: &str = r#"
MSRP d93kswow SEND
To-Path: msrp://bob.example.com:8888/9di4eae923wzd;tcp
From-Path: msrp://alicepc.example.com:7777/iau39soe2843z;tcp
Message-ID: 12339sdqwer
Byte-Range: 1-16/16
Content-Type: text/plain

Hi, I'm Alice!
-------d93kswow$
"#;

pub(crate) const S11_1_200_BOB: &str = r#"
MSRP d93kswow 200 OK
To-Path: msrp://alicepc.example.com:7777/iau39soe2843z;tcp
From-Path: msrp://bob.example.com:8888/9di4eae923wzd;tcp
-------d93kswow$
"#;

pub(crate) const S11_1_SEND_BOB: &str = r#"
MSRP dkei38sd SEND
To-Path: msrp://alicepc.example.com:7777/iau39soe2843z;tcp
From-Path: msrp://bob.example.com:8888/9di4eae923wzd;tcp
Message-ID: 456s9wlk3
Byte-Range: 1-21/21
Content-Type: text/plain

Hi, Alice!  I'm Bob!
-------dkei38sd$
"#;

pub(crate) const S11_1_200_ALICE: &str = r#"
MSRP dkei38sd 200 OK
To-Path: msrp://bob.example.com:8888/9di4eae923wzd;tcp
From-Path: msrp://alicepc.example.com:7777/iau39soe2843z;tcp
-------dkei38sd$
"#;

// ---------------------------------------------------------------------------------------
// RFC 4975 section 11.2, Figure 13: Example Message with XHTML.

pub(crate) const S11_2_XHTML: &str = r#"
MSRP dsdfoe38sd SEND
To-Path: msrp://alice.example.com:7777/iau39soe2843z;tcp
From-Path: msrp://bob.example.com:8888/9di4eae923wzd;tcp
Message-ID: 456so39s
Byte-Range: 1-374/374
Content-Type: application/xhtml+xml

<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE html
PUBLIC "-//W3C//DTD XHTML 1.0 Strict//EN"
"_http://www.w3.org/TR/xhtml1/DTD/xhtml1-strict.dtd_">
<html xmlns="http://www.w3.org/1999/xhtml" xml:lang="en" lang="en">
  <head>
    <title>FY2005 Results</title>
</head>
  <body>
   <p>See the results at <a
href="http://example.org/">example.org</a>.</p>
  </body>
</html>
-------dsdfoe38sd$
"#;

// ---------------------------------------------------------------------------------------
// RFC 4975 section 11.4, Figures 14 and 15: Chunked Message with Message/CPIM Payload.

pub(crate) const S11_4_CHUNK1: &str = r#"
MSRP d93kswow SEND
To-Path: msrp://bobpc.example.com:8888/9di4eae923wzd;tcp
From-Path: msrp://alicepc.example.com:7654/iau39soe2843z;tcp
Message-ID: 12339sdqwer
Byte-Range: 1-137/148
Content-Type: message/cpim

To: Bob <sip:bob@example.com>
From: Alice <sip:alice@example.com>
DateTime: 2006-05-15T15:02:31-03:00
Content-Type: text/plain

ABCD
-------d93kswow+
"#;

pub(crate) const S11_4_CHUNK2: &str = r#"
MSRP op2nc9a SEND
To-Path: msrp://bobpc.example.com:8888/9di4eae923wzd;tcp
From-Path: msrp://alicepc.example.com:7654/iau39soe2843z;tcp
Message-ID: 12339sdqwer
Byte-Range: 138-148/148
Content-Type: message/cpim

1234567890
-------op2nc9a$
"#;

// ---------------------------------------------------------------------------------------
// RFC 4975 section 11.5: System Message.

pub(crate) const S11_5_SYSTEM: &str = r#"
MSRP d93kswow SEND
To-Path: msrp://alicepc.example.com:8888/9di4eae923wzd;tcp
From-Path: msrp://example.com:7777/iau39soe2843z;tcp
Message-ID: 12339sdqwer
Byte-Range: 1-38/38
Failure-Report: no
Success-Report: no
Content-Type: text/plain

This conference will end in 5 minutes
-------d93kswow$
"#;

// ---------------------------------------------------------------------------------------
// RFC 4975 section 11.6, Figures 16 and 17: Positive Report.

pub(crate) const S11_6_SEND: &str = r#"
MSRP d93kswow SEND
To-Path: msrp://bob.example.com:8888/9di4eae923wzd;tcp
From-Path: msrp://alicepc.example.com:7777/iau39soe2843z;tcp
Message-ID: 12339sdqwer
Byte-Range: 1-106/106
Success-Report: yes
Failure-Report: no
Content-Type: text/html

<html><body>
<p>Here is that important link...
<a href="http://www.example.com/foobar">foobar</a>
</p>
</body></html>
-------d93kswow$
"#;

pub(crate) const S11_6_REPORT: &str = r#"
MSRP dkei38sd REPORT
To-Path: msrp://alicepc.example.com:7777/iau39soe2843z;tcp
From-Path: msrp://bob.example.com:8888/9di4eae923wzd;tcp
Message-ID: 12339sdqwer
Byte-Range: 1-106/106
Status: 000 200 OK
-------dkei38sd$
"#;

// ---------------------------------------------------------------------------------------
// RFC 4976 section 3 (Protocol Overview): a SEND from Alice through relays a.example.org and
// b.example.net to Bob, the hop-by-hop 200s, and the success REPORT coming back. The RFC
// prints "MSRP 6aef 200 OK" and "MSRP juh76 SEND" in one figure; they are two messages.

pub(crate) const R3_SEND_ALICE: &str = r#"
MSRP 6aef SEND
To-Path: msrps://a.example.org:9000/kjfjan;tcp \
         msrps://b.example.net:9000/aeiug;tcp \
         msrps://bob.example.net:8145/foo;tcp
From-Path: msrps://alice.example.org:7965/bar;tcp
Success-Report: yes
Byte-Range: 1-*/*
Message-ID: 87652
Content-Type: text/plain

Hi Bob, I'm about to send you file.mpeg
-------6aef$
"#;

pub(crate) const R3_200_A: &str = r#"
MSRP 6aef 200 OK
To-Path: msrps://alice.example.org:7965/bar;tcp
From-Path: msrps://a.example.org:9000/kjfjan;tcp
Message-ID: 87652
-------6aef$
"#;

pub(crate) const R3_SEND_A: &str = r#"
MSRP juh76 SEND
To-Path: msrps://b.example.net:9000/aeiug;tcp \
         msrps://bob.example.net:8145/foo;tcp
From-Path: msrps://a.example.org:9000/kjfjan;tcp \
           msrps://alice.example.org:7965/bar;tcp
Success-Report: yes
Message-ID: 87652
Byte-Range: 1-*/*
Content-Type: text/plain

Hi Bob, I'm about to send you file.mpeg
-------juh76$
"#;

pub(crate) const R3_200_B: &str = r#"
MSRP juh76 200 OK
To-Path: msrps://a.example.org:9000/kjfjan;tcp
From-Path: msrps://b.example.net:9000/aeiug;tcp
Message-ID: 87652
-------juh76$
"#;

pub(crate) const R3_SEND_B: &str = r#"
MSRP xght6 SEND
To-Path: msrps://bob.example.net:8145/foo;tcp
From-Path: msrps://b.example.net:9000/aeiug;tcp \
           msrps://a.example.org:9000/kjfjan;tcp \
           msrps://alice.example.org:7965/bar;tcp
Success-Report: yes
Message-ID: 87652
Byte-Range: 1-*/*
Content-Type: text/plain

Hi Bob, I'm about to send you file.mpeg
-------xght6$
"#;

/// The RFC's figure has no end-line here (the next line is "MSRP yh67 REPORT"): the
/// end-line `-------xght6$` is ours.
pub(crate) const R3_200_BOB: &str = r#"
MSRP xght6 200 OK
To-Path: msrps://b.example.net:9000/aeiug;tcp
From-Path: msrps://bob.example.net:8145/foo;tcp
Message-ID: 87652
-------xght6$
"#;

pub(crate) const R3_REPORT_BOB: &str = r#"
MSRP yh67 REPORT
To-Path: msrps://b.example.net:9000/aeiug;tcp \
         msrps://a.example.org:9000/kjfjan;tcp \
         msrps://alice.example.org:7965/bar;tcp
From-Path: msrps://bob.example.net:8145/foo;tcp
Message-ID: 87652
Byte-Range: 1-39/39
Status: 000 200 OK
-------yh67$
"#;

pub(crate) const R3_REPORT_B: &str = r#"
MSRP yh67 REPORT
To-Path: msrps://a.example.org:9000/kjfjan;tcp \
         msrps://alice.example.org:7965/bar;tcp
From-Path: msrps://b.example.net:9000/aeiug;tcp \
           msrps://bob.example.net:8145/foo;tcp
Message-ID: 87652
Byte-Range: 1-39/39
Status: 000 200 OK
-------yh67$
"#;

pub(crate) const R3_REPORT_A: &str = r#"
MSRP yh67 REPORT
To-Path: msrps://alice.example.org:7965/bar;tcp
From-Path: msrps://a.example.org:9000/kjfjan;tcp \
           msrps://b.example.net:9000/aeiug;tcp \
           msrps://bob.example.net:8145/foo;tcp
Message-ID: 87652
Byte-Range: 1-39/39
Status: 000 200 OK
-------yh67$
"#;

// ---------------------------------------------------------------------------------------
// RFC 4976 section 5.1 (Connecting to Relays Acting on Your Behalf): Alice authenticates
// to intra.example.com, then through it to extra.example.com. In the three AUTH requests
// with an Authorization header the RFC's figure has no `\` after `username="Alice",`
// although the next line continues the header (MSRP has no line folding); the ` \` there
// is ours.

pub(crate) const R5_1_AUTH_1: &str = r#"
MSRP 49fh AUTH
To-Path: msrps://alice@intra.example.com;tcp
From-Path: msrps://alice.example.com:9892/98cjs;tcp
-------49fh$
"#;

pub(crate) const R5_1_401_1: &str = r#"
MSRP 49fh 401 Unauthorized
To-Path: msrps://alice.example.com:9892/98cjs;tcp
From-Path: msrps://alice@intra.example.com;tcp
WWW-Authenticate: Digest realm="intra.example.com", qop="auth", \
                  nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093"
-------49fh$
"#;

pub(crate) const R5_1_AUTH_2: &str = r#"
MSRP 49fi AUTH
To-Path: msrps://alice@intra.example.com;tcp
From-Path: msrps://alice.example.com:9892/98cjs;tcp
Authorization: Digest username="Alice", \
               realm="intra.example.com", \
               nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", \
               qop=auth, nc=00000001, cnonce="0a4f113b", \
               response="6629fae49393a05397450978507c4ef1"
-------49fi$
"#;

pub(crate) const R5_1_200_1: &str = r#"
MSRP 49fi 200 OK
To-Path: msrps://alice.example.com:9892/98cjs;tcp
From-Path: msrps://alice@intra.example.com;tcp
Use-Path: msrps://intra.example.com:9000/jui787s2f;tcp
Authentication-Info: nextnonce="40f2e879449675f288476d772627370a",\
                     rspauth="7327570c586207eca2afae94fc20903d", \
                     cnonce="0a4f113b", nc=00000001, qop=auth
Expires: 900
-------49fi$
"#;

pub(crate) const R5_1_AUTH_3: &str = r#"
MSRP mnbvw AUTH
To-Path: msrps://intra.example.com:9000/jui787s2f;tcp \
         msrps://extra.example.com;tcp
From-Path: msrps://alice.example.com:9892/98cjs;tcp
-------mnbvw$
"#;

pub(crate) const R5_1_AUTH_3_FORWARDED: &str = r#"
MSRP m2nbvw AUTH
To-Path: msrps://extra.example.com;tcp
From-Path: msrps://intra.example.com:9000/jui787s2f;tcp \
           msrps://alice.example.com:9892/98cjs;tcp
-------m2nbvw$
"#;

pub(crate) const R5_1_401_2: &str = r#"
MSRP m2nbvw 401 Unauthorized
To-Path: msrps://intra.example.com:9000/jui787s2f;tcp \
         msrps://alice.example.com:9892/98cjs;tcp
From-Path: msrps://extra.example.com;tcp
WWW-Authenticate: Digest realm="extra.example.com", qop="auth", \
                  nonce="Uumu8cAV38FGsEF31VLevIbNXj9HWO"
-------m2nbvw$
"#;

pub(crate) const R5_1_401_2_FORWARDED: &str = r#"
MSRP mnbvw 401 Unauthorized
To-Path: msrps://alice.example.com:9892/98cjs;tcp
From-Path: msrps://intra.example.com:9000/jui787s2f;tcp \
           msrps://extra.example.com;tcp
WWW-Authenticate: Digest realm="extra.example.com", qop="auth", \
                  nonce="Uumu8cAV38FGsEF31VLevIbNXj9HWO"
-------mnbvw$
"#;

pub(crate) const R5_1_AUTH_4: &str = r#"
MSRP m3nbvx AUTH
To-Path: msrps://intra.example.com:9000/jui787s2f;tcp \
         msrps://extra.example.com;tcp
From-Path: msrps://alice.example.com:9892/98cjs;tcp
Authorization: Digest username="Alice", \
               realm="extra.example.com", \
               nonce="Uumu8cAV38FGsEF31VLevIbNXj9HWO", \
               qop=auth, nc=00000001, cnonce="85a0dca8", \
               response="cb06c4a77cd90918cd7914432032e0e6"
-------m3nbvx$
"#;

pub(crate) const R5_1_AUTH_4_FORWARDED: &str = r#"
MSRP m4nbvx AUTH
To-Path: msrps://extra.example.com;tcp
From-Path: msrps://intra.example.com:9000/jui787s2f;tcp \
           msrps://alice.example.com:9892/98cjs;tcp
Authorization: Digest username="Alice", \
               realm="extra.example.com", \
               nonce="Uumu8cAV38FGsEF31VLevIbNXj9HWO", \
               qop=auth, nc=00000001, cnonce="85a0dca8", \
               response="cb06c4a77cd90918cd7914432032e0e6"
-------m4nbvx$
"#;

pub(crate) const R5_1_200_2: &str = r#"
MSRP m4nbvx 200 OK
To-Path: msrps://intra.example.com:9000/jui787s2f;tcp \
         msrps://alice.example.com:9892/98cjs;tcp
From-Path: msrps://extra.example.com;tcp
Use-Path: msrps://intra.example.com:9000/jui787s2f;tcp \
          msrps://extra.example.com:9000/mywdEe1233;tcp
Authentication-Info: nextnonce="bz8V080GEA2sLyEDpITF2AZCq7gIkc", \
                     rspauth="72f109ed2755d7ed0d0a213ec653b3f2", \
                     cnonce="85a0dca8", nc=00000001, qop=auth
Expires: 1800
-------m4nbvx$
"#;

/// As printed: the Use-Path repeats the extra.example.com URI (one would expect the
/// intra.example.com one first, as in [`R5_1_200_2`]); kept as the RFC has it.
pub(crate) const R5_1_200_2_FORWARDED: &str = r#"
MSRP m3nbvx 200 OK
To-Path: msrps://alice.example.com:9892/98cjs;tcp
From-Path: msrps://intra.example.com:9000/jui787s2f;tcp \
           msrps://extra.example.com;tcp
Use-Path: msrps://extra.example.com:9000/mywdEe1233;tcp \
          msrps://extra.example.com:9000/mywdEe1233;tcp
Authentication-Info: nextnonce="bz8V080GEA2sLyEDpITF2AZCq7gIkc", \
                     rspauth="72f109ed2755d7ed0d0a213ec653b3f2", \
                     cnonce="85a0dca8", nc=00000001, qop=auth
Expires: 1800
-------m3nbvx$
"#;

macro_rules! v {
    ($name:ident, $section:literal) => {
        Vector {
            name: stringify!($name),
            source: $section,
            text: $name,
        }
    };
}

/// Every complete message above (the section 5.1 figures as printed are not complete: they
/// lack To-Path and From-Path).
pub(crate) const ALL: &[Vector] = &[
    v!(S4_SEND, "RFC 4975 section 4, Figure 2"),
    v!(S4_200, "RFC 4975 section 4, Figure 2"),
    v!(S5_1_CHUNK1, "RFC 4975 section 5.1, Figure 3 (paths added)"),
    v!(S5_1_CHUNK2, "RFC 4975 section 5.1, Figure 3 (paths added)"),
    v!(S11_1_SEND_ALICE, "RFC 4975 section 11.1, step 4"),
    v!(S11_1_200_BOB, "RFC 4975 section 11.1, step 5"),
    v!(S11_1_SEND_BOB, "RFC 4975 section 11.1, step 6"),
    v!(S11_1_200_ALICE, "RFC 4975 section 11.1, step 7"),
    v!(S11_2_XHTML, "RFC 4975 section 11.2, Figure 13"),
    v!(S11_4_CHUNK1, "RFC 4975 section 11.4, Figure 14"),
    v!(S11_4_CHUNK2, "RFC 4975 section 11.4, Figure 15"),
    v!(S11_5_SYSTEM, "RFC 4975 section 11.5"),
    v!(S11_6_SEND, "RFC 4975 section 11.6, Figure 16"),
    v!(S11_6_REPORT, "RFC 4975 section 11.6, Figure 17"),
    v!(R3_SEND_ALICE, "RFC 4976 section 3"),
    v!(R3_200_A, "RFC 4976 section 3"),
    v!(R3_SEND_A, "RFC 4976 section 3"),
    v!(R3_200_B, "RFC 4976 section 3"),
    v!(R3_SEND_B, "RFC 4976 section 3"),
    v!(R3_200_BOB, "RFC 4976 section 3 (end-line added)"),
    v!(R3_REPORT_BOB, "RFC 4976 section 3"),
    v!(R3_REPORT_B, "RFC 4976 section 3"),
    v!(R3_REPORT_A, "RFC 4976 section 3"),
    v!(R5_1_AUTH_1, "RFC 4976 section 5.1"),
    v!(R5_1_401_1, "RFC 4976 section 5.1"),
    v!(R5_1_AUTH_2, "RFC 4976 section 5.1 (fold mark added)"),
    v!(R5_1_200_1, "RFC 4976 section 5.1"),
    v!(R5_1_AUTH_3, "RFC 4976 section 5.1"),
    v!(R5_1_AUTH_3_FORWARDED, "RFC 4976 section 5.1"),
    v!(R5_1_401_2, "RFC 4976 section 5.1"),
    v!(R5_1_401_2_FORWARDED, "RFC 4976 section 5.1"),
    v!(R5_1_AUTH_4, "RFC 4976 section 5.1 (fold mark added)"),
    v!(
        R5_1_AUTH_4_FORWARDED,
        "RFC 4976 section 5.1 (fold mark added)"
    ),
    v!(R5_1_200_2, "RFC 4976 section 5.1"),
    v!(R5_1_200_2_FORWARDED, "RFC 4976 section 5.1"),
];
