//! Durations (`"10ms"`, `"2s"`) and sizes (`"64MiB"`) as operators write them.

/// `humantime` durations: `"250ms"`, `"2s"`, `"1m 30s"`.
pub(super) mod duration {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub(crate) fn serialize<S: Serializer>(value: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*value).to_string())
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map_err(|e| {
            serde::de::Error::custom(format!("`{text}` is not a duration like \"500ms\" or \"2s\": {e}"))
        })
    }
}

/// A duration whose absence means zero (used with `#[serde(default)]`).
pub(super) mod duration_or_zero {
    pub(crate) use super::duration::{deserialize, serialize};
}

/// An optional `humantime` duration.
pub(super) mod option_duration {
    use serde::{Deserializer, Serializer};
    use std::time::Duration;

    pub(crate) fn serialize<S: Serializer>(value: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(d) => super::duration::serialize(d, s),
            None => s.serialize_none(),
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        super::duration::deserialize(d).map(Some)
    }
}

/// An optional byte size.
pub(super) mod option_size {
    use serde::{Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(value: &Option<usize>, s: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(n) => s.serialize_u64(*n as u64),
            None => s.serialize_none(),
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<usize>, D::Error> {
        super::size::deserialize(d).map(Some)
    }
}

/// Byte sizes: a number of bytes, or a string with `KiB`, `MiB` or `GiB`.
pub(super) mod size {
    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(value: &usize, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(*value as u64)
    }

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Bytes(usize),
        Text(String),
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
        match Raw::deserialize(d)? {
            Raw::Bytes(n) => Ok(n),
            Raw::Text(text) => parse(&text)
                .ok_or_else(|| serde::de::Error::custom(format!("`{text}` is not a size like \"64MiB\""))),
        }
    }

    pub(crate) fn parse(text: &str) -> Option<usize> {
        let text = text.trim();
        let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        let shift = match unit.trim() {
            "" | "B" => 0,
            "KiB" => 10,
            "MiB" => 20,
            "GiB" => 30,
            _ => return None,
        };
        number.parse::<usize>().ok()?.checked_mul(1 << shift)
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn sizes() {
            assert_eq!(super::parse("64MiB"), Some(64 << 20));
            assert_eq!(super::parse("512 KiB"), Some(512 << 10));
            assert_eq!(super::parse("100"), Some(100));
            assert_eq!(super::parse("64MB"), None);
            assert_eq!(super::parse("MiB"), None);
        }
    }
}
