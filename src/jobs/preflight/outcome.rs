//! A requirement's outcome: pass, fail or unknown, and how two combine.
//!
//! Owns the three words the preflight speaks in. Must never rank unknown
//! above fail: what cannot be seen is not a pass.

/// How a requirement stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Met.
    Pass,
    /// Not met: jobs on the pipeline will fail.
    Fail,
    /// Not visible from the broker.
    Unknown,
}

impl Outcome {
    /// `pass`, `fail` or `unknown`, as logs and the CLI print it.
    pub const fn as_str(self) -> &'static str {
        match self {
            Outcome::Pass => "pass",
            Outcome::Fail => "fail",
            Outcome::Unknown => "unknown",
        }
    }
}

/// The worse of two outcomes: fail, then unknown, then pass.
pub fn worst(a: Outcome, b: Outcome) -> Outcome {
    match (a, b) {
        (Outcome::Fail, _) | (_, Outcome::Fail) => Outcome::Fail,
        (Outcome::Unknown, _) | (_, Outcome::Unknown) => Outcome::Unknown,
        _ => Outcome::Pass,
    }
}
