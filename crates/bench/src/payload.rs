//! Realistic signaling payloads, rendered once and stamped per message.
//!
//! Every relayed message carries a stamp: `xsb-` followed by 32 hex digits (stream id, sequence number, send time in
//! microseconds since the run's start). Templates are rendered once per stream with a placeholder stamp; sending a
//! message is a copy of the template plus 32 digits, and receiving one is a substring search plus 32 digits. Hex
//! digits survive every server's JSON re-serialisation (PeerJS and matchbox parse and re-encode what they relay).

use std::fmt::Write as _;

use memchr::memmem;

/// Marker that starts a stamp.
pub const STAMP_MARK: &[u8] = b"xsb-";
/// Length of a stamp including the marker.
pub const STAMP_LEN: usize = 4 + 32;

/// What a stamp says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// Which sender/receiver stream (pair and direction).
    pub stream: u32,
    /// Sequence number within the stream, from 0.
    pub seq: u64,
    /// Send time, microseconds since the run's epoch.
    pub sent_us: u64,
}

impl Stamp {
    const SEQ_DIGITS: usize = 12;
    const TIME_DIGITS: usize = 12;

    /// Writes the stamp into `out` (exactly [`STAMP_LEN`] bytes).
    pub fn write(&self, out: &mut [u8]) {
        out[..4].copy_from_slice(STAMP_MARK);
        write_hex(&mut out[4..12], u64::from(self.stream));
        write_hex(&mut out[12..12 + Self::SEQ_DIGITS], self.seq);
        write_hex(&mut out[12 + Self::SEQ_DIGITS..12 + Self::SEQ_DIGITS + Self::TIME_DIGITS], self.sent_us);
    }

    /// Finds and decodes the first stamp in a message, if it has one.
    pub fn find(message: &[u8], finder: &memmem::Finder<'_>) -> Option<Stamp> {
        let at = finder.find(message)?;
        let digits = message.get(at + 4..at + STAMP_LEN)?;
        Some(Stamp {
            stream: u32::try_from(read_hex(&digits[..8])?).ok()?,
            seq: read_hex(&digits[8..8 + Self::SEQ_DIGITS])?,
            sent_us: read_hex(&digits[8 + Self::SEQ_DIGITS..])?,
        })
    }

    /// A finder for [`Stamp::find`], built once.
    pub fn finder() -> memmem::Finder<'static> {
        memmem::Finder::new(STAMP_MARK)
    }
}

/// Writes `value` as fixed-width lowercase hex (the high digits are dropped if it does not fit).
fn write_hex(out: &mut [u8], mut value: u64) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for byte in out.iter_mut().rev() {
        *byte = DIGITS[(value & 0xF) as usize];
        value >>= 4;
    }
}

fn read_hex(digits: &[u8]) -> Option<u64> {
    digits.iter().try_fold(0u64, |acc, &d| {
        let v = match d {
            b'0'..=b'9' => d - b'0',
            b'a'..=b'f' => d - b'a' + 10,
            _ => return None,
        };
        Some(acc << 4 | u64::from(v))
    })
}

/// A pre-rendered message with a place for its stamp.
#[derive(Debug, Clone)]
pub struct Template {
    bytes: Vec<u8>,
    stamp_at: usize,
}

impl Template {
    /// Wraps a rendered message that holds exactly one placeholder stamp.
    pub fn new(rendered: String) -> anyhow::Result<Self> {
        let bytes = rendered.into_bytes();
        let placeholder = placeholder();
        let stamp_at = memmem::find(&bytes, placeholder.as_bytes())
            .ok_or_else(|| anyhow::anyhow!("the template has no stamp placeholder"))?;
        anyhow::ensure!(
            memmem::find(&bytes[stamp_at + 1..], STAMP_MARK).is_none(),
            "the template has more than one stamp"
        );
        Ok(Self { bytes, stamp_at })
    }

    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Appends the template to `out` with `stamp` filled in.
    pub fn render_into(&self, out: &mut Vec<u8>, stamp: Stamp) {
        let at = out.len() + self.stamp_at;
        out.extend_from_slice(&self.bytes);
        stamp.write(&mut out[at..at + STAMP_LEN]);
    }

    #[cfg(test)]
    pub fn rendered(&self, stamp: Stamp) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.len());
        self.render_into(&mut out, stamp);
        out
    }
}

/// The stamp placeholder put into payloads before rendering.
pub fn placeholder() -> String {
    let mut s = String::from_utf8_lossy(STAMP_MARK).into_owned();
    s.push_str(&"0".repeat(32));
    s
}

/// Whether an SDP is an offer or an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SdpKind {
    Offer,
    Answer,
}

impl SdpKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SdpKind::Offer => "offer",
            SdpKind::Answer => "answer",
        }
    }
}

/// An SDP of about `target` bytes shaped like a browser's audio+video session description, with the stamp
/// placeholder in an attribute near the top (where a receiver finds it quickly).
pub fn sdp_text(kind: SdpKind, target: usize) -> String {
    let setup = if kind == SdpKind::Offer { "actpass" } else { "active" };
    let mut s = String::with_capacity(target + 256);
    let _ = write!(
        s,
        "v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=x-bench:{}\r\n\
         a=group:BUNDLE 0 1\r\na=extmap-allow-mixed\r\na=msid-semantic: WMS 4d8b8b2c-1e9a-4f0e-9a7e-1c5f0b2a9d11\r\n",
        placeholder()
    );
    let media = [
        ("audio", "0", "111 63 9 0 8 13 110 126"),
        ("video", "1", "96 97 102 103 104 105 106 107 108 109 127 125 39 40 45 46 98 99 100 101 112 113 116 117 118"),
    ];
    for (kind_name, mid, payload_types) in media {
        let _ = write!(
            s,
            "m={kind_name} 9 UDP/TLS/RTP/SAVPF {payload_types}\r\nc=IN IP4 0.0.0.0\r\na=rtcp:9 IN IP4 0.0.0.0\r\n\
             a=ice-ufrag:EsAw\r\na=ice-pwd:P2uYro0UCOQ4zxjKXaWCBui1\r\na=ice-options:trickle\r\n\
             a=fingerprint:sha-256 D2:FA:0E:C3:22:59:5E:14:95:69:92:3D:13:B4:84:24:2C:C2:A2:C0:3E:FD:34:8E:5E:EA:6F:AF:52:CE:E6:0F\r\n\
             a=setup:{setup}\r\na=mid:{mid}\r\na=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level\r\n\
             a=extmap:2 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time\r\n\
             a=extmap:3 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01\r\n\
             a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid\r\na=sendrecv\r\n\
             a=msid:4d8b8b2c-1e9a-4f0e-9a7e-1c5f0b2a9d11 7f0c3a52-9b1e-4c7d-8e2f-{mid}a1b2c3d4e5f6\r\na=rtcp-mux\r\n"
        );
        if kind_name == "audio" {
            s.push_str(
                "a=rtpmap:111 opus/48000/2\r\na=rtcp-fb:111 transport-cc\r\na=fmtp:111 minptime=10;useinbandfec=1\r\n\
                 a=rtpmap:63 red/48000/2\r\na=fmtp:63 111/111\r\na=rtpmap:9 G722/8000\r\na=rtpmap:0 PCMU/8000\r\n\
                 a=rtpmap:8 PCMA/8000\r\na=rtpmap:13 CN/8000\r\na=rtpmap:110 telephone-event/48000\r\n\
                 a=rtpmap:126 telephone-event/8000\r\n",
            );
        } else {
            for (pt, codec) in [(96, "VP8"), (98, "VP9"), (100, "VP9"), (102, "H264"), (104, "H264"), (106, "H264")] {
                let _ = write!(
                    s,
                    "a=rtpmap:{pt} {codec}/90000\r\na=rtcp-fb:{pt} goog-remb\r\na=rtcp-fb:{pt} transport-cc\r\n\
                     a=rtcp-fb:{pt} ccm fir\r\na=rtcp-fb:{pt} nack\r\na=rtcp-fb:{pt} nack pli\r\n\
                     a=rtpmap:{} rtx/90000\r\na=fmtp:{} apt={pt}\r\n",
                    pt + 1,
                    pt + 1
                );
            }
        }
    }
    // Browsers list one ssrc line per stream attribute; pad with them up to the size asked for.
    let mut ssrc = 1_943_420_711u64;
    while s.len() + 60 <= target {
        let _ = write!(s, "a=ssrc:{ssrc} cname:Hq5sBvEl0ZrNmJ2k\r\n");
        ssrc += 7919;
    }
    s
}

/// A trickle ICE candidate of about `target` bytes as a JSON object (what `RTCIceCandidate.toJSON()` gives), with
/// the stamp placeholder in it.
pub fn candidate_json(n: u32, target: usize) -> serde_json::Value {
    let mut line = format!(
        "candidate:{} 1 udp 2122260223 192.0.2.{} {} typ host generation 0 ufrag EsAw network-id 1 network-cost 10 x-bench {}",
        1_467_250_027u32.wrapping_add(n),
        1 + n % 250,
        50_000 + n % 10_000,
        placeholder()
    );
    // The object adds ~75 bytes around the candidate line.
    while line.len() + 75 < target {
        line.push_str(" x");
    }
    serde_json::json!({"candidate": line, "sdpMid": "0", "sdpMLineIndex": 0, "usernameFragment": "EsAw"})
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn stamps_round_trip() {
        let finder = Stamp::finder();
        for stamp in [
            Stamp { stream: 0, seq: 0, sent_us: 0 },
            Stamp { stream: 199, seq: 123_456_789, sent_us: 10_000_000 },
            Stamp { stream: u32::MAX, seq: (1 << 48) - 1, sent_us: (1 << 48) - 1 },
        ] {
            let mut buf = b"{\"x\":\"".to_vec();
            buf.resize(buf.len() + STAMP_LEN, 0);
            stamp.write(&mut buf[6..]);
            buf.extend_from_slice(b"\"}");
            assert_eq!(Stamp::find(&buf, &finder), Some(stamp));
        }
    }

    #[test]
    fn broken_stamps_are_not_read() {
        let finder = Stamp::finder();
        assert_eq!(Stamp::find(b"no stamp here", &finder), None);
        assert_eq!(Stamp::find(b"xsb-0000", &finder), None, "truncated");
        let bad = format!("xsb-{}", "g".repeat(32));
        assert_eq!(Stamp::find(bad.as_bytes(), &finder), None, "not hex");
    }

    #[test]
    fn sdp_is_about_the_size_asked_and_json_escaped_in_templates() {
        let sdp = sdp_text(SdpKind::Offer, 3000);
        assert!((2900..=3100).contains(&sdp.len()), "{}", sdp.len());
        assert!(sdp.starts_with("v=0\r\n") && sdp.ends_with("\r\n"));
        assert!(sdp_text(SdpKind::Answer, 3000).contains("a=setup:active"));
        let message = serde_json::json!({"type": "offer", "to": "bob", "sdp": {"type": "offer", "sdp": sdp}});
        let template = Template::new(message.to_string()).unwrap();
        let stamp = Stamp { stream: 3, seq: 42, sent_us: 7 };
        let rendered = template.rendered(stamp);
        assert_eq!(Stamp::find(&rendered, &Stamp::finder()), Some(stamp));
        // Still valid JSON with the SDP intact apart from the stamp.
        let parsed: serde_json::Value = serde_json::from_slice(&rendered).unwrap();
        assert!(parsed["sdp"]["sdp"].as_str().unwrap().contains("a=x-bench:xsb-000000030000000000"));
    }

    #[test]
    fn candidates_are_about_the_size_asked() {
        let message = serde_json::json!({"type": "candidate", "to": "bob", "candidate": candidate_json(5, 250)});
        let text = message.to_string();
        assert!((230..=300).contains(&text.len()), "{}", text.len());
        assert!(Template::new(text).is_ok());
    }

    #[test]
    fn templates_need_exactly_one_placeholder() {
        assert!(Template::new("{}".into()).is_err());
        let two = format!("[\"{}\",\"{}\"]", placeholder(), placeholder());
        assert!(Template::new(two).is_err());
    }

    #[test]
    fn hex_is_fixed_width() {
        let mut out = [0u8; 4];
        write_hex(&mut out, 0xab);
        assert_eq!(&out, b"00ab");
        assert_eq!(read_hex(b"00ab"), Some(0xab));
    }
}
