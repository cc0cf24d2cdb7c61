//! The MediaConvert API model (2017-08-29) as botocore ships it, and a
//! checker that holds a rest-json body to it.
//!
//! The model is read from the botocore package of the suite's Python
//! (`KEYBROKER_TEST_PYTHON`, tests/requirements.txt), so the endpoint judges
//! bodies by AWS's own shapes rather than by rules copied into the suite.
//! The checker walks the wire form (camelCase `locationName`s) and reports
//! paths in the member names users write (`Settings.Inputs[0]...`). It
//! rejects members the model does not know, wrong JSON types, enum values
//! outside the list, strings that miss their pattern or length bounds,
//! numbers and lists outside min/max, and absent required members.
//!
//! A missing botocore fails the test that needs the model; nothing skips.

use std::collections::HashMap;
use std::process::Command;
use std::sync::{Mutex, OnceLock};

use serde_json::{Map, Value};

use super::tools::python;

/// The parsed model: shapes by name, plus compiled patterns.
pub struct Model {
    shapes: Map<String, Value>,
    patterns: Mutex<HashMap<String, regex::Regex>>,
}

/// The model, loaded once per test binary.
pub fn model() -> &'static Model {
    static MODEL: OnceLock<Model> = OnceLock::new();
    MODEL.get_or_init(|| {
        let python = python();
        let script = "import botocore.session, json, sys\n\
                      m = botocore.session.get_session().get_service_data('mediaconvert')\n\
                      for s in m['shapes'].values():\n    s.pop('documentation', None)\n    \
                      [v.pop('documentation', None) for v in s.get('members', {}).values()]\n\
                      json.dump({'version': m['metadata']['apiVersion'], 'shapes': m['shapes']}, sys.stdout)";
        let out = Command::new(&python).args(["-c", script]).output().unwrap_or_else(|e| {
            panic!("cannot run {python} ({e}): the MediaConvert endpoint needs botocore (tests/requirements.txt)")
        });
        assert!(
            out.status.success(),
            "{python} cannot load the MediaConvert model from botocore: {}; run ./scripts/test once or set \
             KEYBROKER_TEST_PYTHON to an interpreter with boto3",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        let doc: Value = serde_json::from_slice(&out.stdout).expect("botocore printed JSON");
        assert_eq!(doc["version"], "2017-08-29", "botocore's MediaConvert model is another API version");
        let shapes = doc["shapes"].as_object().expect("model shapes").clone();
        Model { shapes, patterns: Mutex::new(HashMap::new()) }
    })
}

/// One violation: the JSON path in member names, then the rule.
pub type Violation = String;

impl Model {
    /// The shape called `name`.
    pub fn shape(&self, name: &str) -> &Map<String, Value> {
        self.shapes.get(name).and_then(Value::as_object).unwrap_or_else(|| panic!("model has no shape {name}"))
    }

    /// Every shape, by name.
    pub fn shapes(&self) -> &Map<String, Value> {
        &self.shapes
    }

    /// Checks `value` (wire form) against shape `name`; `path` is where it
    /// sits. Answers the first violation in document order.
    ///
    /// # Errors
    /// The violation, `path: rule`.
    pub fn check(&self, value: &Value, name: &str, path: &str) -> Result<(), Violation> {
        let shape = self.shape(name);
        let kind = shape.get("type").and_then(Value::as_str).unwrap_or("");
        match kind {
            "structure" => self.check_structure(value, shape, path),
            "list" => {
                let items = value.as_array().ok_or_else(|| format!("{path}: must be a JSON array"))?;
                bound(shape, items.len() as f64, path, "items")?;
                let member = member_shape(shape, "member");
                for (i, item) in items.iter().enumerate() {
                    self.check(item, member, &format!("{path}[{i}]"))?;
                }
                Ok(())
            }
            "map" => {
                let pairs = value.as_object().ok_or_else(|| format!("{path}: must be a JSON object"))?;
                bound(shape, pairs.len() as f64, path, "pairs")?;
                let key = member_shape(shape, "key");
                let val = member_shape(shape, "value");
                for (k, v) in pairs {
                    self.check(&Value::String(k.clone()), key, &format!("{path} key {k:?}"))?;
                    self.check(v, val, &format!("{path}.{k}"))?;
                }
                Ok(())
            }
            "string" => {
                let text = value.as_str().ok_or_else(|| format!("{path}: must be a JSON string"))?;
                self.check_string(text, shape, path)
            }
            "integer" | "long" => {
                let number = value.as_i64().ok_or_else(|| format!("{path}: must be a JSON integer"))?;
                bound(shape, number as f64, path, "")
            }
            "double" | "float" => {
                let number = value.as_f64().ok_or_else(|| format!("{path}: must be a JSON number"))?;
                bound(shape, number, path, "")
            }
            "boolean" => value.as_bool().map(|_| ()).ok_or_else(|| format!("{path}: must be true or false")),
            "timestamp" => value.as_f64().map(|_| ()).ok_or_else(|| format!("{path}: must be epoch seconds")),
            other => Err(format!("{path}: the checker does not know model type {other:?}")),
        }
    }

    fn check_structure(&self, value: &Value, shape: &Map<String, Value>, path: &str) -> Result<(), Violation> {
        let object = value.as_object().ok_or_else(|| format!("{path}: must be a JSON object"))?;
        let members = shape.get("members").and_then(Value::as_object).cloned().unwrap_or_default();
        let wire: HashMap<String, (&String, &Value)> = members
            .iter()
            .map(|(name, m)| (m.get("locationName").and_then(Value::as_str).unwrap_or(name).to_owned(), (name, m)))
            .collect();
        for (key, item) in object {
            let Some((name, member)) = wire.get(key) else {
                return Err(format!("{}: is not a member of this shape", join(path, key)));
            };
            let member_shape = member.get("shape").and_then(Value::as_str).unwrap_or_default();
            self.check(item, member_shape, &join(path, name))?;
        }
        for required in shape.get("required").and_then(Value::as_array).into_iter().flatten() {
            let name = required.as_str().unwrap_or_default();
            let location =
                members.get(name).and_then(|m| m.get("locationName")).and_then(Value::as_str).unwrap_or(name);
            if !object.contains_key(location) {
                return Err(format!("{}: is required", join(path, name)));
            }
        }
        Ok(())
    }

    fn check_string(&self, text: &str, shape: &Map<String, Value>, path: &str) -> Result<(), Violation> {
        let shown: String = text.chars().take(16).collect();
        if let Some(values) = shape.get("enum").and_then(Value::as_array)
            && !values.iter().any(|v| v.as_str() == Some(text))
        {
            return Err(format!("{path}: {shown:?} is not one of the model's enum values"));
        }
        bound(shape, text.chars().count() as f64, path, "characters")?;
        if let Some(pattern) = shape.get("pattern").and_then(Value::as_str) {
            let mut cache = self.patterns.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if !cache.contains_key(pattern) {
                let compiled = regex::Regex::new(pattern)
                    .unwrap_or_else(|e| panic!("the model's pattern {pattern} does not compile: {e}"));
                cache.insert(pattern.to_owned(), compiled);
            }
            if !cache[pattern].is_match(text) {
                return Err(format!("{path}: {shown:?}... does not match the pattern {pattern}"));
            }
        }
        Ok(())
    }
}

fn member_shape<'a>(shape: &'a Map<String, Value>, which: &str) -> &'a str {
    shape.get(which).and_then(|m| m.get("shape")).and_then(Value::as_str).unwrap_or_default()
}

fn bound(shape: &Map<String, Value>, got: f64, path: &str, unit: &str) -> Result<(), Violation> {
    let unit = if unit.is_empty() { String::new() } else { format!(" {unit}") };
    if let Some(min) = shape.get("min").and_then(Value::as_f64)
        && got < min
    {
        return Err(format!("{path}: {got}{unit} is below the minimum {min}"));
    }
    if let Some(max) = shape.get("max").and_then(Value::as_f64)
        && got > max
    {
        return Err(format!("{path}: {got}{unit} is above the maximum {max}"));
    }
    Ok(())
}

fn join(path: &str, member: &str) -> String {
    if path.is_empty() { member.to_owned() } else { format!("{path}.{member}") }
}
