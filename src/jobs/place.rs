//! Where a key block sits in a transcoder's job, e.g. `outputs[3].encryption`:
//! one path in the service's v1 API spelling (for errors) and one in its
//! JSON body spelling (for answers).
//!
//! Service-neutral: it names fields and nothing else. Must never depend on a
//! transcoder's model, validate anything or touch key material.

/// A field's place in a job: its v1 API path (for errors) and its path in
/// the CreateJob JSON (for answers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Place {
    /// e.g. `outputs[3].thumbnail_encryption`
    pub api: String,
    /// e.g. `Outputs[3].ThumbnailEncryption`
    pub json: String,
}

impl Place {
    /// The job's top level.
    pub fn root() -> Self {
        Place { api: String::new(), json: String::new() }
    }

    /// A child field.
    pub fn field(&self, api: &str, json: &str) -> Self {
        let join = |base: &str, name: &str| if base.is_empty() { name.to_owned() } else { format!("{base}.{name}") };
        Place { api: join(&self.api, api), json: join(&self.json, json) }
    }

    /// An element of a list field.
    pub fn item(&self, api: &str, json: &str, index: usize) -> Self {
        let place = self.field(api, json);
        Place { api: format!("{}[{index}]", place.api), json: format!("{}[{index}]", place.json) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_join_both_spellings() {
        let p = Place::root().item("outputs", "Outputs", 3).field("captions", "Captions").item(
            "caption_formats",
            "CaptionFormats",
            1,
        );
        let p = p.field("encryption", "Encryption").field("mode", "Mode");
        assert_eq!(p.api, "outputs[3].captions.caption_formats[1].encryption.mode");
        assert_eq!(p.json, "Outputs[3].Captions.CaptionFormats[1].Encryption.Mode");
    }
}
