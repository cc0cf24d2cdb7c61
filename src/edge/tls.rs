//! TLS and caller identity: rustls server configuration with mutual TLS,
//! reloadable without dropping established connections, and the caller's
//! identity read from its client certificate.
//!
//! Owns certificate and trust-bundle loading, the accept loop's handshakes,
//! and identity extraction (a SPIFFE ID URI SAN first, else the first DNS
//! SAN). Private keys are read into rustls types only and never logged.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use rustls::ServerConfig;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use x509_parser::extensions::GeneralName;

/// Why TLS material could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or holds no usable PEM.
    #[error("{path}: {problem}")]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// rustls refused the material.
    #[error("TLS configuration: {0}")]
    Rustls(String),
}

/// Where the server's TLS material lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The server certificate chain (PEM).
    pub cert: PathBuf,
    /// The server private key (PEM).
    pub key: PathBuf,
    /// The CA certificates client certificates must chain to (PEM); `None`
    /// serves TLS without client certificates.
    pub client_ca: Option<PathBuf>,
    /// Whether a client certificate is required (mutual TLS).
    pub require_client_cert: bool,
}

impl TlsFiles {
    fn paths(&self) -> Vec<&Path> {
        let mut paths = vec![self.cert.as_path(), self.key.as_path()];
        paths.extend(self.client_ca.as_deref());
        paths
    }
}

fn file_error(path: &Path, problem: impl std::fmt::Display) -> TlsError {
    TlsError::File { path: path.to_owned(), problem: problem.to_string() }
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_error(path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(path, e))?;
    if certs.is_empty() {
        return Err(file_error(path, "no PEM certificate in the file"));
    }
    Ok(certs)
}

/// Builds a rustls server configuration from the files (ALPN `h2`).
///
/// # Errors
/// [`TlsError`] naming the file or the rustls problem.
pub fn server_config(files: &TlsFiles) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let chain = read_certs(&files.cert)?;
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| file_error(&files.key, e))?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Rustls(e.to_string()))?;
    let builder = match &files.client_ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in read_certs(ca)? {
                roots.add(cert).map_err(|e| file_error(ca, e))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = if files.require_client_cert { verifier } else { verifier.allow_unauthenticated() };
            builder.with_client_cert_verifier(verifier.build().map_err(|e| TlsError::Rustls(e.to_string()))?)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(chain, key).map_err(|e| TlsError::Rustls(e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// The live TLS configuration: new handshakes use the latest one loaded;
/// established connections keep the one they were made with.
#[derive(Clone)]
pub struct ReloadableTls {
    files: TlsFiles,
    current: Arc<RwLock<Arc<ServerConfig>>>,
}

impl ReloadableTls {
    /// Loads the files once.
    ///
    /// # Errors
    /// [`TlsError`] when the material is unusable.
    pub fn load(files: TlsFiles) -> Result<Self, TlsError> {
        let config = server_config(&files)?;
        Ok(ReloadableTls { files, current: Arc::new(RwLock::new(config)) })
    }

    /// Reloads the files; on failure the previous configuration stays.
    ///
    /// # Errors
    /// [`TlsError`] when the new material is unusable.
    pub fn reload(&self) -> Result<(), TlsError> {
        let config = server_config(&self.files)?;
        if let Ok(mut current) = self.current.write() {
            *current = config;
        }
        Ok(())
    }

    fn acceptor(&self) -> TlsAcceptor {
        let config = self.current.read().map(|c| c.clone()).unwrap_or_else(|poisoned| poisoned.into_inner().clone());
        TlsAcceptor::from(config)
    }

    /// The newest modification time of the files, for change polling.
    pub fn modified(&self) -> Option<SystemTime> {
        self.files.paths().iter().filter_map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok()).max()
    }
}

/// A TLS handshake with the certificates loaded now: a connection keeps
/// the configuration it was accepted with across reloads.
impl crate::edge::listen::Handshake for ReloadableTls {
    type Io = TlsStream<TcpStream>;

    async fn handshake(&self, tcp: TcpStream) -> std::io::Result<(Self::Io, Option<crate::edge::conn::PeerCerts>)> {
        let stream = self.acceptor().accept(tcp).await?;
        let certs = stream.get_ref().1.peer_certificates().map(|certs| Arc::new(certs.to_vec()));
        Ok((stream, certs))
    }
}

/// The caller's identity from its leaf certificate. Identities are typed,
/// so one kind can never pass as another:
/// - a SPIFFE ID (`spiffe://trust-domain/path`) comes only from a URI SAN,
///   and a certificate naming two different ones names none;
/// - without one, the first DNS SAN yields `dns:NAME` (lower case), which
///   no `spiffe://` rule can match; a DNS SAN that is not a DNS name (such
///   as one reading `spiffe://...`) makes the certificate name none.
///
/// `None` is refused with `UNAUTHENTICATED` by the gate.
pub fn identity_of(leaf: &CertificateDer<'_>) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref()).ok()?;
    let san = cert.subject_alternative_name().ok()??;
    let names = &san.value.general_names;
    let mut spiffe_ids = names.iter().filter_map(|name| match name {
        GeneralName::URI(uri) if uri.starts_with("spiffe://") => Some(*uri),
        _ => None,
    });
    if let Some(first) = spiffe_ids.next() {
        let unique = spiffe_ids.all(|other| other == first);
        return (unique && is_spiffe_id(first)).then(|| first.to_owned());
    }
    let mut dns_names = names.iter().filter_map(|name| match name {
        GeneralName::DNSName(dns) => Some(*dns),
        _ => None,
    });
    let first = dns_names.next()?;
    let all_valid = is_dns_name(first) && dns_names.all(is_dns_name);
    all_valid.then(|| format!("dns:{}", first.to_ascii_lowercase()))
}

/// Whether `text` is a SPIFFE ID as the SPIFFE standard writes it: the
/// scheme, a trust domain of lower-case letters, digits, `.`, `-` and `_`,
/// and a path of non-empty segments of letters, digits, `.`, `-` and `_`
/// (no `.` or `..` segment, no query, fragment, port or user).
pub fn is_spiffe_id(text: &str) -> bool {
    let Some(rest) = text.strip_prefix("spiffe://") else {
        return false;
    };
    let (domain, path) = rest.split_once('/').map_or((rest, ""), |(d, p)| (d, p));
    let domain_ok = !domain.is_empty()
        && domain.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'_'));
    let segment_ok = |segment: &str| {
        !segment.is_empty()
            && segment != "."
            && segment != ".."
            && segment.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
    };
    domain_ok && (path.is_empty() && !rest.ends_with('/') || !path.is_empty() && path.split('/').all(segment_ok))
}

/// Whether `text` is a DNS name a certificate may carry: labels of 1 to 63
/// letters, digits and hyphens (no hyphen first or last), 253 characters in
/// all, and at most a leading `*.` wildcard label.
pub fn is_dns_name(text: &str) -> bool {
    let name = text.strip_prefix("*.").unwrap_or(text);
    let label_ok = |label: &str| {
        (1..=63).contains(&label.len())
            && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    };
    !name.is_empty() && text.len() <= 253 && name.split('.').all(label_ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert_with(sans: Vec<rcgen::SanType>) -> CertificateDer<'static> {
        let mut params = rcgen::CertificateParams::default();
        params.subject_alt_names = sans;
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().clone()
    }

    #[test]
    fn spiffe_id_comes_first_then_dns() {
        use rcgen::SanType;
        let spiffe = "spiffe://example.org/ns/media/sa/encoder";
        let both = cert_with(vec![
            SanType::DnsName("encoder.media.svc".try_into().unwrap()),
            SanType::URI("https://not-spiffe.example".try_into().unwrap()),
            SanType::URI(spiffe.try_into().unwrap()),
        ]);
        assert_eq!(identity_of(&both).as_deref(), Some(spiffe));
        let dns = cert_with(vec![SanType::DnsName("packager.media.svc".try_into().unwrap())]);
        assert_eq!(identity_of(&dns).as_deref(), Some("dns:packager.media.svc"));
        assert_eq!(identity_of(&cert_with(vec![])), None);
    }

    #[test]
    fn identities_are_typed_and_a_dns_san_never_passes_as_a_spiffe_id() {
        use rcgen::SanType;
        let dns = |name: &str| SanType::DnsName(name.try_into().unwrap());
        let uri = |name: &str| SanType::URI(name.try_into().unwrap());
        // A DNS SAN that reads like a SPIFFE ID is no DNS name: no identity.
        assert_eq!(identity_of(&cert_with(vec![dns("spiffe://example.org/ns/ops/sa/key-recovery")])), None);
        // Wildcards and case.
        assert_eq!(identity_of(&cert_with(vec![dns("*.Media.svc")])).as_deref(), Some("dns:*.media.svc"));
        assert_eq!(identity_of(&cert_with(vec![dns("a.*.svc")])), None, "a wildcard only as the first label");
        assert_eq!(identity_of(&cert_with(vec![dns("ok.svc"), dns("bad_name.svc")])), None, "every DNS SAN valid");
        // Several URI SANs: one SPIFFE ID (repeated is fine), never two.
        let id = "spiffe://example.org/a";
        assert_eq!(identity_of(&cert_with(vec![uri("https://x.example"), uri(id), uri(id)])).as_deref(), Some(id));
        assert_eq!(identity_of(&cert_with(vec![uri(id), uri("spiffe://example.org/b")])), None);
        // A malformed SPIFFE ID is not replaced by a DNS SAN.
        assert_eq!(identity_of(&cert_with(vec![uri("spiffe://Example.org/a"), dns("ok.svc")])), None);
    }

    #[test]
    fn spiffe_ids_and_dns_names_follow_their_grammars() {
        for good in ["spiffe://example.org", "spiffe://example.org/ns/media/sa/encoder", "spiffe://td-1.x_y/a.b/c-d"] {
            assert!(is_spiffe_id(good), "{good}");
        }
        for bad in [
            "spiffe://",
            "spiffe://Example.org/a",
            "spiffe://example.org/",
            "spiffe://example.org//a",
            "spiffe://example.org/a/../b",
            "spiffe://example.org:443/a",
            "spiffe://user@example.org/a",
            "spiffe://example.org/a?x=1",
            "spiffe://example.org/a#f",
            "https://example.org/a",
        ] {
            assert!(!is_spiffe_id(bad), "{bad}");
        }
        for good in ["localhost", "a.b-c.d", "*.svc.cluster.local", "x1"] {
            assert!(is_dns_name(good), "{good}");
        }
        for bad in ["", "*", "a..b", "-a.b", "a-.b", "a_b", "spiffe://x/y", "a b", &"a".repeat(64), "*.*.b"] {
            assert!(!is_dns_name(bad), "{bad}");
        }
    }

    proptest::proptest! {
        /// The two grammars never overlap: no text is both a SPIFFE ID and
        /// a DNS name, so a DNS SAN can never pass as a SPIFFE ID.
        #[test]
        fn no_text_is_both_a_spiffe_id_and_a_dns_name(text in "(spiffe://)?[a-zA-Z0-9.*_:/-]{0,40}") {
            proptest::prop_assert!(!(is_spiffe_id(&text) && is_dns_name(&text)), "{}", text);
        }
    }
}
