//! Feeds arbitrary bytes to the decoder of cluster envelopes (`codec::decode`), as a node does with every message
//! Redis pushes to it: JSON envelopes of any version and binary ones. Any panic is a bug. Beyond not crashing: what
//! decodes, encoded again in the binary form and decoded, is the same messages from the same node.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard_cluster::codec;

fuzz_target!(|data: &[u8]| {
    let Ok(decoded) = codec::decode(data) else { return };
    let again = codec::decode(&codec::encode_binary(&decoded.from, &decoded.messages))
        .expect("an envelope this node wrote decodes");
    assert_eq!(again.from, decoded.from);
    assert_eq!(again.messages, decoded.messages);
});
