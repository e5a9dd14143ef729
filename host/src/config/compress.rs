//! A route's `compress = { ... }`: the codings it offers clients (gzip, brotli, zstd), the
//! level of each, the content types worth compressing, and the smallest body that is.

use serde::{Deserialize, Serialize};

use super::{defaults, units};

/// A content coding the gateway can compress with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Coding {
    /// `gzip` (RFC 1952).
    Gzip,
    /// `br` (RFC 7932).
    Brotli,
    /// `zstd` (RFC 8878).
    Zstd,
}

impl Coding {
    /// Its `Content-Encoding` token.
    pub fn token(self) -> &'static str {
        match self {
            Coding::Gzip => "gzip",
            Coding::Brotli => "br",
            Coding::Zstd => "zstd",
        }
    }

    /// Every coding, in the order of their metric series.
    pub const ALL: [Coding; 3] = [Coding::Gzip, Coding::Brotli, Coding::Zstd];
}

/// `compress = { ... }` on a route.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CompressConfig {
    /// The codings offered, preferred first when a client accepts several equally.
    #[serde(default = "defaults::compress_codings")]
    pub algorithms: Vec<Coding>,
    /// 1 (fastest) to 9 (smallest).
    #[serde(default = "defaults::gzip_level")]
    pub gzip_level: u32,
    /// 0 (fastest) to 11 (smallest).
    #[serde(default = "defaults::brotli_level")]
    pub brotli_level: u32,
    /// 1 (fastest) to 19 (smallest).
    #[serde(default = "defaults::zstd_level")]
    pub zstd_level: i32,
    /// Media types compressed: `type/subtype`, or `type/*` for all of a type.
    #[serde(default = "defaults::compress_types")]
    pub types: Vec<String>,
    /// Bodies whose `Content-Length` is smaller go as they are (an unsized body is
    /// compressed).
    #[serde(default = "defaults::compress_min_size", with = "units::size")]
    pub min_size: usize,
}

impl CompressConfig {
    /// Checks the levels, the codings and the types; the error names the field.
    pub(super) fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.algorithms.is_empty() {
            return Err(("algorithms", "offer at least one of gzip, brotli, zstd".to_owned()));
        }
        for (i, coding) in self.algorithms.iter().enumerate() {
            if self.algorithms[..i].contains(coding) {
                return Err(("algorithms", format!("`{}` is listed twice", coding.token())));
            }
        }
        let levels = [
            ("gzip_level", i64::from(self.gzip_level), 1, 9),
            ("brotli_level", i64::from(self.brotli_level), 0, 11),
            ("zstd_level", i64::from(self.zstd_level), 1, 19),
        ];
        for (field, level, low, high) in levels {
            if !(low..=high).contains(&level) {
                return Err((field, format!("{level} is not a level from {low} to {high}")));
            }
        }
        if self.types.is_empty() {
            return Err((
                "types",
                "list the media types to compress, e.g. [\"text/*\", \"application/json\"]".to_owned(),
            ));
        }
        for media in &self.types {
            let valid = media.split_once('/').is_some_and(|(kind, sub)| {
                let token = |s: &str| {
                    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
                };
                token(kind) && (sub == "*" || token(sub))
            });
            if !valid {
                return Err(("types", format!("`{media}` is not `type/subtype` or `type/*`")));
            }
        }
        Ok(())
    }
}
