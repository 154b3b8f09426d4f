//! Query-string values of the admin API, parsed as Synapse parses them: every malformed value
//! is `400 M_INVALID_PARAM` with Synapse's message.

use myelin_core::MatrixError;

/// A non-negative integer (negative, or not an integer that fits in 64 bits: refused).
pub(super) fn parse_count(name: &str, value: &str) -> Result<u64, MatrixError> {
    match value.parse::<i64>() {
        Ok(n) if n >= 0 => Ok(n as u64),
        Ok(_) => {
            Err(MatrixError::invalid_param(format!("Query parameter {name:?} must be a positive integer.")))
        }
        Err(_) => Err(MatrixError::invalid_param(format!(
            "Query parameter {name:?} must be a string representing an integer."
        ))),
    }
}

/// A boolean: `true` or `false`, nothing else.
pub(super) fn parse_bool(name: &str, value: &str) -> Result<bool, MatrixError> {
    match value {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(MatrixError::invalid_param(format!(
            "Boolean query parameter {name:?} must be one of ['true', 'false']"
        ))),
    }
}

/// `dir`: `f` (forwards, `true`) or `b`.
pub(super) fn parse_forwards(value: &str) -> Result<bool, MatrixError> {
    match value {
        "f" => Ok(true),
        "b" => Ok(false),
        _ => Err(MatrixError::invalid_param("Query parameter \"dir\" must be one of ['b', 'f']")),
    }
}

/// `order_by`, one of a list's sort orders (`parse` knows them).
pub(super) fn parse_order<T>(value: &str, parse: impl FnOnce(&str) -> Option<T>) -> Result<T, MatrixError> {
    parse(value).ok_or_else(|| {
        MatrixError::invalid_param(format!(
            "Query parameter \"order_by\" must be one of the sort orders, not {value:?}"
        ))
    })
}
