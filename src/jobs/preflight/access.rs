//! Whether a principal may use a KMS key, as far as KMS itself shows it:
//! the key policy's statements and the key's grants.
//!
//! Owns the reading of key-policy JSON and grant lists into pass, fail or
//! unknown. Pure: no AWS calls. Must never call a delegation to the
//! account (an `Allow` by the account root, which hands the decision to
//! IAM policies KMS does not show) or a conditional statement a pass.

use std::collections::BTreeMap;

use serde_json::Value;

use super::outcome::Outcome;

/// Who is asking to use the key: an IAM role or user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The IAM ARN (`arn:aws:iam::ACCOUNT:role/NAME`, `…:user/NAME`).
    pub arn: String,
    /// The account the principal is in.
    pub account: String,
    /// For a role known only by name (an STS assumed-role ARN, which
    /// drops the role's path): the role name, matched against any path.
    pub role_name: Option<String>,
}

impl Principal {
    /// The principal of an IAM ARN, or of an STS caller ARN
    /// (`arn:aws:sts::ACCOUNT:assumed-role/ROLE/NAME` becomes the role).
    pub fn parse(arn: &str) -> Option<Principal> {
        let mut parts = arn.splitn(6, ':');
        let (Some("arn"), Some(partition), Some(service), Some(_region), Some(account), Some(resource)) =
            (parts.next(), parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return None;
        };
        if account.is_empty() {
            return None;
        }
        match service {
            "iam" => Some(Principal { arn: arn.to_owned(), account: account.to_owned(), role_name: None }),
            "sts" => {
                let mut segments = resource.split('/');
                match (segments.next(), segments.next()) {
                    (Some("assumed-role"), Some(role)) => Some(Principal {
                        arn: format!("arn:{partition}:iam::{account}:role/{role}"),
                        account: account.to_owned(),
                        role_name: Some(role.to_owned()),
                    }),
                    (Some("user"), Some(_)) => Some(Principal {
                        arn: format!("arn:{partition}:iam::{account}:{resource}"),
                        account: account.to_owned(),
                        role_name: None,
                    }),
                    _ => None,
                }
            }
            _ => None,
        }
    }

    /// How a principal named in a policy or grant covers this one.
    fn covered_by(&self, named: &str) -> Cover {
        if named == "*" {
            return Cover::Everyone;
        }
        if named == self.arn {
            return Cover::Exact;
        }
        if named == self.account || named.ends_with(&format!(":iam::{}:root", self.account)) {
            return Cover::Account;
        }
        if let Some(name) = &self.role_name
            && named.contains(&format!(":iam::{}:role/", self.account))
            && named.rsplit('/').next() == Some(name.as_str())
        {
            return Cover::Exact;
        }
        Cover::No
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cover {
    No,
    Exact,
    Everyone,
    Account,
}

/// A grant as `ListGrants` answers it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GrantFacts {
    /// `GrantId`.
    pub id: String,
    /// `GranteePrincipal`.
    pub grantee: String,
    /// `Operations` (`Decrypt`, `Encrypt`, …).
    pub operations: Vec<String>,
    /// `Constraints.EncryptionContextSubset`.
    pub context_subset: Option<BTreeMap<String, String>>,
    /// `Constraints.EncryptionContextEquals`.
    pub context_equals: Option<BTreeMap<String, String>>,
}

impl GrantFacts {
    /// Whether the grant lets `principal` do `operation` under `context`.
    pub fn allows(&self, principal: &Principal, operation: &str, context: &BTreeMap<String, String>) -> bool {
        let operation = operation.trim_start_matches("kms:");
        principal.covered_by(&self.grantee) == Cover::Exact
            && self.operations.iter().any(|op| op == operation)
            && self.context_subset.as_ref().is_none_or(|subset| subset.iter().all(|(k, v)| context.get(k) == Some(v)))
            && self.context_equals.as_ref().is_none_or(|equals| equals == context)
    }
}

/// What KMS shows of `principal`'s right to `action` (`kms:Decrypt`) on a
/// key, under `context`: pass (a statement or grant allows it outright),
/// fail (nothing allows it, or a statement denies it), or unknown (an
/// `Allow` to the account leaves it to IAM, or conditions decide).
///
/// `policy` is the key policy's JSON, `None` when it could not be read.
pub fn access(
    policy: Option<&str>,
    grants: &[GrantFacts],
    principal: &Principal,
    action: &str,
    context: &BTreeMap<String, String>,
) -> (Outcome, String) {
    let who = &principal.arn;
    let statements = policy.map(|p| statements(p, context));
    if let Some(Err(e)) = &statements {
        return (Outcome::Unknown, format!("the key policy is not readable JSON ({e})"));
    }
    let statements = statements.and_then(Result::ok).unwrap_or_default();
    let mut conditional = None;
    let mut delegated = None;
    let mut allowed = None;
    for statement in &statements {
        if !statement.matches_action(action) {
            continue;
        }
        let cover = statement.principals.iter().map(|p| principal.covered_by(p)).max_by_key(|c| rank(*c));
        let Some(cover) = cover.filter(|c| *c != Cover::No) else {
            continue;
        };
        let sid = statement.sid.clone();
        match (statement.allow, statement.conditional, cover) {
            (false, false, _) => {
                return (Outcome::Fail, format!("key policy statement {sid:?} denies {who} {action}"));
            }
            (_, true, _) => conditional = conditional.or(Some(sid)),
            (true, false, Cover::Account) => delegated = delegated.or(Some(sid)),
            (true, false, _) => allowed = allowed.or(Some(sid)),
        }
    }
    if let Some(sid) = allowed {
        return (Outcome::Pass, format!("key policy statement {sid:?} allows {who} {action}"));
    }
    if let Some(grant) = grants.iter().find(|g| g.allows(principal, action, context)) {
        return (Outcome::Pass, format!("grant {} lets {who} {action} under {}", grant.id, context_name(context)));
    }
    if let Some(sid) = conditional {
        return (
            Outcome::Unknown,
            format!(
                "key policy statement {sid:?} decides {who} {action} under conditions the broker does not evaluate"
            ),
        );
    }
    if let Some(sid) = delegated {
        return (
            Outcome::Unknown,
            format!(
                "key policy statement {sid:?} allows account {} and leaves {who} {action} to its IAM policies, \
                 which KMS does not show",
                principal.account
            ),
        );
    }
    if policy.is_none() {
        return (Outcome::Unknown, format!("the key policy could not be read and no grant lets {who} {action}"));
    }
    (Outcome::Fail, format!("neither the key policy nor a grant lets {who} {action}"))
}

/// How a detail names an encryption context: a transcoder's by the
/// service's name, any other by its pairs.
pub fn context_name(context: &BTreeMap<String, String>) -> String {
    match (context.len(), context.get("service").map(String::as_str)) {
        (1, Some("elastictranscoder.amazonaws.com")) => "the Elastic Transcoder context".to_owned(),
        (1, Some("mediaconvert.amazonaws.com")) => "the MediaConvert context".to_owned(),
        (0, _) => "no encryption context".to_owned(),
        _ => format!("the encryption context {context:?}"),
    }
}

fn rank(cover: Cover) -> u8 {
    match cover {
        Cover::No => 0,
        Cover::Account => 1,
        Cover::Everyone => 2,
        Cover::Exact => 3,
    }
}

/// One statement, as far as access needs it.
struct Statement {
    sid: String,
    allow: bool,
    principals: Vec<String>,
    actions: Vec<String>,
    /// `NotAction`: the statement covers every action but these.
    not_actions: bool,
    /// Has a `Condition` (or a `NotPrincipal`, which is not evaluated).
    conditional: bool,
    /// Has a `Condition` at all.
    has_condition: bool,
    /// Its condition is false under the context: it does not apply.
    fails_under_context: bool,
}

impl Statement {
    fn matches_action(&self, action: &str) -> bool {
        let hit = self.actions.iter().any(|pattern| glob(&pattern.to_ascii_lowercase(), &action.to_ascii_lowercase()));
        hit != self.not_actions
    }
}

fn strings(value: Option<&Value>) -> Vec<String> {
    match value {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).map(str::to_owned).collect(),
        _ => Vec::new(),
    }
}

/// Whether a statement's `Condition` holds for a call under `context`:
/// `None` when it tests anything but encryption-context keys with
/// `StringEquals` or `StringLike` (the broker does not evaluate that).
fn condition_holds(condition: &Value, context: &BTreeMap<String, String>) -> Option<bool> {
    let mut holds = true;
    for (operator, tests) in condition.as_object()? {
        let like = match operator.as_str() {
            "StringEquals" => false,
            "StringLike" => true,
            _ => return None,
        };
        for (key, wanted) in tests.as_object()? {
            let lower = key.to_ascii_lowercase();
            let name = lower.strip_prefix("kms:encryptioncontext:")?;
            let actual = context.iter().find(|(k, _)| k.to_ascii_lowercase() == name).map(|(_, v)| v);
            holds &= actual.is_some_and(|actual| {
                strings(Some(wanted)).iter().any(|w| if like { glob(w, actual) } else { w == actual })
            });
        }
    }
    Some(holds)
}

/// [`access`] for calls whose encryption context the broker cannot know in
/// advance (S3's SSE-KMS calls for MediaConvert's outputs carry S3's or the
/// job's context): judged as a call without one, except that a statement
/// or grant that allows it under some encryption context turns a fail into
/// unknown.
pub fn access_under_any_context(
    policy: Option<&str>,
    grants: &[GrantFacts],
    principal: &Principal,
    action: &str,
) -> (Outcome, String) {
    let none = BTreeMap::new();
    let (outcome, detail) = access(policy, grants, principal, action, &none);
    if outcome != Outcome::Fail || detail.contains(" denies ") {
        return (outcome, detail);
    }
    let who = &principal.arn;
    let unbound = |g: &GrantFacts| GrantFacts { context_subset: None, context_equals: None, ..g.clone() };
    if let Some(grant) = grants.iter().find(|g| unbound(g).allows(principal, action, &none)) {
        return (
            Outcome::Unknown,
            format!(
                "grant {} lets {who} {action} only under its encryption context constraint, which the broker cannot \
                 match to the calls S3 makes",
                grant.id
            ),
        );
    }
    let bound = policy.and_then(|p| every_statement(p, &none).ok()).and_then(|all| {
        all.into_iter().find(|s| {
            s.allow
                && s.has_condition
                && s.matches_action(action)
                && s.principals.iter().any(|p| principal.covered_by(p) != Cover::No)
        })
    });
    if let Some(statement) = bound {
        return (
            Outcome::Unknown,
            format!(
                "key policy statement {:?} allows {who} {action} only under a condition the broker cannot match to \
                 the calls S3 makes",
                statement.sid
            ),
        );
    }
    (outcome, detail)
}

fn statements(policy: &str, context: &BTreeMap<String, String>) -> Result<Vec<Statement>, serde_json::Error> {
    // A statement whose condition fails under the context does not apply.
    Ok(every_statement(policy, context)?.into_iter().filter(|s| !s.fails_under_context).collect())
}

fn every_statement(policy: &str, context: &BTreeMap<String, String>) -> Result<Vec<Statement>, serde_json::Error> {
    let document: Value = serde_json::from_str(policy)?;
    let list = match document.get("Statement") {
        Some(Value::Array(items)) => items.clone(),
        Some(one @ Value::Object(_)) => vec![one.clone()],
        _ => Vec::new(),
    };
    Ok(list
        .iter()
        .enumerate()
        .map(|(index, s)| {
            let principals = match s.get("Principal") {
                Some(Value::String(star)) => vec![star.clone()],
                Some(Value::Object(map)) => strings(map.get("AWS")),
                _ => Vec::new(),
            };
            let not_actions = s.get("NotAction").is_some();
            Statement {
                sid: s.get("Sid").and_then(Value::as_str).map_or_else(|| format!("#{}", index + 1), str::to_owned),
                allow: s.get("Effect").and_then(Value::as_str) == Some("Allow"),
                principals,
                actions: strings(if not_actions { s.get("NotAction") } else { s.get("Action") }),
                not_actions,
                conditional: s.get("Condition").is_some_and(|c| condition_holds(c, context).is_none())
                    || s.get("NotPrincipal").is_some(),
                has_condition: s.get("Condition").is_some(),
                fails_under_context: s.get("Condition").is_some_and(|c| condition_holds(c, context) == Some(false)),
            }
        })
        .collect())
}

/// IAM's action wildcards: `*` any run, `?` one character.
fn glob(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti, mut star, mut mark) = (0, 0, None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROLE: &str = "arn:aws:iam::111122223333:role/Elastic_Transcoder_Default_Role";

    fn role() -> Principal {
        Principal::parse(ROLE).unwrap()
    }

    fn et() -> BTreeMap<String, String> {
        [("service".to_owned(), "elastictranscoder.amazonaws.com".to_owned())].into()
    }

    fn policy(statement: Value) -> String {
        serde_json::json!({ "Version": "2012-10-17", "Statement": [statement] }).to_string()
    }

    #[test]
    fn a_statement_naming_the_role_passes_and_the_account_root_is_unknown() {
        let named = policy(serde_json::json!({
            "Sid": "users", "Effect": "Allow", "Principal": { "AWS": [ROLE] },
            "Action": ["kms:Encrypt", "kms:Decrypt"], "Resource": "*"
        }));
        assert_eq!(access(Some(&named), &[], &role(), "kms:Decrypt", &et()).0, Outcome::Pass);
        let root = policy(serde_json::json!({
            "Effect": "Allow", "Principal": { "AWS": "arn:aws:iam::111122223333:root" }, "Action": "kms:*"
        }));
        let (outcome, detail) = access(Some(&root), &[], &role(), "kms:Decrypt", &et());
        assert_eq!(outcome, Outcome::Unknown, "{detail}");
        assert!(detail.contains("IAM policies"), "{detail}");
        // Another account's root covers nothing of this role.
        let other = policy(serde_json::json!({
            "Effect": "Allow", "Principal": { "AWS": "arn:aws:iam::999999999999:root" }, "Action": "kms:*"
        }));
        assert_eq!(access(Some(&other), &[], &role(), "kms:Decrypt", &et()).0, Outcome::Fail);
    }

    #[test]
    fn a_deny_fails_a_condition_is_unknown_and_the_wrong_action_fails() {
        let deny = serde_json::json!({
            "Version": "2012-10-17",
            "Statement": [
                { "Effect": "Allow", "Principal": { "AWS": ROLE }, "Action": "kms:*" },
                { "Sid": "no", "Effect": "Deny", "Principal": "*", "Action": "kms:Decrypt" }
            ]
        })
        .to_string();
        assert_eq!(access(Some(&deny), &[], &role(), "kms:Decrypt", &et()).0, Outcome::Fail);
        let conditional = policy(serde_json::json!({
            "Effect": "Allow", "Principal": { "AWS": ROLE }, "Action": "kms:Decrypt",
            "Condition": { "Bool": { "kms:GrantIsForAWSResource": "true" } }
        }));
        assert_eq!(access(Some(&conditional), &[], &role(), "kms:Decrypt", &et()).0, Outcome::Unknown);
        let encrypt_only = policy(serde_json::json!({
            "Effect": "Allow", "Principal": { "AWS": ROLE }, "Action": "kms:Encrypt"
        }));
        assert_eq!(access(Some(&encrypt_only), &[], &role(), "kms:Decrypt", &et()).0, Outcome::Fail);
        let et_only = policy(serde_json::json!({
            "Effect": "Allow", "Principal": { "AWS": ROLE }, "Action": "kms:Decrypt",
            "Condition": { "StringEquals": { "kms:EncryptionContext:service": "elastictranscoder.amazonaws.com" } }
        }));
        assert_eq!(access(Some(&et_only), &[], &role(), "kms:Decrypt", &et()).0, Outcome::Pass);
        let mediaconvert_only = policy(serde_json::json!({
            "Effect": "Allow", "Principal": { "AWS": ROLE }, "Action": "kms:Decrypt",
            "Condition": { "StringEquals": { "kms:EncryptionContext:service": "mediaconvert.amazonaws.com" } }
        }));
        assert_eq!(access(Some(&mediaconvert_only), &[], &role(), "kms:Decrypt", &et()).0, Outcome::Fail);
        let wildcard = policy(serde_json::json!({
            "Effect": "Allow", "Principal": { "AWS": ROLE }, "Action": "kms:De*"
        }));
        assert_eq!(access(Some(&wildcard), &[], &role(), "kms:Decrypt", &et()).0, Outcome::Pass);
    }

    #[test]
    fn a_grant_passes_only_for_its_grantee_operation_and_a_context_et_satisfies() {
        let grant = GrantFacts {
            id: "g".into(),
            grantee: ROLE.into(),
            operations: vec!["Decrypt".into()],
            context_subset: Some(et()),
            context_equals: None,
        };
        let empty = policy(serde_json::json!({ "Effect": "Allow", "Principal": { "AWS": "x" }, "Action": "kms:*" }));
        assert_eq!(access(Some(&empty), std::slice::from_ref(&grant), &role(), "kms:Decrypt", &et()).0, Outcome::Pass);
        assert_eq!(access(Some(&empty), std::slice::from_ref(&grant), &role(), "kms:Encrypt", &et()).0, Outcome::Fail);
        let other_context = GrantFacts {
            context_subset: Some([("service".to_owned(), "mediaconvert.amazonaws.com".to_owned())].into()),
            ..grant.clone()
        };
        assert_eq!(access(Some(&empty), &[other_context], &role(), "kms:Decrypt", &et()).0, Outcome::Fail);
        let other_role = GrantFacts { grantee: "arn:aws:iam::111122223333:role/Other".into(), ..grant };
        assert_eq!(access(Some(&empty), &[other_role], &role(), "kms:Decrypt", &et()).0, Outcome::Fail);
        assert_eq!(access(None, &[], &role(), "kms:Decrypt", &et()).0, Outcome::Unknown);
    }

    #[test]
    fn a_grant_or_statement_bound_to_a_context_is_unknown_for_calls_of_any_context() {
        let encrypt = |context_subset| GrantFacts {
            id: "g".into(),
            grantee: ROLE.into(),
            operations: vec!["GenerateDataKey".into()],
            context_subset,
            context_equals: None,
        };
        let empty = policy(serde_json::json!({ "Effect": "Allow", "Principal": { "AWS": "x" }, "Action": "kms:*" }));
        let open = [encrypt(None)];
        let (outcome, detail) = access_under_any_context(Some(&empty), &open, &role(), "kms:GenerateDataKey");
        assert_eq!(
            (outcome, detail.as_str()),
            (Outcome::Pass, &*format!("grant g lets {ROLE} kms:GenerateDataKey under no encryption context"))
        );
        let bound = [encrypt(Some(et()))];
        let (outcome, detail) = access_under_any_context(Some(&empty), &bound, &role(), "kms:GenerateDataKey");
        assert_eq!(outcome, Outcome::Unknown, "{detail}");
        assert!(detail.contains("only under its encryption context constraint"), "{detail}");
        assert_eq!(access_under_any_context(Some(&empty), &bound, &role(), "kms:Encrypt").0, Outcome::Fail);
        let conditioned = policy(serde_json::json!({
            "Sid": "s3", "Effect": "Allow", "Principal": { "AWS": ROLE }, "Action": "kms:GenerateDataKey",
            "Condition": { "StringEquals": { "kms:EncryptionContext:aws:s3:arn": "arn:aws:s3:::out" } }
        }));
        let (outcome, detail) = access_under_any_context(Some(&conditioned), &[], &role(), "kms:GenerateDataKey");
        assert_eq!(outcome, Outcome::Unknown, "{detail}");
        assert!(detail.starts_with("key policy statement \"s3\" allows"), "{detail}");
        assert_eq!(access_under_any_context(Some(&empty), &[], &role(), "kms:GenerateDataKey").0, Outcome::Fail);
    }

    #[test]
    fn contexts_are_named_by_their_service() {
        assert_eq!(context_name(&et()), "the Elastic Transcoder context");
        let mc = [("service".to_owned(), "mediaconvert.amazonaws.com".to_owned())].into();
        assert_eq!(context_name(&mc), "the MediaConvert context");
        assert_eq!(context_name(&BTreeMap::new()), "no encryption context");
    }

    #[test]
    fn sts_callers_become_their_role_or_user() {
        let assumed = Principal::parse("arn:aws:sts::123456789012:assumed-role/broker/i-0abc").unwrap();
        assert_eq!(assumed.arn, "arn:aws:iam::123456789012:role/broker");
        assert_eq!(assumed.covered_by("arn:aws:iam::123456789012:role/services/broker"), Cover::Exact);
        let user = Principal::parse("arn:aws:sts::123456789012:user/moto").unwrap();
        assert_eq!(user.arn, "arn:aws:iam::123456789012:user/moto");
        assert!(Principal::parse("not-an-arn").is_none());
    }
}
