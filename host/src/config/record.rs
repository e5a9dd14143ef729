//! A route's `record = { ... }`: where a sample of its requests is written, in the format
//! `wasmgate plugin test` reads, how many, how much of their bodies, and which headers are
//! redacted.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{Check, ConfigError, defaults, units};

/// `record = { path = "requests.jsonl", share = 0.01 }` on a route.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RecordConfig {
    /// The file lines are appended to, relative to the config file's folder unless absolute.
    pub path: PathBuf,
    /// The share of the route's requests recorded, above 0 and at most 1.
    #[serde(default = "defaults::record_share")]
    pub share: f64,
    /// Bytes of each body kept at most.
    #[serde(default = "defaults::record_max_body", with = "units::size")]
    pub max_body: usize,
    /// Headers whose values are written as `[redacted]`.
    #[serde(default = "defaults::record_redact")]
    pub redact: Vec<String>,
    /// Recording stops once the file is this large.
    #[serde(default = "defaults::record_max_file", with = "units::size")]
    pub max_file: usize,
}

impl RecordConfig {
    pub(super) fn validate(&self, field: &str, at: &Check<'_>) -> Result<(), ConfigError> {
        if !(self.share > 0.0 && self.share <= 1.0) {
            return Err(at.invalid(
                format!("{field}.share"),
                format!("{} is not a share above 0 and at most 1", self.share),
            ));
        }
        if self.max_body > defaults::RECORD_MAX_BODY_LIMIT {
            return Err(at.invalid(
                format!("{field}.max_body"),
                format!("at most {} bytes of a body are recorded", defaults::RECORD_MAX_BODY_LIMIT),
            ));
        }
        if let Some(bad) =
            self.redact.iter().find(|name| http::HeaderName::from_bytes(name.as_bytes()).is_err())
        {
            return Err(at.invalid(format!("{field}.redact"), format!("{bad:?} is not a header name")));
        }
        Ok(())
    }
}
