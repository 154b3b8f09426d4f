//! Engine-neutral values and rows.

use crate::StoreError;

/// One SQL value, as bound to a statement or read from a row.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Null,
    Int(i64),
    Real(f64),
    Bool(bool),
    Text(String),
    Blob(Vec<u8>),
}

impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::Int(v)
    }
}
impl From<i32> for Value {
    fn from(v: i32) -> Self {
        Value::Int(v.into())
    }
}
impl From<u32> for Value {
    fn from(v: u32) -> Self {
        Value::Int(v.into())
    }
}
impl From<u64> for Value {
    /// Values above `i64::MAX` are clamped: no Matrix integer (timestamps, counts) gets there.
    fn from(v: u64) -> Self {
        Value::Int(i64::try_from(v).unwrap_or(i64::MAX))
    }
}
impl From<usize> for Value {
    fn from(v: usize) -> Self {
        Value::Int(i64::try_from(v).unwrap_or(i64::MAX))
    }
}
impl From<f64> for Value {
    fn from(v: f64) -> Self {
        Value::Real(v)
    }
}
impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Value::Bool(v)
    }
}
impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::Text(v)
    }
}
impl From<&String> for Value {
    fn from(v: &String) -> Self {
        Value::Text(v.clone())
    }
}
impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::Text(v.to_owned())
    }
}
impl From<Vec<u8>> for Value {
    fn from(v: Vec<u8>) -> Self {
        Value::Blob(v)
    }
}
impl From<&[u8]> for Value {
    fn from(v: &[u8]) -> Self {
        Value::Blob(v.to_vec())
    }
}
impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Self {
        v.map_or(Value::Null, Into::into)
    }
}

/// Builds a `Vec<Value>` of statement parameters: `params![user_id, 3, true]`.
#[macro_export]
macro_rules! params {
    () => { ::std::vec::Vec::<$crate::Value>::new() };
    ($($value:expr),+ $(,)?) => { ::std::vec![$($crate::Value::from($value)),+] };
}

/// One result row; columns are read by position.
#[derive(Clone, Debug)]
pub struct Row {
    pub(crate) values: Vec<Value>,
}

impl Row {
    pub fn len(&self) -> usize {
        self.values.len()
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    fn value(&self, index: usize) -> Result<&Value, StoreError> {
        self.values
            .get(index)
            .ok_or_else(|| StoreError::Decode(format!("no column {index} in a row of {}", self.values.len())))
    }

    pub fn opt_i64(&self, index: usize) -> Result<Option<i64>, StoreError> {
        match self.value(index)? {
            Value::Null => Ok(None),
            Value::Int(v) => Ok(Some(*v)),
            Value::Bool(v) => Ok(Some(i64::from(*v))),
            Value::Real(v) => Ok(Some(*v as i64)),
            other => Err(StoreError::Decode(format!("column {index}: expected an integer, got {other:?}"))),
        }
    }

    pub fn i64(&self, index: usize) -> Result<i64, StoreError> {
        self.opt_i64(index)?.ok_or_else(|| StoreError::Decode(format!("column {index}: unexpected NULL")))
    }

    pub fn opt_bool(&self, index: usize) -> Result<Option<bool>, StoreError> {
        match self.value(index)? {
            Value::Null => Ok(None),
            Value::Bool(v) => Ok(Some(*v)),
            Value::Int(v) => Ok(Some(*v != 0)),
            other => Err(StoreError::Decode(format!("column {index}: expected a boolean, got {other:?}"))),
        }
    }

    pub fn bool(&self, index: usize) -> Result<bool, StoreError> {
        Ok(self.opt_bool(index)?.unwrap_or(false))
    }

    pub fn opt_string(&self, index: usize) -> Result<Option<String>, StoreError> {
        match self.value(index)? {
            Value::Null => Ok(None),
            Value::Text(v) => Ok(Some(v.clone())),
            Value::Blob(v) => String::from_utf8(v.clone())
                .map(Some)
                .map_err(|_| StoreError::Decode(format!("column {index}: not UTF-8"))),
            other => Err(StoreError::Decode(format!("column {index}: expected text, got {other:?}"))),
        }
    }

    pub fn string(&self, index: usize) -> Result<String, StoreError> {
        self.opt_string(index)?.ok_or_else(|| StoreError::Decode(format!("column {index}: unexpected NULL")))
    }

    pub fn opt_bytes(&self, index: usize) -> Result<Option<Vec<u8>>, StoreError> {
        match self.value(index)? {
            Value::Null => Ok(None),
            Value::Blob(v) => Ok(Some(v.clone())),
            Value::Text(v) => Ok(Some(v.clone().into_bytes())),
            other => Err(StoreError::Decode(format!("column {index}: expected bytes, got {other:?}"))),
        }
    }

    pub fn opt_f64(&self, index: usize) -> Result<Option<f64>, StoreError> {
        match self.value(index)? {
            Value::Null => Ok(None),
            Value::Real(v) => Ok(Some(*v)),
            Value::Int(v) => Ok(Some(*v as f64)),
            other => Err(StoreError::Decode(format!("column {index}: expected a number, got {other:?}"))),
        }
    }

    /// Parses a JSON text column.
    pub fn json<T: serde::de::DeserializeOwned>(&self, index: usize) -> Result<T, StoreError> {
        let text = self.string(index)?;
        serde_json::from_str(&text).map_err(|e| StoreError::Decode(format!("column {index}: bad JSON: {e}")))
    }
}
