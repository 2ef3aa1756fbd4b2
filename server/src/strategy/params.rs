//! A strategy's `KEY=VALUE` settings (Flower's constructor arguments), as given with
//! `--param` on the command line or in a job file's `[strategy]` table.

use std::collections::{BTreeMap, BTreeSet};

use super::StrategyError;

/// Settings by name, kept as given until a strategy reads them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Params {
    values: BTreeMap<String, String>,
}

impl Params {
    /// Parses `KEY=VALUE` items; a key given twice is an error rather than a silent override.
    pub fn parse<S: AsRef<str>>(items: &[S]) -> Result<Self, StrategyError> {
        let mut params = Params::default();
        for item in items {
            let item = item.as_ref();
            let (key, value) = item.split_once('=').ok_or_else(|| StrategyError::Param {
                key: item.to_string(),
                why: "expected KEY=VALUE".into(),
            })?;
            params.insert(key.trim(), value.trim())?;
        }
        Ok(params)
    }

    /// Adds one setting.
    pub fn insert(&mut self, key: &str, value: &str) -> Result<(), StrategyError> {
        if key.is_empty() {
            return Err(StrategyError::Param {
                key: key.into(),
                why: "empty key".into(),
            });
        }
        if self.values.insert(key.into(), value.into()).is_some() {
            return Err(StrategyError::Param {
                key: key.into(),
                why: "given twice".into(),
            });
        }
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    pub(crate) fn reader(&self) -> Reader<'_> {
        Reader {
            params: self,
            known: BTreeSet::new(),
        }
    }
}

/// Reads settings one by one and, at the end, refuses any it was never asked for (a typo
/// must not fall back to a default unnoticed).
pub(crate) struct Reader<'a> {
    params: &'a Params,
    known: BTreeSet<&'static str>,
}

impl Reader<'_> {
    /// A real number, `default` when absent, refused unless `ok` holds (`rule` says what).
    pub fn f64(
        &mut self,
        key: &'static str,
        default: f64,
        ok: impl Fn(f64) -> bool,
        rule: &str,
    ) -> Result<f64, StrategyError> {
        self.known.insert(key);
        let Some(raw) = self.params.values.get(key) else {
            return Ok(default);
        };
        let bad = |why: String| StrategyError::Param {
            key: key.into(),
            why,
        };
        let v: f64 = raw
            .parse()
            .map_err(|_| bad(format!("`{raw}` is not a number")))?;
        if !v.is_finite() || !ok(v) {
            return Err(bad(format!("{v} is out of range: {rule}")));
        }
        Ok(v)
    }

    /// A count, `default` when absent.
    pub fn count(&mut self, key: &'static str, default: usize) -> Result<usize, StrategyError> {
        self.known.insert(key);
        let Some(raw) = self.params.values.get(key) else {
            return Ok(default);
        };
        raw.parse().map_err(|_| StrategyError::Param {
            key: key.into(),
            why: format!("`{raw}` is not a whole number ≥ 0"),
        })
    }

    /// Refuses settings the strategy does not have.
    pub fn finish(self, strategy: &str) -> Result<(), StrategyError> {
        match self
            .params
            .values
            .keys()
            .find(|k| !self.known.contains(k.as_str()))
        {
            None => Ok(()),
            Some(k) => Err(StrategyError::Param {
                key: k.clone(),
                why: format!(
                    "`{strategy}` has no such setting (it takes: {})",
                    if self.known.is_empty() {
                        "none".to_string()
                    } else {
                        self.known.iter().copied().collect::<Vec<_>>().join(", ")
                    }
                ),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_defaults_values_and_refuses_typos_and_bad_values() {
        let p = Params::parse(&["eta=0.5", "tau = 1e-3"]).unwrap();
        let mut r = p.reader();
        assert_eq!(r.f64("eta", 0.1, |v| v > 0.0, "> 0").unwrap(), 0.5);
        assert_eq!(r.f64("tau", 1e-9, |v| v > 0.0, "> 0").unwrap(), 1e-3);
        assert_eq!(r.f64("beta_1", 0.9, |_| true, "").unwrap(), 0.9);
        r.finish("fedadam").unwrap();

        let p = Params::parse(&["etta=0.5"]).unwrap();
        let mut r = p.reader();
        r.f64("eta", 0.1, |_| true, "").unwrap();
        let err = r.finish("fedadam").unwrap_err().to_string();
        assert!(err.contains("etta") && err.contains("eta"), "{err}");

        let p = Params::parse(&["eta=-1"]).unwrap();
        assert!(p.reader().f64("eta", 0.1, |v| v > 0.0, "> 0").is_err());
        let p = Params::parse(&["eta=nan"]).unwrap();
        assert!(p.reader().f64("eta", 0.1, |_| true, "").is_err());
        assert!(Params::parse(&["eta"]).is_err());
        assert!(Params::parse(&["eta=1", "eta=2"]).is_err());
        let p = Params::parse(&["num_malicious_clients=1.5"]).unwrap();
        assert!(p.reader().count("num_malicious_clients", 0).is_err());
    }
}
