//! Updates staged on disk for rules that need them all at once (median, trimmed mean, Krum,
//! Bulyan): each update is appended to an unlinked temporary file as it arrives and the file
//! is memory-mapped when the round ends, so the server holds O(model) memory plus a bounded
//! write buffer whatever the cohort size; the disk holds K × model × 4 bytes for the round.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use fedtune_proto::{Bundle, TensorSpec};
use memmap2::Mmap;

use super::{Aggregate, Aggregator, FedAvg, RankFill, Strategy, StrategyError};

/// A rule over every update of the round at once (the robust rules, FlexLoRA's product
/// mean).
pub trait StagedRule: Send + Sync + Clone + std::fmt::Debug + 'static {
    fn name(&self) -> &'static str;
    /// The rule's settings as `key=value` pairs, for the record of which rule ran.
    fn settings(&self) -> Vec<(&'static str, String)> {
        Vec::new()
    }
    /// The aggregate (one value per model element, tensors concatenated in manifest order).
    fn combine(&self, rows: &Rows) -> Result<Vec<f64>, StrategyError>;
    /// See [`Strategy::rank_fill`].
    fn rank_fill(&self) -> RankFill {
        RankFill::KeepGlobal
    }
}

/// A strategy that stages every update and combines them with its [`StagedRule`]; the
/// result is applied like FedAvg's mean (global + aggregate).
#[derive(Debug, Clone)]
pub struct StagedStrategy<R: StagedRule> {
    rule: R,
    staging: PathBuf,
}

impl<R: StagedRule> StagedStrategy<R> {
    pub fn new(rule: R) -> Self {
        StagedStrategy {
            rule,
            staging: std::env::temp_dir(),
        }
    }
}

impl<R: StagedRule> Strategy for StagedStrategy<R> {
    fn name(&self) -> &'static str {
        self.rule.name()
    }

    fn describe(&self) -> String {
        describe(self.rule.name(), &self.rule.settings())
    }

    fn needs_individual_updates(&self) -> bool {
        true
    }

    fn stage_in(&mut self, dir: &Path) {
        self.staging = dir.to_path_buf();
    }

    fn rank_fill(&self) -> RankFill {
        self.rule.rank_fill()
    }

    fn aggregator(&self, global: &Bundle) -> Box<dyn Aggregator> {
        Box::new(Staged::new(global, &self.staging, self.rule.clone()))
    }

    fn apply(&mut self, global: &Bundle, aggregate: Aggregate) -> Result<Bundle, StrategyError> {
        FedAvg.apply(global, aggregate)
    }
}

/// `name key=value ...`.
pub(crate) fn describe(name: &str, settings: &[(&'static str, String)]) -> String {
    let mut s = name.to_string();
    for (k, v) in settings {
        s.push_str(&format!(" {k}={v}"));
    }
    s
}

/// The aggregator of a [`StagedStrategy`].
#[derive(Debug)]
pub struct Staged<R> {
    global: Bundle,
    specs: Vec<TensorSpec>,
    dir: PathBuf,
    file: Option<(File, BufWriter<File>)>,
    weights: Vec<f64>,
    rule: R,
}

impl<R: StagedRule> Staged<R> {
    pub fn new(global: &Bundle, dir: &Path, rule: R) -> Self {
        Staged {
            global: global.clone(),
            specs: global.manifest(),
            dir: dir.to_path_buf(),
            file: None,
            weights: Vec::new(),
            rule,
        }
    }

    /// The staging file, created on the first update and unlinked at once: it is gone
    /// when the aggregator is dropped or the process dies, whatever happens.
    fn writer(&mut self) -> Result<&mut BufWriter<File>, StrategyError> {
        if self.file.is_none() {
            static NEXT: AtomicU64 = AtomicU64::new(0);
            let path = self.dir.join(format!(
                ".fedtune-staged-{}-{}.f32",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ));
            let io = |source| StrategyError::Staging {
                dir: self.dir.clone(),
                source,
            };
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&path)
                .map_err(io)?;
            std::fs::remove_file(&path).map_err(io)?;
            let writer = BufWriter::with_capacity(1 << 20, file.try_clone().map_err(io)?);
            self.file = Some((file, writer));
        }
        match self.file.as_mut() {
            Some((_, w)) => Ok(w),
            None => Err(StrategyError::Empty),
        }
    }
}

impl<R: StagedRule> Aggregator for Staged<R> {
    fn fold(&mut self, update: &Bundle, weight: f64) -> Result<(), StrategyError> {
        super::check_update(&self.specs, update, weight)?;
        let dir = self.dir.clone();
        let w = self.writer()?;
        for t in update.tensors() {
            w.write_all(bytemuck::cast_slice(&t.to_f32()))
                .map_err(|source| StrategyError::Staging {
                    dir: dir.clone(),
                    source,
                })?;
        }
        self.weights.push(weight);
        Ok(())
    }

    fn count(&self) -> usize {
        self.weights.len()
    }

    fn finish(mut self: Box<Self>) -> Result<Aggregate, StrategyError> {
        let Some((file, mut writer)) = self.file.take() else {
            return Err(StrategyError::Empty);
        };
        let io = |source| StrategyError::Staging {
            dir: self.dir.clone(),
            source,
        };
        writer.flush().map_err(io)?;
        drop(writer);
        let rows = Rows::map(
            &file,
            self.global.clone(),
            std::mem::take(&mut self.weights),
        )
        .map_err(io)?;
        let flat = self.rule.combine(&rows)?;
        let mut mean = Vec::with_capacity(self.specs.len());
        let mut rest = flat.as_slice();
        for spec in &self.specs {
            let (head, tail) = rest.split_at(spec.numel());
            mean.push(head.to_vec());
            rest = tail;
        }
        Ok(Aggregate {
            mean,
            total_weight: rows.weights.iter().sum(),
            count: rows.count(),
        })
    }
}

/// The staged updates: `count()` rows of `numel` f32 values (the tensors of the round's
/// global model, concatenated in manifest order), with their weights.
#[derive(Debug)]
pub struct Rows {
    map: Mmap,
    global: Bundle,
    numel: usize,
    weights: Vec<f64>,
}

/// Model elements per column block: rows are read block by block, so a pass over all
/// updates touches `count × COLUMN_BLOCK` values at a time.
pub const COLUMN_BLOCK: usize = 1 << 14;

impl Rows {
    fn map(file: &File, global: Bundle, weights: Vec<f64>) -> std::io::Result<Self> {
        let numel = global.numel();
        // SAFETY: the file was unlinked when it was created and only this aggregator holds
        // it; nothing else can change it while it is mapped.
        #[allow(unsafe_code)]
        let map = unsafe { Mmap::map(file)? };
        if map.len() != numel * weights.len() * 4 {
            return Err(std::io::Error::other("staged file has the wrong length"));
        }
        Ok(Rows {
            map,
            global,
            numel,
            weights,
        })
    }

    /// The round's global model (the updates are differences from it).
    pub fn global(&self) -> &Bundle {
        &self.global
    }

    /// Where each tensor of the global model lies in a row, by name.
    pub fn layout(&self) -> Vec<(&str, std::ops::Range<usize>)> {
        let mut start = 0;
        self.global
            .tensors()
            .iter()
            .map(|t| {
                let range = start..start + t.numel();
                start = range.end;
                (t.name(), range)
            })
            .collect()
    }

    /// Updates staged.
    pub fn count(&self) -> usize {
        self.weights.len()
    }

    /// Elements per update.
    pub fn numel(&self) -> usize {
        self.numel
    }

    /// Update `i`'s weight (its example count under FedAvg weighting).
    pub fn weight(&self, i: usize) -> f64 {
        self.weights[i]
    }

    /// Update `i`'s values in `range` (page-aligned mapping, so the f32 cast is aligned).
    pub fn row(&self, i: usize, range: std::ops::Range<usize>) -> &[f32] {
        let bytes = &self.map[(i * self.numel + range.start) * 4..(i * self.numel + range.end) * 4];
        bytemuck::cast_slice(bytes)
    }

    /// Calls `f(j, values)` for every element `j` with the `values` of the rows in `which`
    /// at `j` (in the order of `which`), reading the rows one column block at a time.
    pub fn for_each_column(&self, which: &[usize], mut f: impl FnMut(usize, &mut [f64])) {
        let mut column = vec![0.0; which.len()];
        for start in (0..self.numel).step_by(COLUMN_BLOCK) {
            let end = (start + COLUMN_BLOCK).min(self.numel);
            let blocks: Vec<&[f32]> = which.iter().map(|&i| self.row(i, start..end)).collect();
            for j in 0..end - start {
                for (c, b) in column.iter_mut().zip(&blocks) {
                    *c = f64::from(b[j]);
                }
                f(start + j, &mut column);
            }
        }
    }

    /// Weighted mean of the rows in `which` (weights from [`Rows::weight`]).
    pub fn weighted_mean(&self, which: &[usize]) -> Vec<f64> {
        let total: f64 = which.iter().map(|&i| self.weights[i]).sum();
        let mut sum = vec![0.0; self.numel];
        for &i in which {
            let w = self.weights[i];
            for (s, &v) in sum.iter_mut().zip(self.row(i, 0..self.numel)) {
                *s += f64::from(v) * w;
            }
        }
        sum.iter_mut().for_each(|s| *s /= total);
        sum
    }

    /// Squared Euclidean distances between every pair of rows (a `count × count` matrix).
    pub fn squared_distances(&self) -> Vec<Vec<f64>> {
        let k = self.count();
        let mut upper = vec![0.0; k * k];
        for start in (0..self.numel).step_by(COLUMN_BLOCK) {
            let end = (start + COLUMN_BLOCK).min(self.numel);
            for i in 0..k {
                let a = self.row(i, start..end);
                for j in i + 1..k {
                    upper[i * k + j] += squared_distance(a, self.row(j, start..end));
                }
            }
        }
        (0..k)
            .map(|i| (0..k).map(|j| upper[i.min(j) * k + i.max(j)]).collect())
            .collect()
    }
}

/// Σ (a − b)² in f64.
fn squared_distance(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(&x, &y)| {
            let t = f64::from(x) - f64::from(y);
            t * t
        })
        .sum()
}

/// The median of `values` (the mean of the two middle ones for an even count), as NumPy's
/// `median` gives it; reorders `values`.
pub fn median(values: &mut [f64]) -> f64 {
    let n = values.len();
    values.sort_unstable_by(f64::total_cmp);
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use fedtune_proto::Tensor;

    /// Stages `rows` (each split into tensors of 2 and `len − 2` values) with `weights`.
    pub(crate) fn staged_rows(rows: &[Vec<f32>], weights: &[f64]) -> Rows {
        let n = rows[0].len();
        let bundle = |v: &[f32]| {
            Bundle::new(vec![
                Tensor::from_f32("a", vec![2], &v[..2]).unwrap(),
                Tensor::from_f32("b", vec![n - 2], &v[2..]).unwrap(),
            ])
            .unwrap()
        };
        let dir = tempfile::tempdir().unwrap();
        let mut s = Staged::new(&bundle(&rows[0]), dir.path(), Noop);
        for (r, &w) in rows.iter().zip(weights) {
            s.fold(&bundle(r), w).unwrap();
        }
        let (file, mut writer) = s.file.take().unwrap();
        writer.flush().unwrap();
        Rows::map(&file, bundle(&rows[0]), weights.to_vec()).unwrap()
    }

    #[derive(Debug, Clone)]
    struct Noop;
    impl StagedRule for Noop {
        fn name(&self) -> &'static str {
            "noop"
        }
        fn combine(&self, rows: &Rows) -> Result<Vec<f64>, StrategyError> {
            Ok(rows.weighted_mean(&(0..rows.count()).collect::<Vec<_>>()))
        }
    }

    #[test]
    fn rows_read_back_as_folded_and_the_file_leaves_nothing_behind() {
        let rows = vec![vec![1.0, 2.0, 3.0, 4.0], vec![-1.0, 0.5, 0.0, 8.0]];
        let staged = staged_rows(&rows, &[1.0, 3.0]);
        assert_eq!(staged.row(1, 0..4), &[-1.0, 0.5, 0.0, 8.0]);
        assert_eq!(staged.row(0, 2..4), &[3.0, 4.0]);
        assert_eq!(staged.weighted_mean(&[0, 1]), vec![-0.5, 0.875, 0.75, 7.0]);
        let d = staged.squared_distances();
        assert_eq!(d[0][1], 4.0 + 2.25 + 9.0 + 16.0);
        assert_eq!(d[1][0], d[0][1]);
        let mut cols = Vec::new();
        staged.for_each_column(&[1, 0], |j, v| cols.push((j, v.to_vec())));
        assert_eq!(cols[3], (3, vec![8.0, 4.0]));

        let dir = tempfile::tempdir().unwrap();
        let g = Bundle::new(vec![Tensor::from_f32("w", vec![2], &[0.0, 0.0]).unwrap()]).unwrap();
        let mut agg: Box<dyn Aggregator> = Box::new(Staged::new(&g, dir.path(), Noop));
        agg.fold(&g, 1.0).unwrap();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        let bad = Bundle::new(vec![Tensor::from_f32("w", vec![3], &[0.0; 3]).unwrap()]).unwrap();
        assert!(agg.fold(&bad, 1.0).is_err());
        assert!(agg.fold(&g, f64::NAN).is_err());
        assert_eq!(agg.finish().unwrap().count, 1);
    }

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&mut [3.0, -1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [3.0, -1.0, 2.0, 10.0]), 2.5);
    }
}
