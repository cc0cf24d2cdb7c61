//! A caller's request token for one job submission, whatever the
//! transcoder: who asked, the token, the hash of the request it was first
//! used with, and the marker that names it in the job (`UserMetadata`, and
//! MediaConvert's `ClientRequestToken`).
//!
//! Owns the token's identity in the ledger ([`TokenKey`]) and its marker.
//! Must never hash or hold key material: the hash covers the request as the
//! caller sent it, whose keys are wrapped.

use sha2::{Digest as _, Sha256};

use crate::ledger::{RequestToken, TokenKey};

/// One caller's token for one request.
#[derive(Debug, Clone)]
pub struct Ticket {
    identity: String,
    token: RequestToken,
    hash: String,
    marker: String,
}

impl Ticket {
    /// The ticket of `token` for `identity`'s request, whose canonical bytes
    /// `hashed` writes into the hash.
    pub fn new(identity: &str, token: RequestToken, hashed: impl FnOnce(&mut Sha256)) -> Ticket {
        let mut hash = Sha256::new();
        hashed(&mut hash);
        Ticket {
            marker: token.metadata_value(identity),
            identity: identity.to_owned(),
            token,
            hash: hex::encode(hash.finalize()),
        }
    }

    /// The token's key in the ledger.
    pub fn key(&self) -> TokenKey<'_> {
        TokenKey { identity: &self.identity, token: self.token.as_str() }
    }

    /// The token as the caller wrote it.
    pub fn token(&self) -> &RequestToken {
        &self.token
    }

    /// The hash of the request the ticket was made for.
    pub fn hash(&self) -> &str {
        &self.hash
    }

    /// The value that names the token in a job: SHA-256 of caller and
    /// token, hex (64 characters).
    pub fn marker(&self) -> &str {
        &self.marker
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_token_of_two_callers_is_two_tickets_and_the_hash_follows_the_request() {
        let token = || RequestToken::parse_optional("t-1", "request_token").unwrap().unwrap();
        let a = Ticket::new("dns:a", token(), |h| h.update(b"job"));
        let b = Ticket::new("dns:b", token(), |h| h.update(b"job"));
        assert_ne!(a.marker(), b.marker());
        assert_eq!(a.marker().len(), 64);
        assert_eq!(a.hash(), b.hash());
        assert_ne!(a.hash(), Ticket::new("dns:a", token(), |h| h.update(b"other")).hash());
        assert_eq!(a.key().identity, "dns:a");
    }
}
