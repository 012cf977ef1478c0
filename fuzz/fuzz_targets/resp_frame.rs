//! Feeds arbitrary bytes to the RESP3 parser of the cluster's Redis connection (`resp::parse`), as a node does with
//! everything Redis sends it. Any panic is a bug. Beyond not crashing: a frame that parses took bytes from the
//! input and no more, every shorter cut of those bytes is "incomplete" (the parser is fed in pieces off a socket),
//! and a message's channel and payload lie inside the frame.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard_cluster::resp::{self, Frame};

fuzz_target!(|data: &[u8]| {
    let Ok(Some((frame, used))) = resp::parse(data) else { return };
    assert!(used > 0 && used <= data.len());
    if let Frame::Message { channel, payload } = &frame {
        assert!(channel.end <= payload.start && payload.end <= used);
    }
    // Checking every cut is quadratic: short frames only.
    if used <= 1024 {
        for cut in 0..used {
            assert_eq!(resp::parse(&data[..cut]), Ok(None), "cut at {cut} of {used}");
        }
    }
});
