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
    let url = broker_url(&args.addr, tls)?;
    // Object streams move 1 MiB chunks: let the broker answer in 1 MiB
    // frames within windows that hold a few of them.
    let mut endpoint = Endpoint::from_shared(url.clone())
        .map_err(|e| CliError::Usage(format!("--addr {}: {e}", args.addr)))?
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
    endpoint.connect().await.map_err(|e| {
        CliError::Connect(format!(
            "cannot reach a broker at {url}: {}; is one running there? (`keybroker serve --dev` starts one on \
             127.0.0.1:50051)",
            crate::app::aws::error_chain(&e)
        ))
    })
}

/// The broker's URL from `--addr`: `HOST:PORT`, `http://HOST:PORT` or
/// `https://HOST:PORT` (TLS when `tls`), with the port required.
///
/// # Errors
/// [`CliError::Usage`] naming what is wrong with the address.
fn broker_url(addr: &str, tls: bool) -> Result<String, CliError> {
    let bad = |rule: &str| CliError::Usage(format!("--addr {addr:?}: {rule}"));
    let url = match addr.split_once("://") {
        Some(("http" | "https", _)) => addr.to_owned(),
        Some((scheme, _)) => return Err(bad(&format!("scheme {scheme:?} is not http or https"))),
        None if tls => format!("https://{addr}"),
        None => format!("http://{addr}"),
    };
    let parsed = url::Url::parse(&url).map_err(|e| bad(&format!("not HOST:PORT or a URL ({e})")))?;
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(bad("names no host"));
    }
    let authority = url.split_once("://").map_or(url.as_str(), |(_, rest)| rest);
    let authority = authority.split(['/', '?']).next().unwrap_or_default();
    let port_written = authority
        .rsplit_once(':')
        .is_some_and(|(_, port)| !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()));
    if !port_written {
        return Err(bad("names no port (the broker listens on 50051 by default: HOST:50051)"));
    }
    if !matches!(parsed.path(), "" | "/") || parsed.query().is_some() {
        return Err(bad("must be HOST:PORT, without a path"));
    }
    Ok(url)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_need_a_host_a_port_and_http_or_https() {
        assert_eq!(broker_url("127.0.0.1:50051", false).unwrap(), "http://127.0.0.1:50051");
        assert_eq!(broker_url("keybroker:50051", true).unwrap(), "https://keybroker:50051");
        assert_eq!(broker_url("https://keybroker.media.svc:443", false).unwrap(), "https://keybroker.media.svc:443");
        assert_eq!(broker_url("http://[::1]:50051", false).unwrap(), "http://[::1]:50051");
        for (addr, rule) in [
            ("127.0.0.1", "names no port"),
            ("http://127.0.0.1", "names no port"),
            ("ftp://x:21", "scheme \"ftp\" is not http or https"),
            ("http://:50051", "not HOST:PORT"),
            ("127.0.0.1:50051/v1", "without a path"),
        ] {
            let err = broker_url(addr, false).unwrap_err().to_string();
            assert!(err.contains(rule) && err.contains(&format!("{addr:?}")), "{addr}: {err}");
        }
    }
}
