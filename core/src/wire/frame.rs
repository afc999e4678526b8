//! The frame codec: a 4-byte big-endian length, then that many bytes of [postcard] encoding.
//! A frame longer than the reader's limit is refused before any of its body is read, so a peer
//! cannot make a node allocate unbounded memory.

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::FRAME_BYTES_MAX;
use crate::error::FrameError;

/// Encodes a message as one frame: 4-byte big-endian length, then postcard bytes.
///
/// # Errors
///
/// [`FrameError::TooLarge`] when the encoding exceeds [`FRAME_BYTES_MAX`];
/// [`FrameError::Malformed`] if the value cannot be encoded.
pub fn encode_frame<T: Serialize>(message: &T) -> Result<Vec<u8>, FrameError> {
    let mut buffer =
        postcard::to_extend(message, vec![0u8; 4]).map_err(|e| FrameError::Malformed { reason: e.to_string() })?;
    let body_bytes = buffer.len() - 4;
    if body_bytes > FRAME_BYTES_MAX {
        return Err(FrameError::TooLarge { bytes: body_bytes, max: FRAME_BYTES_MAX });
    }
    buffer[..4].copy_from_slice(&(body_bytes as u32).to_be_bytes());
    Ok(buffer)
}

/// The size of `message`'s encoding in bytes, as a frame body would hold it, computed without
/// encoding it into a buffer.
pub fn encoded_bytes<T: Serialize + ?Sized>(message: &T) -> usize {
    // Counting bytes cannot fail; a type whose serialization fails would fail to encode as well,
    // and it counts as too large for any limit.
    postcard::serialize_with_flavor(message, postcard::ser_flavors::Size::default()).unwrap_or(usize::MAX)
}

/// Decodes a frame body (without its length prefix).
///
/// # Errors
///
/// [`FrameError::Malformed`] when the bytes are not a valid encoding of `T`.
pub fn decode_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, FrameError> {
    postcard::from_bytes(body).map_err(|e| FrameError::Malformed { reason: e.to_string() })
}

/// Writes one frame and finishes the sending side of the stream.
///
/// # Errors
///
/// [`FrameError::Io`] when the stream fails.
pub async fn write_frame(send: &mut quinn::SendStream, frame: &[u8]) -> Result<(), FrameError> {
    send.write_all(frame).await.map_err(|e| FrameError::Io { reason: e.to_string() })?;
    // Finishing can only fail if the stream was already finished or reset, which would have
    // failed the write above.
    let _ = send.finish();
    Ok(())
}

/// Reads one frame body, refusing lengths above `max_bytes` before reading the body.
///
/// # Errors
///
/// [`FrameError::TooLarge`] for an oversized length prefix, [`FrameError::Io`] when the stream
/// ends early or fails.
pub async fn read_frame(recv: &mut quinn::RecvStream, max_bytes: usize) -> Result<Vec<u8>, FrameError> {
    let body_bytes = read_prefix(recv, max_bytes).await?;
    read_body(recv, body_bytes).await
}

/// Reads a frame's length prefix, refusing lengths above `max_bytes`.
///
/// # Errors
///
/// As [`read_frame`].
pub async fn read_prefix(recv: &mut quinn::RecvStream, max_bytes: usize) -> Result<usize, FrameError> {
    let mut prefix = [0u8; 4];
    recv.read_exact(&mut prefix).await.map_err(|e| FrameError::Io { reason: e.to_string() })?;
    let body_bytes = u32::from_be_bytes(prefix) as usize;
    if body_bytes > max_bytes {
        return Err(FrameError::TooLarge { bytes: body_bytes, max: max_bytes });
    }
    Ok(body_bytes)
}

/// Reads a frame body of `body_bytes` as it arrives: memory grows with the bytes received, not
/// with the length announced, so a sender that announces a large frame and stalls holds little.
///
/// # Errors
///
/// [`FrameError::Io`] when the stream ends early or fails.
pub async fn read_body(recv: &mut quinn::RecvStream, body_bytes: usize) -> Result<Vec<u8>, FrameError> {
    const FIRST_CHUNK_BYTES: usize = 64 * 1024;
    let mut body = Vec::with_capacity(body_bytes.min(FIRST_CHUNK_BYTES));
    while body.len() < body_bytes {
        match recv.read_chunk(body_bytes - body.len(), true).await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk.bytes),
            Ok(None) => {
                return Err(FrameError::Io {
                    reason: format!("the stream ended after {} of {body_bytes} body bytes", body.len()),
                })
            }
            Err(error) => return Err(FrameError::Io { reason: error.to_string() }),
        }
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{Command, Request, WriteRequest};

    #[test]
    fn frame_round_trip_keeps_the_message() {
        let request = Request::Write(WriteRequest {
            session: 7,
            seq: 3,
            acked_below: 2,
            command: Command::KvPut { key: b"k".to_vec(), value: vec![1, 2, 3] },
            secret: crate::wire::SessionSecret([9; 16]),
        });
        let frame = encode_frame(&request).unwrap();
        let length = u32::from_be_bytes(frame[..4].try_into().unwrap()) as usize;
        assert_eq!(length, frame.len() - 4);
        let decoded: Request = decode_body(&frame[4..]).unwrap();
        match decoded {
            Request::Write(write) => {
                assert_eq!((write.session, write.seq, write.acked_below), (7, 3, 2));
                assert_eq!(write.command, Command::KvPut { key: b"k".to_vec(), value: vec![1, 2, 3] });
            }
            other => panic!("decoded {other:?}"),
        }
    }

    #[test]
    fn encoded_bytes_is_the_frame_body_length() {
        let command = Command::KvPut { key: b"key".to_vec(), value: vec![7; 300] };
        let frame = encode_frame(&command).unwrap();
        assert_eq!(encoded_bytes(&command), frame.len() - 4);
    }

    #[test]
    fn garbage_is_a_typed_error() {
        let error = decode_body::<Request>(&[0xff, 0xff, 0xff, 0xff, 0x01]).unwrap_err();
        assert!(matches!(error, FrameError::Malformed { .. }), "{error:?}");
    }
}
