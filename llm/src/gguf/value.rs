//! GGUF metadata: typed values and the ordered key → value table.
//!
//! Model loaders ask for a key with a specific type (`llama.block_count` as `u32`, the
//! vocabulary as strings, ...); the typed getters say *which* key had the wrong type instead
//! of silently defaulting, and accept the integer widths different converters have used.

use std::collections::HashMap;
use std::fmt;

use super::GgufError;

/// One metadata value. GGUF arrays are homogeneous; nested arrays are allowed.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    U64(u64),
    I64(i64),
    F32(f32),
    F64(f64),
    Bool(bool),
    String(String),
    Array(Vec<Value>),
}

impl Value {
    /// GGUF's value-type number (`gguf_type`).
    pub fn gguf_type(&self) -> u32 {
        match self {
            Self::U8(_) => 0,
            Self::I8(_) => 1,
            Self::U16(_) => 2,
            Self::I16(_) => 3,
            Self::U32(_) => 4,
            Self::I32(_) => 5,
            Self::F32(_) => 6,
            Self::Bool(_) => 7,
            Self::String(_) => 8,
            Self::Array(_) => 9,
            Self::U64(_) => 10,
            Self::I64(_) => 11,
            Self::F64(_) => 12,
        }
    }

    /// The type's name as error messages print it (`u32`, `string`, `array`, ...).
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::U8(_) => "u8",
            Self::I8(_) => "i8",
            Self::U16(_) => "u16",
            Self::I16(_) => "i16",
            Self::U32(_) => "u32",
            Self::I32(_) => "i32",
            Self::U64(_) => "u64",
            Self::I64(_) => "i64",
            Self::F32(_) => "f32",
            Self::F64(_) => "f64",
            Self::Bool(_) => "bool",
            Self::String(_) => "string",
            Self::Array(_) => "array",
        }
    }

    /// The string, if this is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Self::String(s) => Some(s),
            _ => None,
        }
    }

    /// The elements, if this is an array.
    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Self::Array(a) => Some(a),
            _ => None,
        }
    }

    /// Any integer as `i128` (which holds every GGUF integer exactly); `None` otherwise.
    pub fn as_integer(&self) -> Option<i128> {
        Some(match *self {
            Self::U8(v) => v.into(),
            Self::I8(v) => v.into(),
            Self::U16(v) => v.into(),
            Self::I16(v) => v.into(),
            Self::U32(v) => v.into(),
            Self::I32(v) => v.into(),
            Self::U64(v) => v.into(),
            Self::I64(v) => v.into(),
            _ => return None,
        })
    }

    /// "array of string", "array of u32", "array (empty)", or the scalar type name: what
    /// error messages say was found.
    fn describe(&self) -> String {
        match self {
            Self::Array(a) => match a.first() {
                Some(first) => format!("array of {}", first.type_name()),
                None => "array (empty)".to_owned(),
            },
            other => other.type_name().to_owned(),
        }
    }
}

impl fmt::Display for Value {
    /// Scalars as they are, strings quoted, arrays as `[a, b, ...]` (long arrays shortened).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const SHOWN: usize = 8;
        match self {
            Self::U8(v) => write!(f, "{v}"),
            Self::I8(v) => write!(f, "{v}"),
            Self::U16(v) => write!(f, "{v}"),
            Self::I16(v) => write!(f, "{v}"),
            Self::U32(v) => write!(f, "{v}"),
            Self::I32(v) => write!(f, "{v}"),
            Self::U64(v) => write!(f, "{v}"),
            Self::I64(v) => write!(f, "{v}"),
            Self::F32(v) => write!(f, "{v}"),
            Self::F64(v) => write!(f, "{v}"),
            Self::Bool(v) => write!(f, "{v}"),
            Self::String(s) => write!(f, "{s:?}"),
            Self::Array(a) => {
                f.write_str("[")?;
                for (i, v) in a.iter().take(SHOWN).enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{v}")?;
                }
                if a.len() > SHOWN {
                    write!(f, ", ... ({} elements)", a.len())?;
                }
                f.write_str("]")
            }
        }
    }
}

macro_rules! value_from {
    ($($t:ty => $v:ident),* $(,)?) => {$(
        impl From<$t> for Value {
            fn from(v: $t) -> Self {
                Self::$v(v)
            }
        }
    )*};
}
value_from!(u8 => U8, i8 => I8, u16 => U16, i16 => I16, u32 => U32, i32 => I32, u64 => U64,
    i64 => I64, f32 => F32, f64 => F64, bool => Bool, String => String, Vec<Value> => Array);

impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Self::String(v.to_owned())
    }
}

/// The metadata table: entries in file order, looked up by key. Keys are unique.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Metadata {
    entries: Vec<(String, Value)>,
    index: HashMap<String, usize>,
}

impl Metadata {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends an entry; a key already present is an error (GGUF keys are unique).
    pub fn insert(&mut self, key: String, value: Value) -> Result<(), GgufError> {
        if self.index.contains_key(&key) {
            return Err(GgufError::DuplicateKey { key });
        }
        self.index.insert(key.clone(), self.entries.len());
        self.entries.push((key, value));
        Ok(())
    }

    /// Sets `key`: replaces the value in place if present (keeping its position), appends
    /// it otherwise.
    pub fn set(&mut self, key: String, value: Value) {
        match self.index.get(&key) {
            Some(&i) => {
                if let Some(entry) = self.entries.get_mut(i) {
                    entry.1 = value;
                }
            }
            None => {
                self.index.insert(key.clone(), self.entries.len());
                self.entries.push((key, value));
            }
        }
    }

    /// The number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether `key` is present.
    pub fn contains_key(&self, key: &str) -> bool {
        self.index.contains_key(key)
    }

    /// The value of `key`, of whatever type.
    pub fn get(&self, key: &str) -> Option<&Value> {
        let &i = self.index.get(key)?;
        self.entries.get(i).map(|(_, v)| v)
    }

    /// Entries in file order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// A string value; `Err` if the key holds another type.
    pub fn get_str(&self, key: &str) -> Result<Option<&str>, GgufError> {
        self.typed(key, "string", |v| v.as_str().map(Ok))
    }

    /// A bool value; `Err` if the key holds another type.
    pub fn get_bool(&self, key: &str) -> Result<Option<bool>, GgufError> {
        self.typed(key, "bool", |v| match *v {
            Value::Bool(b) => Some(Ok(b)),
            _ => None,
        })
    }

    /// A non-negative integer of any width; `Err` for other types or negative values.
    pub fn get_u64(&self, key: &str) -> Result<Option<u64>, GgufError> {
        self.typed(key, "integer", |v| {
            v.as_integer()
                .map(|i| u64::try_from(i).map_err(|_| out_of_range(key, v, "u64")))
        })
    }

    /// An integer of any width that fits in `u32`; `Err` for other types or out-of-range values.
    pub fn get_u32(&self, key: &str) -> Result<Option<u32>, GgufError> {
        self.typed(key, "integer", |v| {
            v.as_integer()
                .map(|i| u32::try_from(i).map_err(|_| out_of_range(key, v, "u32")))
        })
    }

    /// An integer of any width that fits in `i64`; `Err` for other types or out-of-range values.
    pub fn get_i64(&self, key: &str) -> Result<Option<i64>, GgufError> {
        self.typed(key, "integer", |v| {
            v.as_integer()
                .map(|i| i64::try_from(i).map_err(|_| out_of_range(key, v, "i64")))
        })
    }

    /// An `f32`, or an `f64` within `f32` range (rounded to the nearest `f32`).
    pub fn get_f32(&self, key: &str) -> Result<Option<f32>, GgufError> {
        self.typed(key, "float", |v| {
            float_to_f32(v).map(|r| r.map_err(|()| out_of_range(key, v, "f32")))
        })
    }

    /// An array of strings (an empty array of any type counts as an empty list).
    pub fn get_str_array(&self, key: &str) -> Result<Option<Vec<&str>>, GgufError> {
        self.array(key, "array of string", |v| v.as_str().map(Ok))
    }

    /// An array of floats (`f32`, or `f64` within `f32` range).
    pub fn get_f32_array(&self, key: &str) -> Result<Option<Vec<f32>>, GgufError> {
        self.array(key, "array of float", |v| {
            float_to_f32(v).map(|r| r.map_err(|()| out_of_range(key, v, "f32")))
        })
    }

    /// An array of integers of any width, each of which fits in `i32`.
    pub fn get_i32_array(&self, key: &str) -> Result<Option<Vec<i32>>, GgufError> {
        self.array(key, "array of integer", |v| {
            v.as_integer()
                .map(|i| i32::try_from(i).map_err(|_| out_of_range(key, v, "i32")))
        })
    }

    /// Looks `key` up and converts it with `conv`, which returns `None` for a wrong type.
    fn typed<'a, T>(
        &'a self,
        key: &str,
        expected: &'static str,
        conv: impl FnOnce(&'a Value) -> Option<Result<T, GgufError>>,
    ) -> Result<Option<T>, GgufError> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        match conv(v) {
            Some(r) => r.map(Some),
            None => Err(wrong_type(key, expected, v)),
        }
    }

    /// Looks `key` up as an array and converts each element with `conv`.
    fn array<'a, T>(
        &'a self,
        key: &str,
        expected: &'static str,
        mut conv: impl FnMut(&'a Value) -> Option<Result<T, GgufError>>,
    ) -> Result<Option<Vec<T>>, GgufError> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        let Some(elements) = v.as_array() else {
            return Err(wrong_type(key, expected, v));
        };
        let mut out = Vec::with_capacity(elements.len());
        for e in elements {
            match conv(e) {
                Some(r) => out.push(r?),
                None => return Err(wrong_type(key, expected, v)),
            }
        }
        Ok(Some(out))
    }
}

fn wrong_type(key: &str, expected: &'static str, found: &Value) -> GgufError {
    GgufError::WrongType {
        key: key.to_owned(),
        expected,
        found: found.describe(),
    }
}

fn out_of_range(key: &str, value: &Value, target: &'static str) -> GgufError {
    GgufError::OutOfRange {
        key: key.to_owned(),
        value: value.to_string(),
        target,
    }
}

/// `Some(Ok)` for an `f32` or an in-range `f64`, `Some(Err)` for an `f64` too large for `f32`,
/// `None` for non-floats. Infinities and NaN pass through.
fn float_to_f32(v: &Value) -> Option<Result<f32, ()>> {
    match *v {
        Value::F32(x) => Some(Ok(x)),
        Value::F64(x) => {
            #[allow(clippy::cast_possible_truncation)] // range-checked just below
            let y = x as f32;
            Some(if y.is_infinite() && x.is_finite() {
                Err(())
            } else {
                Ok(y)
            })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> Metadata {
        let mut m = Metadata::new();
        m.insert("s".into(), "hello".into()).unwrap();
        m.insert("u8".into(), Value::U8(7)).unwrap();
        m.insert("i8neg".into(), Value::I8(-3)).unwrap();
        m.insert("i64big".into(), Value::I64(1 << 40)).unwrap();
        m.insert("u64max".into(), Value::U64(u64::MAX)).unwrap();
        m.insert("f32".into(), Value::F32(1.5)).unwrap();
        m.insert("f64".into(), Value::F64(0.25)).unwrap();
        m.insert("f64huge".into(), Value::F64(1e300)).unwrap();
        m.insert("b".into(), Value::Bool(true)).unwrap();
        m.insert("strs".into(), Value::Array(vec!["a".into(), "b".into()]))
            .unwrap();
        m.insert(
            "ints".into(),
            Value::Array(vec![Value::U8(1), Value::U8(200)]),
        )
        .unwrap();
        m.insert("bigints".into(), Value::Array(vec![Value::U32(u32::MAX)]))
            .unwrap();
        m.insert(
            "floats".into(),
            Value::Array(vec![Value::F32(1.0), Value::F32(-2.0)]),
        )
        .unwrap();
        m.insert("empty".into(), Value::Array(vec![])).unwrap();
        m
    }

    #[test]
    fn typed_getters_convert_and_refuse() {
        let m = table();
        assert_eq!(m.get_str("s").unwrap(), Some("hello"));
        assert_eq!(m.get_str("missing").unwrap(), None);
        assert!(
            matches!(m.get_str("u8"), Err(GgufError::WrongType { ref key, .. }) if key == "u8")
        );
        assert_eq!(m.get_u64("u8").unwrap(), Some(7));
        assert_eq!(m.get_u32("u8").unwrap(), Some(7));
        assert_eq!(m.get_u64("u64max").unwrap(), Some(u64::MAX));
        assert!(matches!(
            m.get_u64("i8neg"),
            Err(GgufError::OutOfRange { .. })
        ));
        assert!(matches!(
            m.get_u32("i64big"),
            Err(GgufError::OutOfRange { .. })
        ));
        assert!(matches!(
            m.get_u32("u64max"),
            Err(GgufError::OutOfRange { .. })
        ));
        assert_eq!(m.get_i64("i8neg").unwrap(), Some(-3));
        assert!(matches!(m.get_u64("s"), Err(GgufError::WrongType { .. })));
        assert_eq!(m.get_f32("f32").unwrap(), Some(1.5));
        assert_eq!(m.get_f32("f64").unwrap(), Some(0.25));
        assert!(matches!(
            m.get_f32("f64huge"),
            Err(GgufError::OutOfRange { .. })
        ));
        assert!(matches!(m.get_f32("u8"), Err(GgufError::WrongType { .. })));
        assert_eq!(m.get_bool("b").unwrap(), Some(true));
        assert!(matches!(m.get_bool("u8"), Err(GgufError::WrongType { .. })));
    }

    #[test]
    fn array_getters() {
        let m = table();
        assert_eq!(m.get_str_array("strs").unwrap(), Some(vec!["a", "b"]));
        assert_eq!(m.get_str_array("empty").unwrap(), Some(vec![]));
        let err = m.get_str_array("ints").unwrap_err();
        assert!(err.to_string().contains("array of u8"), "{err}");
        assert!(matches!(
            m.get_str_array("s"),
            Err(GgufError::WrongType { .. })
        ));
        assert_eq!(m.get_i32_array("ints").unwrap(), Some(vec![1, 200]));
        assert!(matches!(
            m.get_i32_array("bigints"),
            Err(GgufError::OutOfRange { .. })
        ));
        assert_eq!(m.get_f32_array("floats").unwrap(), Some(vec![1.0, -2.0]));
        assert!(matches!(
            m.get_f32_array("ints"),
            Err(GgufError::WrongType { .. })
        ));
        assert_eq!(m.get_f32_array("missing").unwrap(), None);
    }

    #[test]
    fn order_duplicates_and_set() {
        let mut m = table();
        assert!(matches!(
            m.insert("s".into(), Value::U8(0)),
            Err(GgufError::DuplicateKey { .. })
        ));
        m.set("u8".into(), Value::U8(9));
        m.set("new".into(), Value::U8(1));
        let keys: Vec<&str> = m.iter().map(|(k, _)| k).collect();
        assert_eq!(keys.first(), Some(&"s"));
        assert_eq!(keys.get(1), Some(&"u8"));
        assert_eq!(keys.last(), Some(&"new"));
        assert_eq!(m.get("u8"), Some(&Value::U8(9)));
        assert_eq!(m.len(), 15);
        assert!(m.contains_key("new"));
    }

    #[test]
    fn display_shortens_arrays() {
        let v = Value::Array((0..20u32).map(Value::U32).collect());
        assert_eq!(v.to_string(), "[0, 1, 2, 3, 4, 5, 6, 7, ... (20 elements)]");
        assert_eq!(Value::from("x").to_string(), "\"x\"");
    }
}
