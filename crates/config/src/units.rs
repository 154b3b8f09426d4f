//! Synapse's value shapes for sizes and durations.
//!
//! A size is an integer number of bytes or a string with a `K`/`M`/`G`/`T` suffix (powers of
//! 1024). A duration is an integer number of milliseconds or a string with an `s`/`m`/`h`/`d`/
//! `w`/`y` suffix.

use serde::{Deserialize, Deserializer, de};

/// A number of bytes, written as `52428800` or `"50M"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

/// A span of time in milliseconds, written as `3600000` or `"1h"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct DurationMs(pub u64);

impl DurationMs {
    pub fn as_duration(self) -> std::time::Duration {
        std::time::Duration::from_millis(self.0)
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum IntOrString {
    Int(u64),
    String(String),
}

fn parse_with_suffix(value: &str, suffixes: &[(char, u64)], what: &str) -> Result<u64, String> {
    let value = value.trim();
    let (digits, multiplier) = match value.chars().last() {
        Some(last) => match suffixes.iter().find(|(suffix, _)| *suffix == last) {
            Some((_, multiplier)) => (&value[..value.len() - last.len_utf8()], *multiplier),
            None => (value, 1),
        },
        None => return Err(format!("empty {what}")),
    };
    let number: u64 = digits.trim().parse().map_err(|_| {
        format!(
            "invalid {what} {value:?}: expected a number with an optional suffix ({})",
            suffixes.iter().map(|(s, _)| s.to_string()).collect::<Vec<_>>().join(", ")
        )
    })?;
    number.checked_mul(multiplier).ok_or_else(|| format!("{what} {value:?} is too large"))
}

impl ByteSize {
    pub fn parse(value: &str) -> Result<Self, String> {
        const SUFFIXES: &[(char, u64)] = &[('K', 1 << 10), ('M', 1 << 20), ('G', 1 << 30), ('T', 1 << 40)];
        parse_with_suffix(value, SUFFIXES, "byte size").map(ByteSize)
    }
}

impl DurationMs {
    pub fn parse(value: &str) -> Result<Self, String> {
        const SECOND: u64 = 1000;
        const DAY: u64 = 24 * 3600 * SECOND;
        const SUFFIXES: &[(char, u64)] = &[
            ('s', SECOND),
            ('m', 60 * SECOND),
            ('h', 3600 * SECOND),
            ('d', DAY),
            ('w', 7 * DAY),
            ('y', 365 * DAY),
        ];
        parse_with_suffix(value, SUFFIXES, "duration").map(DurationMs)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match IntOrString::deserialize(deserializer)
            .map_err(|_| de::Error::custom("expected a byte size such as 52428800 or \"50M\""))?
        {
            IntOrString::Int(n) => Ok(ByteSize(n)),
            IntOrString::String(s) => ByteSize::parse(&s).map_err(de::Error::custom),
        }
    }
}

impl<'de> Deserialize<'de> for DurationMs {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match IntOrString::deserialize(deserializer)
            .map_err(|_| de::Error::custom("expected a duration such as 3600000 or \"1h\""))?
        {
            IntOrString::Int(n) => Ok(DurationMs(n)),
            IntOrString::String(s) => DurationMs::parse(&s).map_err(de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_follow_synapse_suffixes() {
        assert_eq!(ByteSize::parse("50M"), Ok(ByteSize(50 * 1024 * 1024)));
        assert_eq!(ByteSize::parse("10K"), Ok(ByteSize(10240)));
        assert_eq!(ByteSize::parse("123"), Ok(ByteSize(123)));
        assert!(ByteSize::parse("50Q").is_err());
        assert!(ByteSize::parse("").is_err());
        assert!(ByteSize::parse("99999999999T").is_err());
    }

    #[test]
    fn durations_follow_synapse_suffixes() {
        assert_eq!(DurationMs::parse("1h"), Ok(DurationMs(3_600_000)));
        assert_eq!(DurationMs::parse("2d"), Ok(DurationMs(172_800_000)));
        assert_eq!(DurationMs::parse("30s"), Ok(DurationMs(30_000)));
        assert_eq!(DurationMs::parse("500"), Ok(DurationMs(500)));
        assert!(DurationMs::parse("1x").is_err());
    }

    #[test]
    fn sizes_deserialize_from_ints_and_strings() {
        let size: ByteSize = serde_json::from_str("\"2G\"").unwrap();
        assert_eq!(size, ByteSize(2 << 30));
        let size: ByteSize = serde_json::from_str("42").unwrap();
        assert_eq!(size, ByteSize(42));
        assert!(serde_json::from_str::<ByteSize>("true").is_err());
    }
}
