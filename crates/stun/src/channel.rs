//! ChannelData (RFC 8656 section 12.4) and framing on stream transports (RFC 8489 6.2.2, RFC 8656 12.5).

use crate::message::check_header;
use crate::{pad4, StunError};

/// Length of the ChannelData header: channel number and length, 2 bytes each.
pub const CHANNEL_DATA_HEADER_LEN: usize = 4;

/// Whether `first` can start a ChannelData message (channels 0x4000..=0x7FFF, see [`crate::CHANNELS`]).
fn is_channel_byte(first: u8) -> bool {
    (0x40..=0x7F).contains(&first)
}

/// Parses a ChannelData message: returns the channel number (in [`crate::CHANNELS`]) and the application data, borrowed
/// from `bytes`.
///
/// `bytes` holds the header, the data, and optionally padding up to a multiple of 4 (padding is optional over UDP
/// and present over TCP and TLS). Anything beyond the padding is [`StunError::ChannelDataTrailingBytes`].
pub fn parse_channel_data(bytes: &[u8]) -> Result<(u16, &[u8]), StunError> {
    let [c0, c1, l0, l1, rest @ ..] = bytes else {
        return Err(StunError::Truncated { needed: CHANNEL_DATA_HEADER_LEN, available: bytes.len() });
    };
    let channel = u16::from_be_bytes([*c0, *c1]);
    if !is_channel_byte(*c0) {
        return Err(StunError::BadChannelNumber(channel));
    }
    let len = usize::from(u16::from_be_bytes([*l0, *l1]));
    let Some(data) = rest.get(..len) else {
        return Err(StunError::Truncated { needed: CHANNEL_DATA_HEADER_LEN + len, available: bytes.len() });
    };
    let extra = rest.len() - len;
    if extra > pad4(len) - len {
        return Err(StunError::ChannelDataTrailingBytes { extra });
    }
    Ok((channel, data))
}

/// Clears `buf` and writes a ChannelData message for `channel` (in [`crate::CHANNELS`]) carrying `data`, padded with zeros
/// to a multiple of 4 when `pad` (required on TCP and TLS, optional on UDP).
///
/// Fails, leaving `buf` empty, with [`StunError::BadChannelNumber`] for a channel outside the range, or
/// [`StunError::TooLongToEncode`] when `data` is longer than 65535 bytes.
pub fn write_channel_data(buf: &mut Vec<u8>, channel: u16, data: &[u8], pad: bool) -> Result<(), StunError> {
    buf.clear();
    if !crate::CHANNELS.contains(&channel) {
        return Err(StunError::BadChannelNumber(channel));
    }
    let Ok(len) = u16::try_from(data.len()) else {
        return Err(StunError::TooLongToEncode);
    };
    buf.reserve(CHANNEL_DATA_HEADER_LEN + pad4(data.len()));
    buf.extend_from_slice(&channel.to_be_bytes());
    buf.extend_from_slice(&len.to_be_bytes());
    buf.extend_from_slice(data);
    if pad {
        buf.resize(pad4(buf.len()), 0);
    }
    Ok(())
}

/// Framing on stream transports (TCP, TLS): how many bytes the next STUN message or ChannelData message occupies,
/// given the bytes received so far (`prefix`). `Ok(None)` means more bytes are needed to tell.
///
/// A STUN message occupies 20 bytes plus its length field (RFC 8489 6.2.2); this needs its first 8 bytes, so
/// that the magic cookie can be checked. A ChannelData message occupies 4 bytes plus its length rounded up to a
/// multiple of 4 (RFC 8656 12.5: padding is mandatory on streams); this needs its 4-byte header. Anything else
/// (including a STUN header with a wrong cookie or an unaligned length) is an error: the stream cannot be framed
/// and should be closed.
pub fn stream_frame_len(prefix: &[u8]) -> Result<Option<usize>, StunError> {
    let Some(&first) = prefix.first() else { return Ok(None) };
    if first & 0xC0 == 0 {
        if prefix.len() < 8 {
            // Reject an unaligned length as soon as it is visible.
            if let [_, _, l0, l1, ..] = prefix {
                let len = u16::from_be_bytes([*l0, *l1]);
                if len % 4 != 0 {
                    return Err(StunError::UnalignedLength(len));
                }
            }
            return Ok(None);
        }
        return check_header(prefix).map(Some);
    }
    if is_channel_byte(first) {
        let [_, _, l0, l1, ..] = prefix else { return Ok(None) };
        return Ok(Some(CHANNEL_DATA_HEADER_LEN + pad4(usize::from(u16::from_be_bytes([*l0, *l1])))));
    }
    Err(StunError::UnknownFraming(first))
}
