//! Real peers for the integration tests: the local AWS (moto), the Elastic
//! Transcoder endpoint of the test suite, a broker to talk to (in process or
//! as a child process), a test PKI, the external programs the broker's files
//! are checked with, and deterministic test data.

pub mod broker;
pub mod et;
pub mod kms;
pub mod ledger_db;
pub mod logs;
pub mod mc_model;
pub mod mediaconvert;
pub mod moto;
pub mod pki;
pub mod preflight;
pub mod process;
pub mod proxy;
pub mod rng;
pub mod s3;
pub mod tools;

/// Serves `app` on a free loopback port until the answered sender is sent
/// to or dropped; answers the endpoint's `http://` URL with it. `name`
/// labels a failure to serve.
pub async fn serve_on_loopback(app: axum::Router, name: &'static str) -> (String, tokio::sync::oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind an endpoint on 127.0.0.1:0");
    let url = format!("http://{}", listener.local_addr().expect("endpoint address"));
    let (shutdown, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stopped.await;
            })
            .await;
        if let Err(e) = served {
            eprintln!("{name} stopped: {e}");
        }
    });
    (url, shutdown)
}
