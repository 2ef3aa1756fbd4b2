//! FedMedian (Yin et al., 2018): the coordinate-wise median of the updates, unweighted, as
//! Flower's `FedMedian` computes it.

use super::StrategyError;
use super::staged::{Rows, StagedRule, median};

#[derive(Debug, Clone, Copy, Default)]
pub struct FedMedian;

impl StagedRule for FedMedian {
    fn name(&self) -> &'static str {
        "fedmedian"
    }

    fn combine(&self, rows: &Rows) -> Result<Vec<f64>, StrategyError> {
        let all: Vec<usize> = (0..rows.count()).collect();
        let mut out = vec![0.0; rows.numel()];
        rows.for_each_column(&all, |j, column| out[j] = median(column));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::strategy::staged::tests::staged_rows;

    #[test]
    fn one_outlier_does_not_move_the_median() {
        let rows = vec![
            vec![1.0, 2.0, 3.0],
            vec![2.0, 3.0, 1.0],
            vec![3.0, 1.0, 2.0],
            vec![1e6, -1e6, 1e6],
        ];
        let out = FedMedian
            .combine(&staged_rows(&rows, &[1.0, 1.0, 1.0, 100.0]))
            .unwrap();
        assert_eq!(out, vec![2.5, 1.5, 2.5]);
    }
}
