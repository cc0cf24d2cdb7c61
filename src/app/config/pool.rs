//! The `[pool]` table: keys wrapped ahead of demand. Which pools exist
//! (the default key's and the configured pipelines' keys at the listed
//! lengths, and the extra pools listed), how large they grow, how fast
//! they refill and how long a pooled key lives. Never names a key a
//! request could choose: pools are fixed by configuration.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::ConfigError;
use crate::custody::keys::{KeyBits, ServiceContext};
use crate::custody::kms::KmsKeyId;
use crate::custody::pool::{Cadence, PoolKey, PoolSettings, Sizing};

/// Key pool settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct PoolConfig {
    /// Keep pools at all; unset: on with `--dev`, off otherwise.
    pub enabled: Option<bool>,
    /// The fewest keys each pool aims to hold, however quiet.
    pub min_size: usize,
    /// The most keys each pool holds, however busy.
    pub max_size: usize,
    /// Refill starts when a pool holds less than this percentage of its
    /// target (1 to 100).
    pub low_water_percent: u32,
    /// How many seconds of the observed demand a pool holds (its target,
    /// within `min_size` and `max_size`): what it rides a KMS outage for.
    pub cover_secs: u64,
    /// Pooled keys older than this are discarded, never handed out, so a
    /// rotated or disabled KMS key stops being used promptly.
    pub ttl_secs: u64,
    /// KMS calls in flight while one pool refills.
    pub concurrency: usize,
    /// Key lengths pooled for `kms.default_key_id` and for every
    /// configured pipeline's key (Elastic Transcoder context).
    pub key_bits: Vec<u32>,
    /// Further pools, by KMS key, context and length.
    pub extra: Vec<ExtraPool>,
}

/// One pool the configuration lists beside the default ones.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ExtraPool {
    /// The KMS key, spelled as requests name it.
    pub kms_key_id: String,
    /// `elastic-transcoder` (default) or `mediaconvert`.
    #[serde(default = "default_context")]
    pub context: String,
    /// 128, 192 or 256 (default).
    #[serde(default = "default_bits")]
    pub key_bits: u32,
}

fn default_context() -> String {
    "elastic-transcoder".to_owned()
}

fn default_bits() -> u32 {
    256
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            enabled: None,
            min_size: 16,
            max_size: 4096,
            low_water_percent: 50,
            cover_secs: 30,
            ttl_secs: 900,
            concurrency: 16,
            key_bits: vec![256, 128],
            extra: Vec::new(),
        }
    }
}

impl PoolConfig {
    /// Whether the broker keeps pools.
    pub fn is_enabled(&self) -> bool {
        self.enabled.unwrap_or(false)
    }

    /// The settings these keys describe.
    pub fn settings(&self) -> PoolSettings {
        PoolSettings {
            sizing: Sizing {
                min: self.min_size,
                max: self.max_size,
                low_water: f64::from(self.low_water_percent.clamp(1, 100)) / 100.0,
                cover: Duration::from_secs(self.cover_secs),
                ttl: Duration::from_secs(self.ttl_secs),
            },
            cadence: Cadence {
                tick: Duration::from_millis(250),
                concurrency: self.concurrency,
                backoff: Duration::from_millis(500),
            },
        }
    }

    /// The pools to keep: the default key's and every configured
    /// pipeline's key at each of `key_bits` under the Elastic Transcoder
    /// context, then the extra pools.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] for a bad key id, length or context.
    pub fn pools(&self, default_key: Option<&str>, pipeline_keys: &[&str]) -> Result<Vec<PoolKey>, ConfigError> {
        let invalid = |rule: String| ConfigError::Invalid { key: "pool", rule };
        let mut pools = Vec::new();
        for key in default_key.into_iter().chain(pipeline_keys.iter().copied()) {
            let key_id = KmsKeyId::parse(key, "kms key").map_err(|e| invalid(e.to_string()))?;
            for bits in &self.key_bits {
                let bits = KeyBits::parse(*bits, "pool.key_bits").map_err(|e| invalid(e.to_string()))?;
                pools.push(PoolKey { key_id: key_id.clone(), context: ServiceContext::ElasticTranscoder, bits });
            }
        }
        for extra in &self.extra {
            let key_id =
                KmsKeyId::parse(&extra.kms_key_id, "pool.extra.kms_key_id").map_err(|e| invalid(e.to_string()))?;
            let bits = KeyBits::parse(extra.key_bits, "pool.extra.key_bits").map_err(|e| invalid(e.to_string()))?;
            let context = match extra.context.as_str() {
                "elastic-transcoder" => ServiceContext::ElasticTranscoder,
                "mediaconvert" => ServiceContext::MediaConvert,
                other => {
                    return Err(invalid(format!(
                        "extra.context: must be elastic-transcoder or mediaconvert, got {other:?}"
                    )));
                }
            };
            pools.push(PoolKey { key_id, context, bits });
        }
        Ok(pools)
    }

    /// Checks the bounds.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let rule = if self.min_size == 0 || self.max_size < self.min_size {
            Some(("pool.max_size", "min_size must be at least 1 and max_size at least min_size"))
        } else if !(1..=100).contains(&self.low_water_percent) {
            Some(("pool.low_water_percent", "must be 1 to 100"))
        } else if self.ttl_secs == 0 || self.cover_secs == 0 {
            Some(("pool.ttl_secs", "ttl_secs and cover_secs must be greater than 0"))
        } else if self.concurrency == 0 {
            Some(("pool.concurrency", "must be greater than 0"))
        } else {
            None
        };
        match rule {
            Some((key, rule)) => Err(ConfigError::Invalid { key, rule: rule.to_owned() }),
            None => Ok(()),
        }
    }
}

impl super::Config {
    /// The key pools this configuration asks for ([`PoolConfig::pools`]
    /// over the default key and the static pipelines' keys); `None` when
    /// pools are off.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] for a bad key id, length or context.
    pub fn pool_keys(&self) -> Result<Option<Vec<PoolKey>>, ConfigError> {
        if !self.pool.is_enabled() {
            return Ok(None);
        }
        let pipeline_keys: Vec<&str> = self
            .transcoder
            .pipelines
            .iter()
            .filter_map(|p| p.kms_key_arn.as_deref())
            .filter(|a| !a.is_empty())
            .collect();
        Ok(Some(self.pool.pools(self.kms.default_key_id.as_deref(), &pipeline_keys)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pools_are_the_default_key_the_pipelines_and_the_extras_only() {
        let config = PoolConfig {
            key_bits: vec![256, 128],
            extra: vec![ExtraPool {
                kms_key_id: "alias/mc".to_owned(),
                context: "mediaconvert".to_owned(),
                key_bits: 192,
            }],
            ..PoolConfig::default()
        };
        let pools = config.pools(Some("alias/default"), &["arn:aws:kms:us-east-1:111122223333:key/p"]).unwrap();
        let named: Vec<_> = pools.iter().map(|p| (p.key_id.as_str(), p.context, p.bits.bits())).collect();
        assert_eq!(
            named,
            vec![
                ("alias/default", ServiceContext::ElasticTranscoder, 256),
                ("alias/default", ServiceContext::ElasticTranscoder, 128),
                ("arn:aws:kms:us-east-1:111122223333:key/p", ServiceContext::ElasticTranscoder, 256),
                ("arn:aws:kms:us-east-1:111122223333:key/p", ServiceContext::ElasticTranscoder, 128),
                ("alias/mc", ServiceContext::MediaConvert, 192),
            ]
        );
        let bad = PoolConfig { key_bits: vec![64], ..PoolConfig::default() };
        assert!(bad.pools(Some("alias/d"), &[]).unwrap_err().to_string().contains("pool.key_bits"));
    }

    #[test]
    fn bounds_are_checked() {
        PoolConfig::default().validate().unwrap();
        let err = PoolConfig { min_size: 10, max_size: 5, ..PoolConfig::default() }.validate().unwrap_err();
        assert!(err.to_string().contains("pool.max_size"), "{err}");
        assert!(PoolConfig { low_water_percent: 0, ..PoolConfig::default() }.validate().is_err());
        assert!(PoolConfig { ttl_secs: 0, ..PoolConfig::default() }.validate().is_err());
    }
}
