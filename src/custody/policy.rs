//! Who may do what: a TOML policy of rules mapping caller identities (exact
//! or glob) to RPCs, pipelines, KMS keys, a maximum key length, plaintext
//! export, a rate limit and a cap on calls in flight. Default deny; the
//! first rule whose identity matches governs the call.
//!
//! Owns parsing (errors name the line), matching and per-identity rate
//! limiting. Knows nothing of protobuf or keys.

use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use globset::{Glob, GlobMatcher};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use serde::Deserialize;
use toml::Spanned;

use crate::custody::keys::KeyBits;
use crate::custody::rpc::Rpc;

/// The identity of a caller without a client certificate.
pub const ANONYMOUS: &str = "anonymous";

/// Why a policy file was refused.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The file could not be read.
    #[error("policy {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not a valid policy; the message names the line.
    #[error("policy {path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong, with its line.
        message: String,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    #[serde(default)]
    rule: Vec<RuleFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    identity: Spanned<String>,
    #[serde(default = "none")]
    rpcs: Spanned<Vec<String>>,
    #[serde(default = "star")]
    pipelines: Spanned<Vec<String>>,
    #[serde(default = "star")]
    kms_keys: Spanned<Vec<String>>,
    #[serde(default = "max_bits")]
    max_key_bits: Spanned<u32>,
    #[serde(default)]
    plaintext_export: bool,
    #[serde(default)]
    rate_per_second: Option<Spanned<u32>>,
    #[serde(default)]
    burst: Option<Spanned<u32>>,
    #[serde(default)]
    max_concurrent: Option<Spanned<usize>>,
    #[serde(default)]
    require_encrypted_outputs: bool,
}

fn none() -> Spanned<Vec<String>> {
    Spanned::new(0..0, Vec::new())
}

fn star() -> Spanned<Vec<String>> {
    Spanned::new(0..0, vec!["*".to_owned()])
}

fn max_bits() -> Spanned<u32> {
    Spanned::new(0..0, 256)
}

/// Whether a rule's identity pattern says which kind of identity it means:
/// a SPIFFE ID (`spiffe://`), a DNS SAN (`dns:`), `anonymous`, or a glob
/// starting with `*` (which may match every kind). A bare host name would
/// match nothing, since DNS identities read `dns:NAME`.
fn is_identity_pattern(pattern: &str) -> bool {
    pattern.starts_with("spiffe://") || pattern.starts_with("dns:") || pattern.starts_with('*') || pattern == ANONYMOUS
}

/// A set of glob patterns (shared, so grants clone cheaply).
#[derive(Debug, Clone)]
pub struct Patterns {
    texts: Arc<Vec<String>>,
    matchers: Arc<Vec<GlobMatcher>>,
    /// `*` alone: everything matches, no glob is run.
    any: bool,
}

impl Patterns {
    fn parse(texts: &[String]) -> Result<Self, String> {
        let matchers = texts
            .iter()
            .map(|t| Glob::new(t).map(|g| g.compile_matcher()).map_err(|e| format!("bad pattern {t:?}: {e}")))
            .collect::<Result<_, _>>()?;
        let any = texts.iter().any(|t| t == "*");
        Ok(Patterns { texts: Arc::new(texts.to_vec()), matchers: Arc::new(matchers), any })
    }

    /// Whether `value` matches any pattern.
    pub fn matches(&self, value: &str) -> bool {
        self.any || self.matchers.iter().any(|m| m.is_match(value))
    }

    /// Everything matches.
    pub fn any() -> Self {
        Patterns { texts: Arc::new(vec!["*".to_owned()]), matchers: Arc::new(Vec::new()), any: true }
    }
}

/// One rule of the policy.
#[derive(Debug)]
pub struct Rule {
    /// 1-based position in the file.
    pub number: usize,
    /// The identity pattern.
    pub identity: String,
    identity_matcher: GlobMatcher,
    /// `None`: every RPC (`"*"`).
    rpcs: Option<Vec<Rpc>>,
    pipelines: Patterns,
    kms_keys: Patterns,
    max_key_bits: u32,
    plaintext_export: bool,
    limiter: Option<DefaultKeyedRateLimiter<String>>,
    rate_per_second: u32,
    max_concurrent: Option<usize>,
    require_encrypted_outputs: bool,
}

/// What a caller was granted for one call: checks the details the RPC
/// learns as it goes (pipelines, keys, key lengths, export).
#[derive(Debug, Clone)]
pub struct Grant {
    /// The caller.
    pub identity: String,
    /// The rule that granted it (`None`: no policy is configured).
    pub rule: Option<usize>,
    pipelines: Patterns,
    kms_keys: Patterns,
    max_key_bits: u32,
    /// Whether plaintext may leave the broker for this caller: the rule's
    /// `plaintext_export` under the server's ceiling.
    pub plaintext_export: bool,
    /// The server's `allow_plaintext_export`, the ceiling over every rule.
    server_export: bool,
    /// The rule's cap on the identity's calls in flight.
    max_concurrent: Option<usize>,
    /// Whether the rule names `RewrapKeys`, so other RPCs may rewrap keys
    /// on the caller's behalf.
    rewrap: bool,
    /// Whether the rule refuses MediaConvert jobs with an output group that
    /// is not SSE-KMS encrypted.
    pub require_encrypted_outputs: bool,
}

/// A refusal, naming the missing permission.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denial {
    /// The policy has no rule for this caller, or the rule lacks the RPC,
    /// pipeline, key, length or export.
    #[error("{0}")]
    Forbidden(String),
    /// The caller's rate limit is spent.
    #[error("{identity} is over its rate limit of {rate} calls per second (policy rule {rule}); retry later")]
    RateLimited {
        /// The caller.
        identity: String,
        /// Calls per second.
        rate: u32,
        /// The rule.
        rule: usize,
    },
}

impl Grant {
    /// A grant of everything, for servers without a policy file; plaintext
    /// export follows the server-wide switch.
    pub fn unrestricted(identity: &str, server_export: bool) -> Self {
        Grant {
            identity: identity.to_owned(),
            rule: None,
            pipelines: Patterns::any(),
            kms_keys: Patterns::any(),
            max_key_bits: 256,
            plaintext_export: server_export,
            server_export,
            max_concurrent: None,
            rewrap: true,
            require_encrypted_outputs: false,
        }
    }

    /// Checks the caller may have keys rewrapped for it (its rule names
    /// `RewrapKeys`), as a job that asks to move its inputs' keys needs.
    ///
    /// # Errors
    /// [`Denial::Forbidden`] naming the rule.
    pub fn check_rewrap(&self, what: &str) -> Result<(), Denial> {
        if self.rewrap {
            return Ok(());
        }
        Err(Denial::Forbidden(format!(
            "{} may not have keys rewrapped ({what}): policy rule {} does not name \"RewrapKeys\" in its rpcs",
            self.identity,
            self.rule.unwrap_or_default()
        )))
    }

    /// The rule's cap on the identity's calls in flight (`None`: the
    /// server's `limits.max_concurrent_per_identity`).
    pub fn max_concurrent(&self) -> Option<usize> {
        self.max_concurrent
    }

    fn rule_text(&self) -> String {
        self.rule.map(|n| format!(" (policy rule {n})")).unwrap_or_default()
    }

    /// # Errors
    /// [`Denial::Forbidden`] unless the pipeline is granted.
    pub fn check_pipeline(&self, pipeline: &str) -> Result<(), Denial> {
        if self.pipelines.matches(pipeline) {
            return Ok(());
        }
        Err(Denial::Forbidden(format!(
            "{} may not use pipeline {pipeline}{}: its pipelines are {:?}",
            self.identity,
            self.rule_text(),
            self.pipelines.texts
        )))
    }

    /// # Errors
    /// [`Denial::Forbidden`] unless the KMS key (id, ARN or alias as named)
    /// is granted.
    pub fn check_kms_key(&self, key: &str) -> Result<(), Denial> {
        if self.kms_keys.matches(key) {
            return Ok(());
        }
        Err(Denial::Forbidden(format!(
            "{} may not use KMS key {key}{}: its kms_keys are {:?}",
            self.identity,
            self.rule_text(),
            self.kms_keys.texts
        )))
    }

    /// # Errors
    /// [`Denial::Forbidden`] when `bits` exceeds the rule's maximum.
    pub fn check_key_bits(&self, bits: KeyBits) -> Result<(), Denial> {
        if bits.bits() <= self.max_key_bits {
            return Ok(());
        }
        Err(Denial::Forbidden(format!(
            "{} may not use {}-bit keys{}: its max_key_bits is {}",
            self.identity,
            bits.bits(),
            self.rule_text(),
            self.max_key_bits
        )))
    }

    /// # Errors
    /// [`Denial::Forbidden`] unless plaintext export is granted.
    pub fn check_plaintext_export(&self, what: &str) -> Result<(), Denial> {
        if self.plaintext_export {
            return Ok(());
        }
        let how =
            if self.server_export { "plaintext_export is false" } else { "the server's allow_plaintext_export is off" };
        Err(Denial::Forbidden(format!(
            "{} may not export plaintext keys ({what}){}: {how}",
            self.identity,
            self.rule_text()
        )))
    }
}

/// A parsed policy.
#[derive(Debug)]
pub struct Policy {
    rules: Vec<Rule>,
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].bytes().filter(|&b| b == b'\n').count() + 1
}

impl Policy {
    /// Parses a policy; errors name the line.
    ///
    /// # Errors
    /// A message with the line number.
    pub fn parse(text: &str) -> Result<Self, String> {
        let file: PolicyFile = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|s| line_of(text, s.start)).unwrap_or(0);
            format!("line {line}: {}", e.message())
        })?;
        let mut rules = Vec::with_capacity(file.rule.len());
        for (index, rule) in file.rule.into_iter().enumerate() {
            let at = |span: std::ops::Range<usize>| {
                if span.is_empty() {
                    format!("rule {}", index + 1)
                } else {
                    format!("line {}", line_of(text, span.start))
                }
            };
            let identity = rule.identity.get_ref();
            if !is_identity_pattern(identity) {
                return Err(format!(
                    "{}: identity: {identity:?} names no kind of identity: write spiffe://TRUST-DOMAIN/PATH for a \
                     SPIFFE ID, dns:NAME for a certificate's DNS SAN, or anonymous (globs allowed, * for everyone)",
                    at(rule.identity.span())
                ));
            }
            let identity_matcher = Glob::new(rule.identity.get_ref())
                .map(|g| g.compile_matcher())
                .map_err(|e| format!("{}: identity: {e}", at(rule.identity.span())))?;
            if rule.rpcs.get_ref().is_empty() {
                return Err(format!("{}: rpcs: must name at least one RPC (or \"*\")", at(rule.rpcs.span())));
            }
            let mut rpcs = Some(Vec::new());
            for name in rule.rpcs.get_ref() {
                match (name.as_str(), Rpc::from_name(name)) {
                    ("*", _) => rpcs = None,
                    (_, Some(rpc)) => rpcs.iter_mut().for_each(|granted| granted.push(rpc)),
                    (_, None) => {
                        let known: Vec<&str> = Rpc::ALL.iter().map(|rpc| rpc.name()).collect();
                        return Err(format!(
                            "{}: rpcs: unknown RPC {name:?}; known: {}",
                            at(rule.rpcs.span()),
                            known.join(", ")
                        ));
                    }
                }
            }
            let pipelines = Patterns::parse(rule.pipelines.get_ref())
                .map_err(|e| format!("{}: pipelines: {e}", at(rule.pipelines.span())))?;
            let kms_keys = Patterns::parse(rule.kms_keys.get_ref())
                .map_err(|e| format!("{}: kms_keys: {e}", at(rule.kms_keys.span())))?;
            let max_key_bits = *rule.max_key_bits.get_ref();
            if !matches!(max_key_bits, 128 | 192 | 256) {
                return Err(format!("{}: max_key_bits: must be 128, 192 or 256", at(rule.max_key_bits.span())));
            }
            let limiter = match (&rule.rate_per_second, &rule.burst) {
                (None, None) => None,
                (Some(rate), burst) => {
                    let per_second = NonZeroU32::new(*rate.get_ref())
                        .ok_or_else(|| format!("{}: rate_per_second: must be at least 1", at(rate.span())))?;
                    let burst = match burst {
                        Some(b) => NonZeroU32::new(*b.get_ref())
                            .ok_or_else(|| format!("{}: burst: must be at least 1", at(b.span())))?,
                        None => per_second,
                    };
                    Some(RateLimiter::keyed(Quota::per_second(per_second).allow_burst(burst)))
                }
                (None, Some(burst)) => {
                    return Err(format!("{}: burst: needs rate_per_second", at(burst.span())));
                }
            };
            let max_concurrent = match &rule.max_concurrent {
                Some(cap) if *cap.get_ref() == 0 => {
                    return Err(format!("{}: max_concurrent: must be at least 1", at(cap.span())));
                }
                cap => cap.as_ref().map(|cap| *cap.get_ref()),
            };
            rules.push(Rule {
                number: index + 1,
                identity: rule.identity.into_inner(),
                identity_matcher,
                rpcs,
                pipelines,
                kms_keys,
                max_key_bits,
                plaintext_export: rule.plaintext_export,
                rate_per_second: rule.rate_per_second.as_ref().map_or(0, |r| *r.get_ref()),
                limiter,
                max_concurrent,
                require_encrypted_outputs: rule.require_encrypted_outputs,
            });
        }
        Ok(Policy { rules })
    }

    /// Loads a policy file.
    ///
    /// # Errors
    /// [`PolicyError`] naming the file and line.
    pub fn load(path: &Path) -> Result<Self, PolicyError> {
        let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Io { path: path.to_owned(), source })?;
        Policy::parse(&text).map_err(|message| PolicyError::Invalid { path: path.to_owned(), message })
    }

    /// The number of rules.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// Whether the policy has no rules (and so denies everything).
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Forgets the rate-limit state of identities whose buckets are full
    /// again (as if never seen), so the state grows with the identities
    /// calling now, not with every identity ever seen; answers how many
    /// identities are still tracked.
    pub fn forget_idle_identities(&self) -> usize {
        self.rules
            .iter()
            .filter_map(|rule| rule.limiter.as_ref())
            .map(|limiter| {
                limiter.retain_recent();
                limiter.shrink_to_fit();
                limiter.len()
            })
            .sum()
    }

    /// Decides whether `identity` may call `rpc`, and spends one token of its
    /// rate limit.
    ///
    /// # Errors
    /// [`Denial`] naming the missing permission.
    pub fn authorize(&self, identity: &str, rpc: Rpc) -> Result<Grant, Denial> {
        let Some(rule) = self.rules.iter().find(|r| r.identity_matcher.is_match(identity)) else {
            return Err(Denial::Forbidden(format!("no policy rule matches identity {identity}")));
        };
        match &rule.rpcs {
            Some(granted) if !granted.contains(&rpc) => {
                let names: Vec<&str> = granted.iter().map(|rpc| rpc.name()).collect();
                return Err(Denial::Forbidden(format!(
                    "{identity} may not call {rpc} (policy rule {}): its rpcs are {names:?}",
                    rule.number
                )));
            }
            None if !rpc.granted_by_wildcard() => {
                return Err(Denial::Forbidden(format!(
                    "{identity} may not call {rpc} (policy rule {}): rpcs = [\"*\"] does not grant it; name \"{rpc}\" \
                     in the rule's rpcs",
                    rule.number
                )));
            }
            _ => {}
        }
        if let Some(limiter) = &rule.limiter
            && limiter.check_key(&identity.to_owned()).is_err()
        {
            return Err(Denial::RateLimited {
                identity: identity.to_owned(),
                rate: rule.rate_per_second,
                rule: rule.number,
            });
        }
        Ok(Grant {
            identity: identity.to_owned(),
            rule: Some(rule.number),
            pipelines: rule.pipelines.clone(),
            kms_keys: rule.kms_keys.clone(),
            max_key_bits: rule.max_key_bits,
            plaintext_export: rule.plaintext_export,
            server_export: true,
            max_concurrent: rule.max_concurrent,
            rewrap: rule.rpcs.as_ref().is_some_and(|granted| granted.contains(&Rpc::RewrapKeys)),
            require_encrypted_outputs: rule.require_encrypted_outputs,
        })
    }
}

/// The server's policy, if any, swappable on SIGHUP.
#[derive(Clone, Default)]
pub struct PolicyStore {
    file: Option<PathBuf>,
    current: Arc<RwLock<Option<Arc<Policy>>>>,
}

impl PolicyStore {
    /// No policy: every caller gets [`Grant::unrestricted`].
    pub fn none() -> Self {
        PolicyStore::default()
    }

    /// Loads `path`.
    ///
    /// # Errors
    /// [`PolicyError`] naming the line: an invalid file refuses the start.
    pub fn load(path: &Path) -> Result<Self, PolicyError> {
        let policy = Policy::load(path)?;
        Ok(PolicyStore { file: Some(path.to_owned()), current: Arc::new(RwLock::new(Some(Arc::new(policy)))) })
    }

    /// Reloads the file; an invalid file keeps the old policy.
    ///
    /// # Errors
    /// [`PolicyError`] when the new file is invalid (the old policy stays).
    pub fn reload(&self) -> Result<usize, PolicyError> {
        let Some(path) = &self.file else {
            return Ok(0);
        };
        let policy = Policy::load(path)?;
        let rules = policy.len();
        if let Ok(mut current) = self.current.write() {
            *current = Some(Arc::new(policy));
        }
        Ok(rules)
    }

    /// The policy in force, if any.
    pub fn current(&self) -> Option<Arc<Policy>> {
        self.current.read().map(|c| c.clone()).unwrap_or_else(|poisoned| poisoned.into_inner().clone())
    }

    /// Decides a call: with no policy, everything is granted. Plaintext
    /// export needs the server's `server_export` (`allow_plaintext_export`),
    /// a ceiling no rule can lift, and, with a policy, the rule's
    /// `plaintext_export` too.
    ///
    /// # Errors
    /// [`Denial`].
    pub fn authorize(&self, identity: &str, rpc: Rpc, server_export: bool) -> Result<Grant, Denial> {
        match self.current() {
            Some(policy) => policy.authorize(identity, rpc).map(|grant| Grant {
                plaintext_export: grant.plaintext_export && server_export,
                server_export,
                ..grant
            }),
            None => Ok(Grant::unrestricted(identity, server_export)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: &str = r#"
[[rule]]
identity = "spiffe://example.org/ns/media/sa/encoder"
rpcs = ["IssueDataKey", "SubmitEncryptedJob"]
pipelines = ["1111111111111-*"]
kms_keys = ["arn:aws:kms:us-east-1:111122223333:key/*", "alias/media"]
max_key_bits = 128

[[rule]]
identity = "spiffe://example.org/ns/ops/*"
rpcs = ["*"]
plaintext_export = true
rate_per_second = 1
burst = 2
"#;

    #[test]
    fn the_wildcard_grants_every_rpc_but_those_a_rule_must_name() {
        let star = Policy::parse("[[rule]]\nidentity = \"dns:a\"\nrpcs = [\"*\"]\n").unwrap();
        for rpc in Rpc::ALL {
            let granted = star.authorize("dns:a", rpc);
            assert_eq!(granted.is_ok(), rpc.granted_by_wildcard(), "{rpc}");
            if let Err(denial) = granted {
                assert!(denial.to_string().contains(&format!("name \"{rpc}\"")), "{denial}");
            }
        }
        let named_only: Vec<Rpc> = Rpc::ALL.into_iter().filter(|rpc| !rpc.granted_by_wildcard()).collect();
        assert_eq!(named_only, [Rpc::RewrapKeys, Rpc::ConnectPipeline, Rpc::ConnectMediaConvertRole]);
        assert!(star.authorize("dns:a", Rpc::CheckMediaConvertRole).is_ok());
        let named = Policy::parse(
            "[[rule]]\nidentity = \"dns:a\"\nrpcs = [\"RewrapKeys\", \"ConnectPipeline\", \"ConnectMediaConvertRole\"]\n",
        )
        .unwrap();
        assert!(named.authorize("dns:a", Rpc::RewrapKeys).is_ok());
        assert!(named.authorize("dns:a", Rpc::ConnectPipeline).is_ok());
        assert!(named.authorize("dns:a", Rpc::ConnectMediaConvertRole).is_ok());
    }

    #[test]
    fn first_matching_rule_governs_and_denials_name_the_permission() {
        let policy = Policy::parse(POLICY).unwrap();
        let encoder = "spiffe://example.org/ns/media/sa/encoder";
        let grant = policy.authorize(encoder, Rpc::IssueDataKey).unwrap();
        assert_eq!(grant.rule, Some(1));
        assert!(grant.check_kms_key("alias/media").is_ok());
        let err = grant.check_kms_key("alias/other").unwrap_err().to_string();
        assert!(err.contains("may not use KMS key alias/other"), "{err}");
        assert!(grant.check_key_bits(KeyBits::Aes256).unwrap_err().to_string().contains("max_key_bits is 128"));
        assert!(grant.check_pipeline("2222222222222-abcdef").is_err());
        assert!(grant.check_plaintext_export("UnwrapKey").unwrap_err().to_string().contains("plaintext_export"));
        let err = policy.authorize(encoder, Rpc::UnwrapKey).unwrap_err().to_string();
        assert!(err.contains("may not call UnwrapKey (policy rule 1)"), "{err}");
        let err = policy.authorize("spiffe://evil.org/x", Rpc::IssueDataKey).unwrap_err().to_string();
        assert_eq!(err, "no policy rule matches identity spiffe://evil.org/x");
    }

    #[test]
    fn only_a_rule_naming_rewrap_keys_lets_other_rpcs_rewrap() {
        let policy = Policy::parse(
            "[[rule]]\nidentity = \"dns:a\"\nrpcs = [\"*\"]\n\
             [[rule]]\nidentity = \"dns:b\"\nrpcs = [\"SubmitMediaConvertJob\", \"RewrapKeys\"]\n",
        )
        .unwrap();
        let wildcard = policy.authorize("dns:a", Rpc::SubmitMediaConvertJob).unwrap();
        let err = wildcard.check_rewrap("Settings.Inputs[0]").unwrap_err().to_string();
        assert!(err.contains("does not name \"RewrapKeys\""), "{err}");
        assert!(policy.authorize("dns:b", Rpc::SubmitMediaConvertJob).unwrap().check_rewrap("x").is_ok());
        assert!(Grant::unrestricted("dns:c", false).check_rewrap("x").is_ok());
    }

    #[test]
    fn max_concurrent_is_a_rules_cap_and_must_be_positive() {
        let policy = Policy::parse("[[rule]]\nidentity = \"dns:a\"\nrpcs = [\"*\"]\nmax_concurrent = 3\n").unwrap();
        assert_eq!(policy.authorize("dns:a", Rpc::IssueDataKey).unwrap().max_concurrent(), Some(3));
        let open = Policy::parse("[[rule]]\nidentity = \"dns:a\"\nrpcs = [\"*\"]\n").unwrap();
        assert_eq!(open.authorize("dns:a", Rpc::IssueDataKey).unwrap().max_concurrent(), None);
        let err = Policy::parse("[[rule]]\nidentity = \"dns:a\"\nrpcs = [\"*\"]\nmax_concurrent = 0\n").unwrap_err();
        assert!(err.starts_with("line 4: max_concurrent: must be at least 1"), "{err}");
    }

    #[test]
    fn rate_limits_are_per_identity() {
        let policy = Policy::parse(POLICY).unwrap();
        let a = "spiffe://example.org/ns/ops/sa/a";
        let b = "spiffe://example.org/ns/ops/sa/b";
        assert!(policy.authorize(a, Rpc::UnwrapKey).is_ok());
        assert!(policy.authorize(a, Rpc::UnwrapKey).is_ok());
        assert!(matches!(policy.authorize(a, Rpc::UnwrapKey), Err(Denial::RateLimited { .. })));
        assert!(policy.authorize(b, Rpc::UnwrapKey).is_ok(), "another identity has its own bucket");
    }

    #[test]
    fn rate_limit_state_is_kept_only_for_identities_with_recent_calls() {
        let policy =
            Policy::parse("[[rule]]\nidentity = \"*\"\nrpcs = [\"*\"]\nrate_per_second = 2\nburst = 1\n").unwrap();
        for n in 0..500 {
            policy.authorize(&format!("dns:caller-{n}.example"), Rpc::IssueDataKey).unwrap();
        }
        // A token comes back every 500 ms; a bucket counts as fresh (and is
        // forgotten) two intervals after its last call.
        std::thread::sleep(std::time::Duration::from_millis(1100));
        policy.authorize("dns:busy.example", Rpc::IssueDataKey).unwrap();
        // 500 buckets full again are forgotten; the one spent now is kept.
        assert_eq!(policy.forget_idle_identities(), 1);
        assert!(matches!(policy.authorize("dns:busy.example", Rpc::IssueDataKey), Err(Denial::RateLimited { .. })));
    }

    #[test]
    fn invalid_files_name_the_line() {
        let err = Policy::parse("[[rule]]\nidentity = \"dns:x\"\nrpcs = [\"IssueKey\"]\n").unwrap_err();
        assert!(err.starts_with("line 3: rpcs: unknown RPC \"IssueKey\""), "{err}");
        let err = Policy::parse("[[rule]]\nidentity = \"dns:x\"\nrpcs = [\"*\"]\nmax_key_bits = 512\n").unwrap_err();
        assert!(err.starts_with("line 4: max_key_bits"), "{err}");
        let err = Policy::parse("[[rule]]\nidentity = \"dns:x\"\nrpcz = [\"*\"]\n").unwrap_err();
        assert!(err.starts_with("line 3:") && err.contains("rpcz"), "{err}");
        let err = Policy::parse("[[rule]]\nidentity = \"dns:[\"\nrpcs = [\"*\"]\n").unwrap_err();
        assert!(err.starts_with("line 2: identity"), "{err}");
    }

    #[test]
    fn the_servers_switch_is_a_ceiling_over_every_rule() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("policy.toml");
        std::fs::write(&path, POLICY).unwrap();
        let store = PolicyStore::load(&path).unwrap();
        let ops = "spiffe://example.org/ns/ops/sa/a";
        let closed = store.authorize(ops, Rpc::UnwrapKey, false).unwrap();
        let err = closed.check_plaintext_export("UnwrapKey").unwrap_err().to_string();
        assert!(err.contains("the server's allow_plaintext_export is off"), "{err}");
        assert!(store.authorize(ops, Rpc::UnwrapKey, true).unwrap().check_plaintext_export("UnwrapKey").is_ok());
        let encoder = store.authorize("spiffe://example.org/ns/media/sa/encoder", Rpc::IssueDataKey, true).unwrap();
        let err = encoder.check_plaintext_export("return_plaintext").unwrap_err().to_string();
        assert!(err.contains("plaintext_export is false"), "{err}");
        // Without a policy the switch alone decides.
        assert!(PolicyStore::none().authorize(ops, Rpc::UnwrapKey, true).unwrap().check_plaintext_export("x").is_ok());
        assert!(
            PolicyStore::none().authorize(ops, Rpc::UnwrapKey, false).unwrap().check_plaintext_export("x").is_err()
        );
    }

    #[test]
    fn a_rule_names_the_kind_of_identity_it_means() {
        let err = Policy::parse("[[rule]]\nidentity = \"packager.media.svc\"\nrpcs = [\"*\"]\n").unwrap_err();
        assert!(err.starts_with("line 2: identity: \"packager.media.svc\" names no kind of identity"), "{err}");
        let policy = Policy::parse(
            "[[rule]]\nidentity = \"dns:*.media.svc\"\nrpcs = [\"WrapKey\"]\n\
             [[rule]]\nidentity = \"spiffe://example.org/*\"\nrpcs = [\"*\"]\nplaintext_export = true\n",
        )
        .unwrap();
        assert!(policy.authorize("dns:packager.media.svc", Rpc::WrapKey).is_ok());
        let err = policy.authorize("dns:packager.media.svc", Rpc::UnwrapKey).unwrap_err().to_string();
        assert!(err.contains("may not call UnwrapKey (policy rule 1)"), "{err}");
        // A DNS identity never reaches a SPIFFE rule, whatever its name reads.
        assert!(policy.authorize("dns:spiffe://example.org/ops", Rpc::UnwrapKey).is_err());
        assert!(policy.authorize("spiffe://example.org/ops", Rpc::UnwrapKey).is_ok());
    }

    proptest::proptest! {
        /// Any text parses as a policy or is refused with a line; never a panic.
        #[test]
        fn any_text_parses_or_is_refused(text in "(\\[\\[rule\\]\\]\\n)?(identity|rpcs|burst|rate_per_second|max_key_bits)? ?=? ?\\PC{0,40}\\n?\\PC{0,40}") {
            if let Err(message) = Policy::parse(&text) {
                proptest::prop_assert!(message.starts_with("line ") || message.starts_with("rule "), "{}", message);
            }
        }
    }
}
