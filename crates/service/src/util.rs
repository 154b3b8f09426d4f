//! Small helpers: secure random strings and the clock.

use rand::RngExt;
use rand::distr::Alphanumeric;

/// A random string of ASCII letters and digits from a cryptographically secure generator.
pub fn random_string(len: usize) -> String {
    rand::rng().sample_iter(&Alphanumeric).take(len).map(char::from).collect()
}

/// `n` random bytes from a cryptographically secure generator.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    rand::fill(&mut bytes);
    bytes
}

/// Milliseconds since the UNIX epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// A stream position read from a client's token: a decimal integer in `0..i64::MAX`, so that
/// the position after it (`n + 1`, the bound of the next page) still fits in an `i64`. `None`
/// for anything else: signs, overflow, or a position no stream will ever reach.
pub fn parse_position(text: &str) -> Option<i64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse::<i64>().ok().filter(|n| n.checked_add(1).is_some())
}

#[cfg(test)]
mod tests {
    use super::parse_position;

    #[test]
    fn positions_leave_room_for_their_successor() {
        assert_eq!(parse_position("0"), Some(0));
        assert_eq!(parse_position("42"), Some(42));
        assert_eq!(parse_position(&(i64::MAX - 1).to_string()), Some(i64::MAX - 1));
        for bad in [
            "",
            "-1",
            "+1",
            " 1",
            "1.5",
            "9223372036854775807",
            "9223372036854775808",
            "99999999999999999999",
        ] {
            assert_eq!(parse_position(bad), None, "{bad:?}");
        }
    }
}

/// Helpers of the property tests beside each token parser.
#[cfg(test)]
pub(crate) mod prop_support {
    use myelin_core::ErrCode;

    use crate::Error;

    /// `PROPTEST_CASES` cases (256 by default); failing inputs are printed, never persisted.
    pub(crate) fn config() -> proptest::test_runner::Config {
        proptest::test_runner::Config {
            failure_persistence: None,
            ..proptest::test_runner::Config::default()
        }
    }

    /// Whether a parse failed with `M_INVALID_PARAM`.
    pub(crate) fn is_invalid_param<T>(result: &crate::Result<T>) -> bool {
        matches!(result, Err(Error::Matrix(error)) if error.code == ErrCode::InvalidParam)
    }
}
