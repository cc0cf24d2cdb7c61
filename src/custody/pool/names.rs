//! The names of a pooled KMS key: resolved once, when the pools are set
//! up, so a caller naming a configured key by its alias, key id, key ARN
//! or alias ARN reaches the same pools.
//!
//! Owns asking KMS (`DescribeKey`, and the key's aliases) what each
//! configured key is, and the index from every reported name to the
//! configured name the pools are keyed by. A key KMS cannot describe at
//! set-up keeps its pools under the configured name alone. Must never
//! give a pool to a key the configuration does not name: only names KMS
//! reported for a configured key enter the index.

use std::collections::HashMap;
use std::time::Duration;

use super::shelf::PoolKey;
use crate::custody::kms::{Kms, KmsKeyId};

/// What KMS reported for one configured key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyNames {
    /// The key as the configuration names it.
    pub configured: KmsKeyId,
    /// The key's ARN (the configured name when KMS did not answer).
    pub arn: String,
    /// Every other name of the key: key id, key ARN, aliases, alias ARNs.
    pub names: Vec<String>,
}

/// Asks KMS, within `deadline` per key, for the names of every distinct
/// key `keys` name. A key KMS does not describe is logged and keeps only
/// its configured name.
pub async fn resolve_names(kms: &dyn Kms, keys: &[PoolKey], deadline: Duration) -> Vec<KeyNames> {
    let mut resolved: Vec<KeyNames> = Vec::new();
    for key in keys {
        if resolved.iter().any(|known| known.configured == key.key_id) {
            continue;
        }
        let described = match tokio::time::timeout(deadline, kms.describe(&key.key_id)).await {
            Ok(described) => described.map_err(|e| e.to_string()),
            Err(_) => Err(format!("DescribeKey did not answer within {deadline:?}")),
        };
        match described {
            Ok(described) => {
                tracing::info!(
                    kms_key = %key.key_id,
                    kms_key_arn = %described.arn,
                    names = described.names.len(),
                    "key pool: resolved the configured key"
                );
                resolved.push(KeyNames { configured: key.key_id.clone(), arn: described.arn, names: described.names });
            }
            Err(error) => {
                tracing::warn!(
                    kms_key = %key.key_id,
                    %error,
                    "key pool: KMS did not describe the key; its pools answer to the configured name only"
                );
                resolved.push(KeyNames {
                    configured: key.key_id.clone(),
                    arn: key.key_id.as_str().to_owned(),
                    names: Vec::new(),
                });
            }
        }
    }
    resolved
}

/// What [`index`] answers: the configured name a pool of a configured key
/// is kept under, every name's configured name, and the id refills wrap
/// with for each configured name.
pub(super) type Index =
    (Box<dyn Fn(&KmsKeyId) -> KmsKeyId>, HashMap<String, KmsKeyId>, Box<dyn Fn(&KmsKeyId) -> KmsKeyId>);

/// Indexes `names` for `keys`: keys configured by different names of one
/// KMS key (the same ARN) share the first one's pools; every reported
/// name (and the ARN) leads to that configured name; refills wrap with the
/// ARN when KMS reported one, else with the configured name.
pub(super) fn index(keys: &[PoolKey], names: &[KeyNames]) -> Index {
    let mut first_by_arn: HashMap<&str, &KmsKeyId> = HashMap::new();
    let mut canonical: HashMap<KmsKeyId, KmsKeyId> = HashMap::new();
    let mut wrap_with: HashMap<KmsKeyId, KmsKeyId> = HashMap::new();
    let mut lookup: HashMap<String, KmsKeyId> = HashMap::new();
    for key in keys {
        let Some(named) = names.iter().find(|n| n.configured == key.key_id) else { continue };
        let first = (*first_by_arn.entry(named.arn.as_str()).or_insert(&named.configured)).clone();
        canonical.insert(key.key_id.clone(), first.clone());
        if let Ok(arn) = KmsKeyId::parse(&named.arn, "kms key ARN") {
            wrap_with.entry(first.clone()).or_insert(arn);
        }
        for name in std::iter::once(named.configured.as_str())
            .chain(std::iter::once(named.arn.as_str()))
            .chain(named.names.iter().map(String::as_str))
        {
            lookup.entry(name.to_owned()).or_insert_with(|| first.clone());
        }
    }
    (
        Box::new(move |key: &KmsKeyId| canonical.get(key).cloned().unwrap_or_else(|| key.clone())),
        lookup,
        Box::new(move |key: &KmsKeyId| wrap_with.get(key).cloned().unwrap_or_else(|| key.clone())),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::custody::keys::{KeyBits, ServiceContext};

    fn id(text: &str) -> KmsKeyId {
        KmsKeyId::parse(text, "kms_key_id").unwrap()
    }

    fn pool(key: &str) -> PoolKey {
        PoolKey { key_id: id(key), context: ServiceContext::ElasticTranscoder, bits: KeyBits::Aes256 }
    }

    const ARN: &str = "arn:aws:kms:us-east-1:111122223333:key/1234";

    #[test]
    fn every_name_of_a_configured_key_leads_to_its_pool_and_no_other_name_does() {
        let keys = [pool("alias/x"), pool(ARN), pool("alias/unknown")];
        let names = [
            KeyNames {
                configured: id("alias/x"),
                arn: ARN.to_owned(),
                names: vec!["1234".to_owned(), "arn:aws:kms:us-east-1:111122223333:alias/x".to_owned()],
            },
            KeyNames { configured: id(ARN), arn: ARN.to_owned(), names: vec!["1234".to_owned()] },
            KeyNames { configured: id("alias/unknown"), arn: "alias/unknown".to_owned(), names: Vec::new() },
        ];
        let (canonical, lookup, wrap_with) = index(&keys, &names);
        // The ARN configured as a second spelling of alias/x shares its pools.
        assert_eq!(canonical(&id(ARN)), id("alias/x"));
        assert_eq!(canonical(&id("alias/unknown")), id("alias/unknown"));
        for name in ["alias/x", ARN, "1234", "arn:aws:kms:us-east-1:111122223333:alias/x"] {
            assert_eq!(lookup.get(name), Some(&id("alias/x")), "{name}");
        }
        assert_eq!(lookup.get("alias/unknown"), Some(&id("alias/unknown")));
        assert_eq!(lookup.get("alias/caller-named"), None);
        // Refills wrap with the ARN KMS reported, or the configured name.
        assert_eq!(wrap_with(&id("alias/x")), id(ARN));
        assert_eq!(wrap_with(&id("alias/unknown")), id("alias/unknown"));
    }
}
