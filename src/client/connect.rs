//! The client side of the wire: a channel to the broker, plaintext or TLS
//! (with a client certificate for mutual TLS), from [`ClientArgs`].
//!
//! Owns endpoint settings and reading the PEM files the flags name. Must
//! never fall back to plaintext when TLS was asked for, and never print or
//! log a private key.

use std::path::Path;

use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::client::args::ClientArgs;
use crate::client::error::CliError;
use crate::edge::pb::key_broker_client::KeyBrokerClient;

/// Connects to the broker: plaintext for `http://` and bare `host:port`,
/// TLS for `https://` or whenever a CA certificate is given.
///
/// # Errors
/// [`CliError::Connect`], or [`CliError::Io`] for unreadable PEM files.
pub async fn channel(args: &ClientArgs) -> Result<Channel, CliError> {
    let tls = args.ca_cert.is_some() || args.addr.starts_with("https://");
    let url = if args.addr.contains("://") {
        args.addr.clone()
    } else if tls {
        format!("https://{}", args.addr)
    } else {
        format!("http://{}", args.addr)
    };
    // Object streams move 1 MiB chunks: let the broker answer in 1 MiB
    // frames within windows that hold a few of them.
    let mut endpoint = Endpoint::from_shared(url)
        .map_err(|e| CliError::Connect(e.to_string()))?
        .initial_stream_window_size(4 << 20)
        .initial_connection_window_size(8 << 20)
        .max_frame_size(1 << 20);
    if tls {
        let mut config = ClientTlsConfig::new();
        if let Some(ca) = &args.ca_cert {
            config = config.ca_certificate(Certificate::from_pem(read_pem(ca)?));
        }
        if let (Some(cert), Some(key)) = (&args.client_cert, &args.client_key) {
            config = config.identity(Identity::from_pem(read_pem(cert)?, read_pem(key)?));
        }
        if let Some(name) = &args.tls_server_name {
            config = config.domain_name(name.clone());
        }
        endpoint = endpoint.tls_config(config).map_err(|e| CliError::Connect(crate::app::aws::error_chain(&e)))?;
    }
    endpoint.connect().await.map_err(|e| CliError::Connect(crate::app::aws::error_chain(&e)))
}

/// A broker client over [`channel`].
///
/// # Errors
/// As [`channel`].
pub async fn connect(args: &ClientArgs) -> Result<KeyBrokerClient<Channel>, CliError> {
    Ok(KeyBrokerClient::new(channel(args).await?))
}

/// A certificate or private key file, as tonic takes it.
fn read_pem(path: &Path) -> Result<Vec<u8>, CliError> {
    std::fs::read(path).map_err(|source| CliError::Io { path: path.to_owned(), source })
}
