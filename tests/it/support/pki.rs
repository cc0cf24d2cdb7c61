//! A test PKI made with rcgen: CAs and leaf certificates (CA:FALSE, as
//! rustls requires), valid, expired, or from another CA.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    SanType, date_time_ymd,
};

/// A certificate authority.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pub pem: String,
}

/// A PEM certificate and key.
pub struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
}

impl Leaf {
    /// Writes `NAME.crt` and `NAME.key` into `dir`.
    pub fn write(&self, dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let cert = dir.join(format!("{name}.crt"));
        let key = dir.join(format!("{name}.key"));
        std::fs::write(&cert, &self.cert_pem).unwrap();
        std::fs::write(&key, &self.key_pem).unwrap();
        (cert, key)
    }
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key).unwrap();
        Ca { pem: cert.pem(), issuer: Issuer::new(params, key) }
    }

    pub fn write(&self, dir: &Path, name: &str) -> PathBuf {
        let path = dir.join(format!("{name}.crt"));
        std::fs::write(&path, &self.pem).unwrap();
        path
    }

    fn leaf(&self, sans: Vec<SanType>, server: bool, expired: bool) -> Leaf {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::ExplicitNoCa;
        params.subject_alt_names = sans;
        params.distinguished_name.push(DnType::CommonName, "keybroker test");
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages =
            vec![if server { ExtendedKeyUsagePurpose::ServerAuth } else { ExtendedKeyUsagePurpose::ClientAuth }];
        if expired {
            params.not_before = date_time_ymd(2020, 1, 1);
            params.not_after = date_time_ymd(2021, 1, 1);
        }
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf { cert_pem: cert.pem(), key_pem: key.serialize_pem() }
    }

    /// A server certificate for `localhost` and 127.0.0.1.
    pub fn server(&self) -> Leaf {
        self.leaf(
            vec![SanType::DnsName("localhost".try_into().unwrap()), SanType::IpAddress([127, 0, 0, 1].into())],
            true,
            false,
        )
    }

    /// A client certificate whose identity is a SPIFFE ID.
    pub fn client(&self, spiffe_id: &str) -> Leaf {
        self.leaf(vec![SanType::URI(spiffe_id.try_into().unwrap())], false, false)
    }

    /// A client certificate whose only SANs are these DNS names.
    pub fn client_with_dns(&self, names: &[&str]) -> Leaf {
        let sans = names.iter().map(|name| SanType::DnsName((*name).try_into().unwrap())).collect();
        self.leaf(sans, false, false)
    }

    /// A client certificate with a common name but no SAN at all.
    pub fn client_without_san(&self) -> Leaf {
        self.leaf(Vec::new(), false, false)
    }

    /// A client certificate that expired in 2021.
    pub fn expired_client(&self, spiffe_id: &str) -> Leaf {
        self.leaf(vec![SanType::URI(spiffe_id.try_into().unwrap())], false, true)
    }
}
