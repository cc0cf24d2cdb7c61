//! A TCP relay in front of a real peer (moto's KMS) that a test can cut:
//! while it is down, every connection it has open is closed and every new
//! one is accepted and closed at once, so the peer is unreachable to the
//! broker exactly as a KMS outage makes it, with nothing else changed.

use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A relay to one address.
pub struct Relay {
    /// `http://127.0.0.1:PORT`, to point an SDK at.
    pub url: String,
    down: Arc<watch::Sender<bool>>,
    task: tokio::task::JoinHandle<()>,
}

impl Relay {
    /// Relays `127.0.0.1:0` to the host and port of `target_url`.
    pub async fn start(target_url: &str) -> Relay {
        let target = target_url.trim_start_matches("http://").trim_end_matches('/').to_owned();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let down = Arc::new(watch::channel(false).0);
        let state = down.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else { return };
                if *state.borrow() {
                    drop(inbound);
                    continue;
                }
                let target = target.clone();
                let mut cut = state.subscribe();
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(&target).await else { return };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cut.wait_for(|down| *down) => {}
                    }
                });
            }
        });
        Relay { url, down, task }
    }

    /// Cuts the peer off (`true`) or restores it.
    pub fn set_down(&self, down: bool) {
        self.down.send_replace(down);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}
