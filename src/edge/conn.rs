//! Accepted connections as the server reads and writes them: who is on
//! the other end ([`ConnInfo`]), how many calls the connection carries
//! ([`Activity`]), and an idle timeout that closes a connection with no
//! call in flight, whatever keeps its bytes flowing (HTTP/2 pings, a
//! preface never finished).
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
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::task::AtomicWaker;
use rustls_pki_types::CertificateDer;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};
use tonic::transport::server::Connected;

/// A client's certificate chain, leaf first.
pub type PeerCerts = Arc<Vec<CertificateDer<'static>>>;

/// What the server knows of a connection's peer; every call on it finds
/// this in its request extensions.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// The peer's address.
    pub peer: Option<SocketAddr>,
    /// The client's certificate chain, leaf first (TLS with a client
    /// certificate only).
    pub certs: Option<PeerCerts>,
    /// The connection's calls in flight.
    pub activity: Activity,
    /// The identity the client's leaf certificate names, parsed once for
    /// all the connection's calls (by the gate).
    pub identity: Arc<std::sync::OnceLock<Option<String>>>,
}

/// Counts a connection's calls in flight, so the connection can tell when
/// it has been idle too long.
#[derive(Debug, Clone, Default)]
pub struct Activity(Arc<ActivityState>);

#[derive(Debug)]
struct ActivityState {
    calls: AtomicUsize,
    /// When the last call ended (or the connection opened).
    idle_since: Mutex<Instant>,
    /// The connection's reader, woken when its last call ends.
    reader: AtomicWaker,
}

impl Default for ActivityState {
    fn default() -> Self {
        ActivityState { calls: AtomicUsize::new(0), idle_since: Mutex::new(Instant::now()), reader: AtomicWaker::new() }
    }
}

impl Activity {
    /// Counts one call until the returned guard is dropped.
    pub fn begin(&self) -> CallOnConn {
        self.0.calls.fetch_add(1, Ordering::AcqRel);
        CallOnConn(self.clone())
    }

    /// When the connection became idle, or `None` while a call is in flight.
    fn idle_since(&self) -> Option<Instant> {
        let since = *self.0.idle_since.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        (self.0.calls.load(Ordering::Acquire) == 0).then_some(since)
    }
}

/// One call in flight on a connection (see [`Activity::begin`]).
#[derive(Debug)]
pub struct CallOnConn(Activity);

impl Drop for CallOnConn {
    fn drop(&mut self) {
        let state = &(self.0).0;
        let mut since = state.idle_since.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if state.calls.fetch_sub(1, Ordering::AcqRel) == 1 {
            *since = Instant::now();
            drop(since);
            state.reader.wake();
        }
    }
}

/// An accepted connection: coalesces small frames (see the module
/// documentation), carries its [`ConnInfo`], closes itself after
/// `idle_timeout` without a call in flight, and holds `guard` (its share
/// of the listener's connection limits) until it is dropped.
pub struct Conn<T> {
    io: T,
    info: ConnInfo,
    idle_timeout: Duration,
    idle_timer: Pin<Box<Sleep>>,
    _guard: Box<dyn Send + Sync>,
}

impl<T> Conn<T> {
    /// Wraps `io`, accepted from `info.peer`.
    pub fn new(io: T, info: ConnInfo, idle_timeout: Duration, guard: Box<dyn Send + Sync>) -> Self {
        let deadline = Instant::now() + idle_timeout;
        Conn { io, info, idle_timeout, idle_timer: Box::pin(tokio::time::sleep_until(deadline)), _guard: guard }
    }

    /// Whether the connection has had no call for its idle timeout; arms
    /// the timer (and the wake-up when the last call ends) otherwise.
    fn idle_expired(&mut self, cx: &mut Context<'_>) -> bool {
        self.info.activity.0.reader.register(cx.waker());
        let Some(since) = self.info.activity.idle_since() else {
            return false;
        };
        let deadline = since + self.idle_timeout;
        if self.idle_timer.deadline() != deadline {
            self.idle_timer.as_mut().reset(deadline);
        }
        self.idle_timer.as_mut().poll(cx).is_ready()
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Conn<T> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Pending if this.idle_expired(cx) => {
                tracing::debug!(peer = ?this.info.peer, timeout = ?this.idle_timeout, "closing an idle connection");
                crate::app::metrics::record_connection_dropped("idle");
                Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "connection idle")))
            }
            other => other,
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Conn<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        false
    }
}

impl<T> Connected for Conn<T> {
    type ConnectInfo = ConnInfo;

    fn connect_info(&self) -> ConnInfo {
        self.info.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    fn conn<T>(io: T, idle: Duration) -> (Conn<T>, Activity) {
        let activity = Activity::default();
        let info = ConnInfo { peer: None, certs: None, activity: activity.clone(), identity: Arc::default() };
        (Conn::new(io, info, idle, Box::new(())), activity)
    }

    #[tokio::test]
    async fn bytes_pass_through_both_ways_and_writes_are_not_vectored() {
        let (near, far) = tokio::io::duplex(64);
        let ((mut near, _), (mut far, _)) = (conn(near, Duration::from_secs(60)), conn(far, Duration::from_secs(60)));
        assert!(!near.is_write_vectored());
        near.write_all(b"frame").await.unwrap();
        near.flush().await.unwrap();
        let mut got = [0u8; 5];
        far.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"frame");
        far.shutdown().await.unwrap();
        assert_eq!(near.read(&mut got).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn a_connection_without_calls_closes_after_its_idle_timeout_and_a_call_keeps_it_open() {
        let idle = Duration::from_millis(200);
        let (near, _far) = tokio::io::duplex(64);
        let (mut near, activity) = conn(near, idle);
        let call = activity.begin();
        let mut got = [0u8; 1];
        // A call in flight: waiting for bytes longer than the idle timeout does not close it.
        assert!(tokio::time::timeout(idle * 3, near.read(&mut got)).await.is_err());
        let ended = Instant::now();
        drop(call);
        let err = near.read(&mut got).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(ended.elapsed() >= idle, "closed one idle timeout after the last call, not before");
    }
}
