//! The two spellings of one MediaConvert document: users (the AWS CLI's
//! `--cli-input-json`, the SDKs) write member names (`Settings.Inputs`),
//! the rest-json wire carries each member's `locationName`
//! (`settings.inputs`).
//!
//! Owns the mapping. In the 2017-08-29 model every `locationName` is its
//! member name with the first letter lowered, and the only maps (whose keys
//! are the caller's own names, never renamed) are the members listed in
//! [`MAP_MEMBERS`]; the suite holds both facts to the botocore model. Must
//! never rename a map's keys.

use serde_json::{Map, Value};

/// The members whose values are maps keyed by the caller's names.
pub const MAP_MEMBERS: [&str; 6] =
    ["AudioSelectorGroups", "AudioSelectors", "CaptionSelectors", "DynamicAudioSelectors", "Tags", "UserMetadata"];

/// The wire form of a document written in member names.
pub fn to_wire(value: &Value) -> Value {
    match value {
        Value::Object(members) => Value::Object(
            members
                .iter()
                .map(|(name, item)| {
                    let wire = if MAP_MEMBERS.contains(&name.as_str()) { map_to_wire(item) } else { to_wire(item) };
                    (location_name(name), wire)
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(to_wire).collect()),
        other => other.clone(),
    }
}

/// A map member's value: its keys kept, its values converted.
fn map_to_wire(value: &Value) -> Value {
    match value {
        Value::Object(pairs) => Value::Object(pairs.iter().map(|(k, v)| (k.clone(), to_wire(v))).collect()),
        other => to_wire(other),
    }
}

/// A member's `locationName`.
pub fn location_name(member: &str) -> String {
    let mut chars = member.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// The member-name form of a wire document (MediaConvert's answers).
pub fn from_wire(value: &Value) -> Value {
    match value {
        Value::Object(members) => {
            let mut out = Map::with_capacity(members.len());
            for (wire, item) in members {
                let name = member_name(wire);
                let converted = if MAP_MEMBERS.contains(&name.as_str()) {
                    match item {
                        Value::Object(pairs) => {
                            Value::Object(pairs.iter().map(|(k, v)| (k.clone(), from_wire(v))).collect())
                        }
                        other => from_wire(other),
                    }
                } else {
                    from_wire(item)
                };
                out.insert(name, converted);
            }
            Value::Object(out)
        }
        Value::Array(items) => Value::Array(items.iter().map(from_wire).collect()),
        other => other.clone(),
    }
}

fn member_name(wire: &str) -> String {
    let mut chars = wire.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn members_are_renamed_and_map_keys_kept() {
        let user = json!({
            "Role": "r",
            "UserMetadata": {"Team": "x"},
            "Settings": {"Inputs": [{"FileInput": "s3://b/k", "AudioSelectors": {"Audio Selector 1": {"DefaultSelection": "DEFAULT"}}}]}
        });
        let wire = to_wire(&user);
        assert_eq!(
            wire,
            json!({
                "role": "r",
                "userMetadata": {"Team": "x"},
                "settings": {"inputs": [{"fileInput": "s3://b/k", "audioSelectors": {"Audio Selector 1": {"defaultSelection": "DEFAULT"}}}]}
            })
        );
        assert_eq!(from_wire(&wire), user);
    }
}
