//! ChannelData framing (RFC 8656 §12.4): a 4-byte header (channel number, length) and the
//! application data, padded to a multiple of 4 on stream transports (§12.5).

/// Lowest and highest channel numbers a client may bind.
///
/// RFC 8656 §12 narrowed the range to 0x4000..=0x4FFF, but RFC 5766 allowed 0x4000..=0x7FFE
/// and clients written to it still pick numbers up there (coturn's own `turnutils_uclient`
/// does). A relay port only ever carries STUN and ChannelData, so accepting the older range
/// costs nothing and keeps those clients working, as coturn does.
pub const MIN_CHANNEL: u16 = 0x4000;
/// The highest channel number accepted (RFC 5766's upper bound; see [`MIN_CHANNEL`]).
pub const MAX_CHANNEL: u16 = 0x7FFE;

/// Whether the first byte of a packet says ChannelData: 0x40..=0x7F (RFC 7983 gives 64..=79 to
/// TURN channels; see [`MAX_CHANNEL`] for the rest).
pub fn is_channel_data(first: u8) -> bool {
    (0x40..=0x7F).contains(&first)
}

/// Parses a ChannelData header: channel number and data length. `None` if shorter than 4 bytes
/// or the number is outside [`MIN_CHANNEL`]..=[`MAX_CHANNEL`].
pub fn parse_header(buf: &[u8]) -> Option<(u16, usize)> {
    let h = buf.get(..4)?;
    let number = u16::from_be_bytes([h[0], h[1]]);
    let len = u16::from_be_bytes([h[2], h[3]]) as usize;
    (MIN_CHANNEL..=MAX_CHANNEL)
        .contains(&number)
        .then_some((number, len))
}

/// Writes a ChannelData header into `buf[..4]`.
pub fn write_header(buf: &mut [u8], number: u16, len: u16) {
    buf[..2].copy_from_slice(&number.to_be_bytes());
    buf[2..4].copy_from_slice(&len.to_be_bytes());
}

/// Bytes of padding after `len` bytes of data on a stream transport.
pub fn stream_padding(len: usize) -> usize {
    (4 - len % 4) % 4
}

/// The size of the next complete frame at the start of a stream buffer, if it is complete:
/// a STUN message (first two bits 00) or ChannelData (01) with its padding. `Err` for bytes that
/// are neither, which ends the connection.
pub fn stream_frame_len(buf: &[u8]) -> Result<Option<usize>, FrameError> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = u16::from_be_bytes([buf[2], buf[3]]) as usize;
    let total = match first >> 6 {
        0 => {
            if !len.is_multiple_of(4) {
                return Err(FrameError::BadStunLength);
            }
            20 + len
        }
        1 => {
            if !is_channel_data(first) {
                return Err(FrameError::NotTurn);
            }
            4 + len + stream_padding(len)
        }
        _ => return Err(FrameError::NotTurn),
    };
    Ok((buf.len() >= total).then_some(total))
}

/// Stream bytes that cannot be a TURN frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The first byte is neither a STUN header (0b00) nor a channel number (0b01): the stream lost framing.
    #[error("bytes on the stream are neither STUN nor ChannelData")]
    NotTurn,
    /// A STUN header's length is not a multiple of 4, so the stream cannot be framed further.
    #[error("STUN message length is not a multiple of 4")]
    BadStunLength,
}
