//! Text datasets on disk: plain text, or JSON Lines with a text field per record.
//!
//! Bad records (not JSON, missing or non-string field, empty text, invalid UTF-8) are
//! skipped and counted, never fatal: one broken line must not lose a whole dataset.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Longest JSONL record read by default: 4 MiB (a phone's message, a chat, a document).
pub const DEFAULT_MAX_RECORD_BYTES: usize = 4 << 20;

static MAX_RECORD_BYTES: AtomicUsize = AtomicUsize::new(DEFAULT_MAX_RECORD_BYTES);

/// Sets the longest JSONL record read (`--max-record-bytes`); longer records are skipped and
/// counted without being parsed, so one huge line cannot take the memory of a whole run.
pub fn set_max_record_bytes(bytes: usize) {
    MAX_RECORD_BYTES.store(bytes.max(1), Ordering::Relaxed);
}

/// The longest JSONL record read, in bytes.
pub fn max_record_bytes() -> usize {
    MAX_RECORD_BYTES.load(Ordering::Relaxed)
}

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
/// skipped. Conditions on the same key are alternatives (`--where play=hamlet --where
/// play=othello`: either play); conditions on different keys must all hold.
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
    /// Whether `record` meets `filters` (same key: any of them; different keys: all).
    pub fn all_match(filters: &[Where], record: &serde_json::Value) -> bool {
        filters
            .iter()
            .all(|f| filters.iter().any(|g| g.key == f.key && g.matches(record)))
    }

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

/// Each non-blank line of JSON Lines `bytes` as a JSON value, or `None` when it is not UTF-8,
/// not JSON, or longer than [`max_record_bytes`] (not parsed at all; logged with its size).
pub fn json_lines(bytes: &[u8]) -> impl Iterator<Item = Option<serde_json::Value>> + '_ {
    let max = max_record_bytes();
    bytes
        .split(|&b| b == b'\n')
        .filter(|line| !line.iter().all(u8::is_ascii_whitespace))
        .map(move |line| {
            if line.len() > max {
                tracing::warn!(
                    bytes = line.len(),
                    max_record_bytes = max,
                    "record longer than --max-record-bytes skipped"
                );
                return None;
            }
            std::str::from_utf8(line)
                .ok()
                .and_then(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        })
}

/// The `field` texts of JSON Lines `bytes` whose records meet `filters` (bad records skipped
/// and counted).
pub fn parse_jsonl(bytes: &[u8], field: &str, filters: &[Where]) -> Texts {
    let mut out = Texts::default();
    for record in json_lines(bytes) {
        if let Some(r) = &record
            && !Where::all_match(filters, r)
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

/// The JSONL fields that make a federated record: whose it is, its text and (for
/// smart reply) the reply to it.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordFields {
    /// The client field; `a+b` joins several fields' values with `/` (`play+speaker`).
    pub client: String,
    pub text: String,
    pub reply: Option<String>,
}

/// One usable record.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// The client field's value (a string, or a number written as text).
    pub client: String,
    pub text: String,
    pub reply: Option<String>,
}

/// The usable records of a dataset and how many were skipped.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Records {
    pub records: Vec<Record>,
    pub skipped: usize,
}

impl Records {
    /// The number of distinct clients.
    pub fn n_clients(&self) -> usize {
        let mut ids: Vec<&str> = self.records.iter().map(|r| r.client.as_str()).collect();
        ids.sort_unstable();
        ids.dedup();
        ids.len()
    }
}

/// Reads JSON Lines records from `path` (see [`parse_records`]).
pub fn load_records(path: &Path, fields: &RecordFields) -> Result<Records, DataError> {
    let p = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|source| DataError::Io {
        path: p.clone(),
        source,
    })?;
    let out = parse_records(&bytes, fields);
    if out.records.is_empty() {
        return Err(DataError::Empty {
            path: p,
            skipped: out.skipped,
        });
    }
    Ok(out)
}

/// The records of JSON Lines `bytes`: a line that is not UTF-8 or not a JSON object, or whose
/// client field is missing, or whose text (or reply, when asked for) is missing, not a string
/// or blank, is skipped and counted. Blank lines are not records.
pub fn parse_records(bytes: &[u8], fields: &RecordFields) -> Records {
    let mut out = Records::default();
    for record in json_lines(bytes) {
        match record.and_then(|r| read_record(&r, fields)) {
            Some(r) => out.records.push(r),
            None => out.skipped += 1,
        }
    }
    out
}

fn read_record(r: &serde_json::Value, fields: &RecordFields) -> Option<Record> {
    let text_of = |field: &str| {
        r.get(field)
            .and_then(|t| t.as_str())
            .filter(|t| !t.trim().is_empty())
            .map(str::to_string)
    };
    let mut client = String::new();
    for (i, key) in fields.client.split('+').enumerate() {
        if i > 0 {
            client.push('/');
        }
        match r.get(key)? {
            serde_json::Value::String(s) if !s.is_empty() => client.push_str(s),
            serde_json::Value::Number(n) => client.push_str(&n.to_string()),
            _ => return None,
        }
    }
    let reply = match &fields.reply {
        Some(f) => Some(text_of(f)?),
        None => None,
    };
    Some(Record {
        client,
        text: text_of(&fields.text)?,
        reply,
    })
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

    /// A record longer than the limit is skipped and counted without being parsed.
    #[test]
    fn records_above_the_size_limit_are_skipped() {
        let huge = format!("{{\"text\": \"{}\"}}", "a".repeat(DEFAULT_MAX_RECORD_BYTES));
        let data = format!("{{\"text\": \"small\"}}\n{huge}\n{{\"text\": \"end\"}}\n");
        let t = parse_jsonl(data.as_bytes(), "text", &[]);
        assert_eq!(t.texts, ["small", "end"]);
        assert_eq!(t.skipped, 1);
        let fields = RecordFields {
            client: "text".into(),
            text: "text".into(),
            reply: None,
        };
        assert_eq!(parse_records(data.as_bytes(), &fields).skipped, 1);
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
        let either = load_texts_where(&p, "text", &[w("who=B"), w("act=1"), w("who=A")]).unwrap();
        assert_eq!(either.texts, vec!["one".to_string(), "two".to_string()]);
        assert!("nokey".parse::<Where>().is_err());
    }

    #[test]
    fn records_need_a_client_and_a_text_and_bad_lines_are_counted() {
        let mut data = b"{\"who\": \"A\", \"text\": \"hi\", \"re\": \"yo\"}\n\n".to_vec();
        data.extend_from_slice(b"{\"who\": 7, \"text\": \"num\"}\n{\"text\": \"no client\"}\n");
        data.extend_from_slice(
            b"{\"who\": \"B\", \"text\": \"  \"}\n{\"who\": \"B\", \"text\": \"\xff\"}\n",
        );
        data.extend_from_slice(
            b"[1, 2]\n{\"who\": null, \"text\": \"x\"}\n{\"who\": \"A\", \"text\": \"again\"}",
        );
        let fields = RecordFields {
            client: "who".into(),
            text: "text".into(),
            reply: None,
        };
        let r = parse_records(&data, &fields);
        let got: Vec<(&str, &str)> = r
            .records
            .iter()
            .map(|r| (r.client.as_str(), r.text.as_str()))
            .collect();
        assert_eq!(got, [("A", "hi"), ("7", "num"), ("A", "again")]);
        assert_eq!((r.skipped, r.n_clients()), (5, 2));
        let with_reply = parse_records(
            &data,
            &RecordFields {
                reply: Some("re".into()),
                ..fields
            },
        );
        assert_eq!(with_reply.records.len(), 1);
        assert_eq!(with_reply.records[0].reply.as_deref(), Some("yo"));
        let joined = parse_records(
            b"{\"a\": \"x\", \"b\": 2, \"t\": \"hi\"}\n{\"a\": \"x\", \"t\": \"no b\"}",
            &RecordFields {
                client: "a+b".into(),
                text: "t".into(),
                reply: None,
            },
        );
        assert_eq!(
            (joined.records[0].client.as_str(), joined.skipped),
            ("x/2", 1)
        );
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
