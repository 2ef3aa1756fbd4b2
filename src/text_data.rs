//! Text datasets on disk: plain text, or JSON Lines with a text field per record.
//!
//! Bad records (not JSON, missing or non-string field, empty text, invalid UTF-8) are
//! skipped and counted, never fatal: one broken line must not lose a whole dataset.

use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: no usable text ({skipped} records skipped)")]
    Empty { path: String, skipped: usize },
}

/// The texts of a dataset and how many records were skipped.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Texts {
    pub texts: Vec<String>,
    pub skipped: usize,
}

/// Reads `path`: JSON Lines (`.jsonl`, or a first non-blank line that starts with `{`) taking
/// `field` of each record, else the whole file as one text.
pub fn load_texts(path: &Path, field: &str) -> Result<Texts, DataError> {
    load_texts_where(path, field, &[])
}

/// A `key=value` condition on JSONL records (`--where speaker=HAMLET`): records whose `key`
/// is not `value` (a string, or a number of that value) are left out, not counted as
/// skipped.
#[derive(Debug, Clone, PartialEq)]
pub struct Where {
    pub key: String,
    pub value: String,
}

impl std::str::FromStr for Where {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (key, value) = s
            .split_once('=')
            .ok_or_else(|| format!("`{s}` is not key=value"))?;
        Ok(Where {
            key: key.trim().to_string(),
            value: value.to_string(),
        })
    }
}

impl Where {
    fn matches(&self, record: &serde_json::Value) -> bool {
        match record.get(&self.key) {
            Some(serde_json::Value::String(s)) => *s == self.value,
            Some(serde_json::Value::Number(n)) => self.value.parse::<f64>().ok() == n.as_f64(),
            _ => false,
        }
    }
}

/// [`load_texts`], keeping only JSONL records that meet every condition of `filters`.
pub fn load_texts_where(path: &Path, field: &str, filters: &[Where]) -> Result<Texts, DataError> {
    let p = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|source| DataError::Io {
        path: p.clone(),
        source,
    })?;
    let first = bytes
        .split(|&b| b == b'\n')
        .find(|l| !l.iter().all(u8::is_ascii_whitespace));
    let jsonl = path.extension().is_some_and(|e| e == "jsonl")
        || first.is_some_and(|l| l.trim_ascii_start().starts_with(b"{"));
    let out = if jsonl {
        parse_jsonl(&bytes, field, filters)
    } else {
        match String::from_utf8(bytes) {
            Ok(t) if !t.trim().is_empty() => Texts {
                texts: vec![t],
                skipped: 0,
            },
            _ => Texts {
                texts: Vec::new(),
                skipped: 1,
            },
        }
    };
    if out.texts.is_empty() {
        return Err(DataError::Empty {
            path: p,
            skipped: out.skipped,
        });
    }
    Ok(out)
}

fn parse_jsonl(bytes: &[u8], field: &str, filters: &[Where]) -> Texts {
    let mut out = Texts::default();
    for line in bytes.split(|&b| b == b'\n') {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let record = std::str::from_utf8(line)
            .ok()
            .and_then(|l| serde_json::from_str::<serde_json::Value>(l).ok());
        if let Some(r) = &record
            && !filters.iter().all(|f| f.matches(r))
        {
            continue;
        }
        let text = record
            .and_then(|v| v.get(field).and_then(|t| t.as_str()).map(str::to_string))
            .filter(|t| !t.trim().is_empty());
        match text {
            Some(t) => out.texts.push(t),
            None => out.skipped += 1,
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jsonl_skips_and_counts_bad_records() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("d.jsonl");
        let mut data =
            b"{\"text\": \"hello\"}\n\n{\"other\": 1}\nnot json\n{\"text\": \"\"}\n".to_vec();
        data.extend_from_slice(
            b"{\"text\": \"\xff\xfe\"}\n{\"text\": 5}\n{\"text\": \"world\\nline\"}",
        );
        std::fs::write(&p, data).unwrap();
        let t = load_texts(&p, "text").unwrap();
        assert_eq!(
            t.texts,
            vec!["hello".to_string(), "world\nline".to_string()]
        );
        assert_eq!(t.skipped, 5);
    }

    #[test]
    fn where_keeps_matching_records_only() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("d.jsonl");
        std::fs::write(
            &p,
            "{\"who\": \"A\", \"act\": 1, \"text\": \"one\"}\n{\"who\": \"B\", \"act\": 1, \"text\": \"two\"}\n{\"who\": \"A\", \"act\": 2, \"text\": \"three\"}\nbroken\n",
        )
        .unwrap();
        let w = |s: &str| s.parse::<Where>().unwrap();
        let t = load_texts_where(&p, "text", &[w("who=A"), w("act=2")]).unwrap();
        assert_eq!((t.texts, t.skipped), (vec!["three".to_string()], 1));
        assert!(load_texts_where(&p, "text", &[w("who=C")]).is_err());
        assert!("nokey".parse::<Where>().is_err());
    }

    #[test]
    fn plain_text_is_one_text_and_empty_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.txt");
        std::fs::write(&p, "To be, or not to be.\n").unwrap();
        assert_eq!(load_texts(&p, "text").unwrap().texts.len(), 1);
        std::fs::write(&p, "  \n").unwrap();
        assert!(matches!(
            load_texts(&p, "text"),
            Err(DataError::Empty { .. })
        ));
    }
}
