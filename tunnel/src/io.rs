//! Thin async helpers: one frame in, one frame out, over tokio's IO traits.
//!
//! These read exactly one frame and no byte more, so that after a header the rest of a
//! stream can be spliced untouched.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::frame::{self, FrameError, LEN_PREFIX};

/// Why a frame could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The bytes broke the framing rules.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// The transport failed (reset, connection lost).
    #[error("stream failed: {0}")]
    Io(#[from] std::io::Error),
}

/// Reads one frame body.
///
/// Returns `Ok(None)` if the stream ended cleanly before the frame began, and
/// [`FrameError::Truncated`] if it ended inside one.
pub async fn read_frame<R: AsyncRead + Unpin + ?Sized>(
    reader: &mut R,
    max: u32,
) -> Result<Option<Vec<u8>>, ReadError> {
    let mut prefix = [0u8; LEN_PREFIX];
    let mut have = 0;
    while have < LEN_PREFIX {
        let n = reader.read(&mut prefix[have..]).await?;
        if n == 0 {
            if have == 0 {
                return Ok(None);
            }
            return Err(FrameError::Truncated {
                have,
                need: LEN_PREFIX,
            }
            .into());
        }
        have += n;
    }
    let len = frame::check_len(prefix, max)? as usize;
    let mut body = vec![0u8; len];
    let mut got = 0;
    while got < len {
        let n = reader.read(&mut body[got..]).await?;
        if n == 0 {
            return Err(FrameError::Truncated {
                have: LEN_PREFIX + got,
                need: LEN_PREFIX + len,
            }
            .into());
        }
        got += n;
    }
    Ok(Some(body))
}

/// Writes one frame holding `body`.
pub async fn write_frame<W: AsyncWrite + Unpin + ?Sized>(
    writer: &mut W,
    body: &[u8],
    max: u32,
) -> std::io::Result<()> {
    let mut buf = Vec::new();
    frame::encode_frame(body, max, &mut buf)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    writer.write_all(&buf).await
}

/// Reads a stream's first frame through a [`HeaderReader`](crate::proto::HeaderReader):
/// never past the header (the rest of the stream stays unread, for a splice), under the
/// header cap, and within `limit` of now.
pub async fn read_header<H, R>(
    reader: &mut R,
    limit: std::time::Duration,
) -> Result<(H, crate::Version), crate::proto::Refusal>
where
    H: crate::proto::StreamHeader,
    R: AsyncRead + Unpin + ?Sized,
{
    use crate::proto::{HeaderReader, Refusal};
    let mut header = HeaderReader::<H>::new(std::time::Instant::now(), limit);
    let mut buf = [0u8; crate::frame::LEN_PREFIX + crate::MAX_HEADER_LEN as usize];
    loop {
        let want = header.want().min(buf.len());
        let deadline = tokio::time::Instant::from_std(header.deadline());
        match tokio::time::timeout_at(deadline, reader.read(&mut buf[..want])).await {
            Err(_) => {
                header.handle_timeout(std::time::Instant::now())?;
            }
            Ok(Ok(0)) => return Err(header.finish()),
            Ok(Ok(n)) => {
                if let Some(found) = header.receive(&buf[..n])? {
                    return Ok(found);
                }
            }
            Ok(Err(err)) => return Err(Refusal::Transport(err.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reads_one_frame_and_leaves_the_rest() {
        let bytes = [0u8, 0, 0, 2, 7, 8, 0xaa, 0xbb];
        let mut reader = &bytes[..];
        assert_eq!(
            read_frame(&mut reader, 100).await.unwrap(),
            Some(vec![7, 8])
        );
        assert_eq!(reader, &[0xaa, 0xbb]);
    }

    #[tokio::test]
    async fn clean_end_is_none_and_cut_frame_is_truncated() {
        let mut empty: &[u8] = &[];
        assert!(read_frame(&mut empty, 100).await.unwrap().is_none());
        let mut cut: &[u8] = &[0, 0, 0, 5, 1];
        let err = read_frame(&mut cut, 100).await.unwrap_err();
        assert!(matches!(
            err,
            ReadError::Frame(FrameError::Truncated { have: 5, need: 9 })
        ));
        let mut cut_prefix: &[u8] = &[0, 0];
        let err = read_frame(&mut cut_prefix, 100).await.unwrap_err();
        assert!(matches!(
            err,
            ReadError::Frame(FrameError::Truncated { have: 2, need: 4 })
        ));
    }

    #[tokio::test]
    async fn oversize_is_refused_without_reading_the_body() {
        let mut r: &[u8] = &[0, 1, 0, 0, 1, 2, 3];
        let err = read_frame(&mut r, 1000).await.unwrap_err();
        assert!(matches!(
            err,
            ReadError::Frame(FrameError::TooLarge {
                len: 65536,
                max: 1000
            })
        ));
        assert_eq!(r, &[1, 2, 3], "body left unread");
    }

    #[tokio::test]
    async fn write_then_read_round_trips() {
        let mut buf = Vec::new();
        write_frame(&mut buf, b"hello", 100).await.unwrap();
        let mut r = &buf[..];
        assert_eq!(read_frame(&mut r, 100).await.unwrap().unwrap(), b"hello");
    }
}
