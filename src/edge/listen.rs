//! The accept loop: connections come in within the server's limits, or
//! not at all.
//!
//! Every accepted socket must fit the connection budget (a total, sized
//! under the process's file-descriptor limit so the broker's own files
//! always have room, and a share per peer address), and then finish its
//! handshake within `handshake_timeout` while at most `max_handshakes` are
//! in progress. A socket over any limit is closed at once, counted in
//! `keybroker_connections_dropped_total`, and logged at most once a second
//! per reason. Connections then carry an idle timeout ([`Conn`]).

use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_stream::wrappers::ReceiverStream;

use crate::edge::conn::{Activity, Conn, ConnInfo, PeerCerts};

/// The connection limits of one listener.
#[derive(Debug, Clone)]
pub struct ConnLimits {
    /// Connections open at once.
    pub max_connections: usize,
    /// Connections open at once from one peer address.
    pub max_per_peer: usize,
    /// Handshakes in progress at once.
    pub max_handshakes: usize,
    /// The longest a handshake may take.
    pub handshake_timeout: Duration,
    /// The longest a connection may stay open with no call in flight.
    pub idle_timeout: Duration,
}

/// What turns an accepted TCP stream into a connection the server reads:
/// nothing (plaintext) or a TLS handshake.
pub trait Handshake: Clone + Send + Sync + 'static {
    /// The established connection.
    type Io: AsyncRead + AsyncWrite + Send + Unpin + 'static;

    /// Completes the handshake, answering the client's certificate chain
    /// when it presented one.
    fn handshake(&self, tcp: TcpStream) -> impl Future<Output = io::Result<(Self::Io, Option<PeerCerts>)>> + Send;
}

/// No handshake: plaintext HTTP/2.
#[derive(Debug, Clone, Copy)]
pub struct Plaintext;

impl Handshake for Plaintext {
    type Io = TcpStream;

    async fn handshake(&self, tcp: TcpStream) -> io::Result<(TcpStream, Option<PeerCerts>)> {
        Ok((tcp, None))
    }
}

/// Accepts connections on `listener` within `limits`, completing each
/// `handshake` concurrently, until the returned stream is dropped.
pub fn accept<H: Handshake>(
    listener: TcpListener,
    limits: ConnLimits,
    handshake: H,
) -> ReceiverStream<io::Result<Conn<H::Io>>> {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move {
        let budget = Budget::new(&limits);
        let refusals = Throttle::default();
        loop {
            // The listener closes as soon as the server stops taking connections.
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                () = tx.closed() => break,
            };
            let (stream, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // EMFILE/ENFILE among them: the budget should keep the
                    // broker under its descriptor limit, so this is rare.
                    refusals.warn("accept", || tracing::warn!(error = %e, "accept failed"));
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let (guard, handshaking) = match budget.admit(peer.ip()) {
                Ok(admitted) => admitted,
                Err(reason) => {
                    crate::app::metrics::record_connection_dropped(reason);
                    refusals.warn(reason, || tracing::warn!(%peer, reason, ?limits, "connection refused at a limit"));
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let (handshake, tx, timeout, idle) =
                (handshake.clone(), tx.clone(), limits.handshake_timeout, limits.idle_timeout);
            let refusals = refusals.clone();
            tokio::spawn(async move {
                let outcome = tokio::time::timeout(timeout, handshake.handshake(stream)).await;
                drop(handshaking);
                match outcome {
                    Ok(Ok((io, certs))) => {
                        let info = ConnInfo {
                            peer: Some(peer),
                            certs,
                            activity: Activity::default(),
                            identity: Arc::default(),
                        };
                        let _ = tx.send(Ok(Conn::new(io, info, idle, Box::new(guard)))).await;
                    }
                    Ok(Err(e)) => tracing::warn!(%peer, error = %e, "TLS handshake refused"),
                    Err(_) => {
                        crate::app::metrics::record_connection_dropped("handshake_timeout");
                        refusals.warn("handshake_timeout", || tracing::warn!(%peer, ?timeout, "handshake timed out"));
                    }
                }
            });
        }
    });
    ReceiverStream::new(rx)
}

/// The listener's connection and handshake budget.
struct Budget {
    connections: Arc<Semaphore>,
    handshakes: Arc<Semaphore>,
    peers: Arc<Mutex<HashMap<IpAddr, usize>>>,
    max_per_peer: usize,
}

impl Budget {
    fn new(limits: &ConnLimits) -> Self {
        Budget {
            connections: Arc::new(Semaphore::new(limits.max_connections)),
            handshakes: Arc::new(Semaphore::new(limits.max_handshakes)),
            peers: Arc::default(),
            max_per_peer: limits.max_per_peer,
        }
    }

    /// A place for a connection from `ip` and its handshake, or the limit
    /// that refuses it.
    fn admit(&self, ip: IpAddr) -> Result<(Open, tokio::sync::OwnedSemaphorePermit), &'static str> {
        let connection = self.connections.clone().try_acquire_owned().map_err(|_| "connection_limit")?;
        {
            let mut peers = self.peers.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let count = peers.entry(ip).or_insert(0);
            if *count >= self.max_per_peer {
                return Err("peer_limit");
            }
            *count += 1;
        }
        let open = Open { _connection: connection, ip, peers: self.peers.clone() };
        crate::app::metrics::connections_open(1.0);
        let handshaking = self.handshakes.clone().try_acquire_owned().map_err(|_| "handshakes")?;
        Ok((open, handshaking))
    }
}

/// One open connection's share of the budget, returned when it closes.
/// The per-peer map holds only peers with connections open.
struct Open {
    _connection: tokio::sync::OwnedSemaphorePermit,
    ip: IpAddr,
    peers: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl Drop for Open {
    fn drop(&mut self) {
        crate::app::metrics::connections_open(-1.0);
        let mut peers = self.peers.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(count) = peers.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                peers.remove(&self.ip);
            }
        }
    }
}

/// Logs each kind of refusal at most once a second, so a flood of them
/// cannot flood the log.
#[derive(Clone, Default)]
struct Throttle(Arc<Mutex<HashMap<&'static str, u64>>>);

impl Throttle {
    fn warn(&self, reason: &'static str, log: impl FnOnce()) {
        static EPOCH: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
        let now = EPOCH.get_or_init(std::time::Instant::now).elapsed().as_secs();
        let mut last = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let seen = last.entry(reason).or_insert(u64::MAX);
        if *seen != now {
            *seen = now;
            drop(last);
            log();
        }
    }
}

/// How many connections fit under the process's open-file limit, leaving
/// room for the broker's own files and outbound connections (audit log,
/// keyring, KMS, S3, Elastic Transcoder). Raises the soft limit to the
/// hard one first, where allowed, and logs both.
pub fn connection_budget(wanted: usize) -> usize {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        let raised = rustix::process::Rlimit { current: limit.maximum, maximum: limit.maximum };
        match setrlimit(Resource::Nofile, raised) {
            Ok(()) => limit = getrlimit(Resource::Nofile),
            Err(e) => tracing::info!(error = %e, "cannot raise the open-file limit to its hard limit"),
        }
    }
    let Some(soft) = limit.current else {
        tracing::info!(max_connections = wanted, "open-file limit: unlimited");
        return wanted;
    };
    let budget = budget_under(soft, wanted);
    tracing::info!(
        open_file_limit = soft,
        hard_limit = ?limit.maximum,
        max_connections = budget,
        "open-file limit; connections beyond max_connections are refused, keeping the rest for the broker's own files"
    );
    if budget < wanted {
        tracing::warn!(
            wanted,
            budget,
            "limits.max_connections does not fit under the open-file limit; raise LimitNOFILE (systemd) or the container's nofile ulimit"
        );
    }
    budget
}

/// The connections that fit under `soft` open files: a tenth of them (at
/// least 64) stays for the broker itself.
fn budget_under(soft: u64, wanted: usize) -> usize {
    let reserve = (soft / 10).max(64);
    let room = usize::try_from(soft.saturating_sub(reserve)).unwrap_or(usize::MAX);
    wanted.min(room).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max_connections: usize, max_per_peer: usize, max_handshakes: usize) -> ConnLimits {
        ConnLimits {
            max_connections,
            max_per_peer,
            max_handshakes,
            handshake_timeout: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(1),
        }
    }

    #[test]
    fn the_budget_keeps_a_tenth_of_the_descriptors_and_at_least_64() {
        assert_eq!(budget_under(1024, 10_000), 922);
        assert_eq!(budget_under(500, 10_000), 436);
        assert_eq!(budget_under(65_536, 10_000), 10_000);
        assert_eq!(budget_under(100_000, 100_000), 90_000);
        assert_eq!(budget_under(50, 10), 1, "never zero");
    }

    #[test]
    fn peers_get_their_share_and_closed_connections_give_it_back() {
        let budget = Budget::new(&limits(3, 2, 10));
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let first = budget.admit(a).unwrap();
        let second = budget.admit(a).unwrap();
        assert_eq!(budget.admit(a).err(), Some("peer_limit"));
        let other = budget.admit(b).unwrap();
        assert_eq!(budget.admit(b).err(), Some("connection_limit"), "the total is full");
        drop((first, other));
        assert!(budget.admit(a).is_ok());
        drop(second);
        assert!(budget.peers.lock().unwrap().is_empty(), "no entry stays for a peer with nothing open");
    }

    #[test]
    fn handshakes_in_progress_are_limited_separately() {
        let budget = Budget::new(&limits(10, 10, 1));
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let (open, handshaking) = budget.admit(ip).unwrap();
        assert_eq!(budget.admit(ip).err(), Some("handshakes"));
        drop(handshaking);
        let _next = budget.admit(ip).unwrap();
        drop(open);
    }
}
