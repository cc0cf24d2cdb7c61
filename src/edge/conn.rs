//! Accepted connections as the HTTP/2 server writes to them.
//!
//! HTTP/2 (the `h2` crate) copies a DATA frame's payload into its write
//! buffer when it is small and queues it as a separate buffer otherwise; a
//! queued payload is written out (with a flush) before the next frame may
//! be buffered. Over a connection that reports vectored writes, "small" is
//! 256 bytes, so every unary answer of this service (an `Encryption` block
//! with a wrapped key is ~330 bytes) costs its own `writev`, with its
//! trailers in another. Over one that does not, it is 1 KiB: the answers
//! finished in one turn of the connection go out in one write, as the health
//! service's tiny answers do. Large frames (object chunks) still go out
//! without a copy, in two writes (frame header, then payload) instead of one
//! `writev`; clients that stream objects raise their max frame size so
//! that is a few writes per MiB.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tonic::transport::server::Connected;

/// A connection that tells HTTP/2 to coalesce small frames (see the module
/// documentation); reads and writes pass straight through.
#[derive(Debug)]
pub struct Coalescing<T>(pub T);

impl<T: AsyncRead + Unpin> AsyncRead for Coalescing<T> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Coalescing<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        false
    }
}

impl<T: Connected> Connected for Coalescing<T> {
    type ConnectInfo = T::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.0.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    #[tokio::test]
    async fn bytes_pass_through_both_ways_and_writes_are_not_vectored() {
        let (near, far) = tokio::io::duplex(64);
        let (mut near, mut far) = (Coalescing(near), Coalescing(far));
        assert!(!near.is_write_vectored());
        near.write_all(b"frame").await.unwrap();
        near.flush().await.unwrap();
        let mut got = [0u8; 5];
        far.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"frame");
        far.shutdown().await.unwrap();
        assert_eq!(near.read(&mut got).await.unwrap(), 0);
    }
}
