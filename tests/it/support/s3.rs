//! A proxy in front of moto's S3 for the S3-mode tests.
//!
//! moto 5.2.1 answers CompleteMultipartUpload with the root element
//! `CompleteMultipartUploadResponse`, where S3 and aws-sdk-s3's parser have
//! `CompleteMultipartUploadResult` (getmoto/moto#10055, fixed by #10056 in a
//! later moto). Until tests/requirements.txt moves past it, the S3 clients
//! of the tests reach moto through this proxy, which renames that element
//! (fixing `Content-Length`) and passes everything else byte for byte. moto
//! closes every connection after one answer (`Connection: close`), so one
//! connection is one exchange.
//!
//! The proxy can also hold the GetObject requests of one object until the
//! test lets them go, so a test can keep a transfer in flight for as long
//! as it needs, without timing.

use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::sync::{Notify, watch};

/// A running proxy.
pub struct S3Proxy {
    /// Where S3 clients point (`http://127.0.0.1:PORT`).
    pub url: String,
    hold: Arc<Hold>,
}

/// The requests held back.
struct Hold {
    /// A GET whose request line contains this waits for `released`.
    path: Mutex<Option<String>>,
    /// Signalled when a held request arrives.
    arrived: Notify,
    released: watch::Sender<bool>,
}

impl S3Proxy {
    /// A proxy to moto's S3 at `upstream` (`http://HOST:PORT`).
    pub async fn spawn(upstream: &str) -> S3Proxy {
        let upstream = upstream.trim_start_matches("http://").to_owned();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hold = Arc::new(Hold { path: Mutex::new(None), arrived: Notify::new(), released: watch::channel(false).0 });
        let shared = hold.clone();
        tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else { return };
                tokio::spawn(exchange(client, upstream.clone(), shared.clone()));
            }
        });
        S3Proxy { url: format!("http://{addr}"), hold }
    }

    /// From now on, GETs of `bucket/key` wait until [`S3Proxy::release`].
    pub fn hold_gets_of(&self, bucket: &str, key: &str) {
        self.hold.released.send_replace(false);
        *self.hold.path.lock().unwrap() = Some(format!("GET /{bucket}/{key}"));
    }

    /// Waits until a held GET has arrived.
    pub async fn held(&self) {
        self.hold.arrived.notified().await;
    }

    /// Lets the held GETs go, and holds no more.
    pub fn release(&self) {
        *self.hold.path.lock().unwrap() = None;
        self.hold.released.send_replace(true);
    }
}

/// One request and its answer.
async fn exchange(client: tokio::net::TcpStream, upstream: String, hold: Arc<Hold>) {
    let Ok(server) = tokio::net::TcpStream::connect(&upstream).await else { return };
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    // The request head first, to see whether it is held.
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match client_read.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let line = String::from_utf8_lossy(&head[..head.iter().position(|b| *b == b'\r').unwrap_or(0)]).into_owned();
    let held = hold
        .path
        .lock()
        .unwrap()
        .as_ref()
        .is_some_and(|path| line.starts_with(&format!("{path} ")) || line.starts_with(&format!("{path}?")));
    if held {
        let mut released = hold.released.subscribe();
        hold.arrived.notify_one();
        let _ = released.wait_for(|r| *r).await;
    }
    if server_write.write_all(&head).await.is_err() {
        return;
    }
    let requests = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
    });
    let mut answer = Vec::new();
    let _ = server_read.read_to_end(&mut answer).await;
    requests.abort();
    let _ = client_write.write_all(&fix_complete_multipart_root(answer)).await;
    let _ = client_write.shutdown().await;
}

fn fix_complete_multipart_root(answer: Vec<u8>) -> Vec<u8> {
    const WRONG: &str = "CompleteMultipartUploadResponse";
    const RIGHT: &str = "CompleteMultipartUploadResult";
    let Some(split) = answer.windows(4).position(|w| w == b"\r\n\r\n") else { return answer };
    let (head, body) = (&answer[..split + 4], &answer[split + 4..]);
    let Ok(body) = std::str::from_utf8(body) else { return answer };
    if !body.contains(&format!("<{WRONG}")) {
        return answer;
    }
    let body = body
        .replace(&format!("<{WRONG}"), &format!("<{RIGHT}"))
        .replace(&format!("</{WRONG}>"), &format!("</{RIGHT}>"));
    let head = String::from_utf8_lossy(head);
    let head: Vec<String> = head
        .split("\r\n")
        .map(|line| {
            if line.to_ascii_lowercase().starts_with("content-length:") {
                format!("Content-Length: {}", body.len())
            } else {
                line.to_owned()
            }
        })
        .collect();
    let mut fixed = head.join("\r\n").into_bytes();
    fixed.extend_from_slice(body.as_bytes());
    fixed
}
