//! FedTrimmedAvg (Yin et al., 2018): per coordinate, the mean after dropping the lowest and
//! highest `⌊beta·K⌋` values (Flower's `FedTrimmedAvg`, `beta` 0.2 by default), unweighted.

use super::StrategyError;
use super::params::Params;
use super::staged::{Rows, StagedRule};

#[derive(Debug, Clone, Copy)]
pub struct FedTrimmedAvg {
    /// Share of the updates cut at each end, in [0, 0.5).
    pub beta: f64,
}

impl FedTrimmedAvg {
    pub fn from_params(params: &Params) -> Result<Self, StrategyError> {
        let mut r = params.reader();
        let beta = r.f64("beta", 0.2, |b| (0.0..0.5).contains(&b), "0 ≤ beta < 0.5")?;
        r.finish("fedtrimmedavg")?;
        Ok(FedTrimmedAvg { beta })
    }
}

impl StagedRule for FedTrimmedAvg {
    fn name(&self) -> &'static str {
        "fedtrimmedavg"
    }

    fn settings(&self) -> Vec<(&'static str, String)> {
        vec![("beta", self.beta.to_string())]
    }

    fn combine(&self, rows: &Rows) -> Result<Vec<f64>, StrategyError> {
        let k = rows.count();
        // Flower: `int(proportiontocut * nobs)`.
        let cut = (self.beta * k as f64).floor() as usize;
        let all: Vec<usize> = (0..k).collect();
        let mut out = vec![0.0; rows.numel()];
        rows.for_each_column(&all, |j, column| {
            column.sort_unstable_by(f64::total_cmp);
            let kept = &column[cut..k - cut];
            out[j] = kept.iter().sum::<f64>() / kept.len() as f64;
        });
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::strategy::staged::tests::staged_rows;

    #[test]
    fn cuts_floor_of_beta_k_at_each_end() {
        let rows: Vec<Vec<f32>> = [5.0, -100.0, 1.0, 2.0, 100.0]
            .iter()
            .map(|&v| vec![v, -v, 0.0])
            .collect();
        let staged = staged_rows(&rows, &[1.0; 5]);
        // beta 0.2 of 5 cuts one at each end: mean of {1, 2, 5}.
        let out = FedTrimmedAvg { beta: 0.2 }.combine(&staged).unwrap();
        assert_eq!(out, vec![8.0 / 3.0, -8.0 / 3.0, 0.0]);
        // beta 0.1 of 5 cuts nothing: the plain mean.
        let out = FedTrimmedAvg { beta: 0.1 }.combine(&staged).unwrap();
        assert_eq!(out[0], 8.0 / 5.0);
        assert!(FedTrimmedAvg::from_params(&Params::parse(&["beta=0.5"]).unwrap()).is_err());
    }
}
