//! Plugin configs: turning the JSON the host passes to `init` into [`Plugin::Config`], and
//! [`NoConfig`] for plugins without settings.
//!
//! [`Plugin::Config`]: crate::Plugin::Config

use std::fmt;

use serde::de::{DeserializeOwned, Deserializer, IgnoredAny, MapAccess, Visitor};

/// The config of a plugin without settings: accepts any JSON object and ignores it.
///
/// ```
/// use wasmgate_sdk::{NoConfig, Plugin};
///
/// struct Quiet;
///
/// #[wasmgate_sdk::plugin]
/// impl Plugin for Quiet {
///     type Config = NoConfig;
///
///     fn new(_config: NoConfig) -> Result<Self, String> {
///         Ok(Quiet)
///     }
/// }
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NoConfig;

impl<'de> serde::Deserialize<'de> for NoConfig {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct AnyObject;

        impl<'de> Visitor<'de> for AnyObject {
            type Value = NoConfig;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<NoConfig, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(NoConfig)
            }
        }

        deserializer.deserialize_map(AnyObject)
    }
}

/// Deserialises the config JSON the host passed to `init`, with an error message for the
/// gateway operator that says where the JSON went wrong.
pub(crate) fn parse<C: DeserializeOwned>(json: &str) -> Result<C, String> {
    // serde_json's message carries the line and column of the fault, which the gateway
    // prints as the reason it refuses to start.
    serde_json::from_str(json).map_err(|error| format!("invalid config: {error}"))
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Limits {
        max: u32,
        #[serde(default)]
        names: Vec<String>,
    }

    #[test]
    fn parses_a_valid_config() {
        let limits: Limits = parse(r#"{"max": 3, "names": ["a"]}"#).expect("valid config");
        assert_eq!(limits, Limits { max: 3, names: vec!["a".to_owned()] });
    }

    #[test]
    fn reports_a_wrong_type_with_line_and_column() {
        let error = parse::<Limits>("{\n  \"max\": \"three\"\n}").expect_err("wrong type");
        assert_eq!(error, "invalid config: invalid type: string \"three\", expected u32 at line 2 column 16");
    }

    #[test]
    fn reports_a_missing_field() {
        let error = parse::<Limits>("{}").expect_err("missing field");
        assert_eq!(error, "invalid config: missing field `max` at line 1 column 2");
    }

    #[test]
    fn reports_an_unknown_field() {
        let error = parse::<Limits>(r#"{"max": 1, "mx": 2}"#).expect_err("unknown field");
        assert!(
            error.starts_with("invalid config: unknown field `mx`, expected `max` or `names`"),
            "{error}"
        );
        assert!(error.ends_with("at line 1 column 15"), "{error}");
    }

    #[test]
    fn reports_broken_json() {
        let error = parse::<Limits>(r#"{"max": 1"#).expect_err("broken JSON");
        assert_eq!(error, "invalid config: EOF while parsing an object at line 1 column 9");
    }

    #[test]
    fn no_config_accepts_any_object() {
        assert_eq!(parse::<NoConfig>("{}"), Ok(NoConfig));
        assert_eq!(parse::<NoConfig>(r#"{"a": 1, "b": {"c": [1, 2, null]}, "d": "x"}"#), Ok(NoConfig));
    }

    #[test]
    fn no_config_refuses_what_is_not_an_object() {
        let error = parse::<NoConfig>("[1]").expect_err("an array");
        assert_eq!(
            error,
            "invalid config: invalid type: sequence, expected a JSON object at line 1 column 0"
        );
        assert!(parse::<NoConfig>("7").is_err());
        assert!(parse::<NoConfig>("null").is_err());
    }
}
