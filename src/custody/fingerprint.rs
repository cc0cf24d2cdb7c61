//! Key fingerprints: a keyed hash (HMAC-SHA256) of a *wrapped* key, so audit
//! records and responses can name a key without revealing anything about it.
//! Never computed over plaintext.

use std::path::Path;

use hmac::{Hmac, KeyInit as _, Mac as _};
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::custody::keys::WrappedKey;

/// Computes fingerprints under one secret key.
pub struct Fingerprinter {
    key: Zeroizing<[u8; 32]>,
}

impl Fingerprinter {
    /// A fingerprinter with a fresh random key: fingerprints correlate
    /// within one process only.
    ///
    /// # Errors
    /// When the OS CSPRNG fails.
    pub fn ephemeral() -> Result<Self, getrandom::Error> {
        let mut key = Zeroizing::new([0u8; 32]);
        getrandom::fill(key.as_mut())?;
        Ok(Fingerprinter { key })
    }

    /// A fingerprinter whose key is the first 32 bytes of `path`, so
    /// fingerprints stay comparable across restarts and replicas.
    ///
    /// # Errors
    /// When the file cannot be read or is shorter than 32 bytes.
    pub fn from_file(path: &Path) -> std::io::Result<Self> {
        let bytes = Zeroizing::new(std::fs::read(path)?);
        let mut key = Zeroizing::new([0u8; 32]);
        if bytes.len() < 32 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{}: a fingerprint key needs at least 32 bytes", path.display()),
            ));
        }
        key.copy_from_slice(&bytes[..32]);
        Ok(Fingerprinter { key })
    }

    /// `hmac-sha256:` and the first 16 bytes of the MAC, hex.
    pub fn of(&self, wrapped: &WrappedKey) -> String {
        let mac = <Hmac<Sha256>>::new_from_slice(self.key.as_ref())
            .map(|mut mac| {
                mac.update(wrapped.as_bytes());
                mac.finalize().into_bytes()
            })
            .map(|bytes| hex::encode(&bytes[..16]))
            .unwrap_or_default();
        format!("hmac-sha256:{mac}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_are_keyed_and_stable() {
        let a = Fingerprinter::ephemeral().unwrap();
        let b = Fingerprinter::ephemeral().unwrap();
        let w = WrappedKey::new(vec![1, 2, 3]);
        assert_eq!(a.of(&w), a.of(&w));
        assert_ne!(a.of(&w), b.of(&w));
        assert_ne!(a.of(&w), a.of(&WrappedKey::new(vec![1, 2, 4])));
        assert!(a.of(&w).starts_with("hmac-sha256:"));
        assert_eq!(a.of(&w).len(), "hmac-sha256:".len() + 32);
    }
}
