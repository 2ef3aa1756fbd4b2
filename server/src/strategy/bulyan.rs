//! Bulyan (El Mhamdi et al., 2018), as Flower's `Bulyan` computes it: Krum picks θ = K − 2f
//! updates one after another (each pick leaves the pool); per coordinate, the result is the
//! mean of the β = θ − 2f picked values closest to their median. Needs K ≥ 4f + 3.

use super::StrategyError;
use super::krum::{argmin, scores};
use super::params::Params;
use super::staged::{Rows, StagedRule, median};

#[derive(Debug, Clone, Copy)]
pub struct Bulyan {
    pub num_malicious_clients: usize,
}

impl Bulyan {
    pub fn from_params(params: &Params) -> Result<Self, StrategyError> {
        let mut r = params.reader();
        let b = Bulyan {
            num_malicious_clients: r.count("num_malicious_clients", 0)?,
        };
        r.finish("bulyan")?;
        Ok(b)
    }
}

impl StagedRule for Bulyan {
    fn name(&self) -> &'static str {
        "bulyan"
    }

    fn settings(&self) -> Vec<(&'static str, String)> {
        vec![(
            "num_malicious_clients",
            self.num_malicious_clients.to_string(),
        )]
    }

    fn combine(&self, rows: &Rows) -> Result<Vec<f64>, StrategyError> {
        let f = self.num_malicious_clients;
        let k = rows.count();
        if k < 4 * f + 3 {
            return Err(StrategyError::TooFew {
                strategy: "bulyan",
                needed: 4 * f + 3,
                got: k,
            });
        }
        let theta = k - 2 * f;
        let beta = theta - 2 * f;
        let distances = rows.squared_distances();
        let mut pool: Vec<usize> = (0..k).collect();
        let mut picked = Vec::with_capacity(theta);
        for _ in 0..theta {
            let s = scores(&distances, &pool, f);
            picked.push(pool.remove(argmin(&s)));
        }
        let mut out = vec![0.0; rows.numel()];
        let mut sorted = Vec::with_capacity(theta);
        rows.for_each_column(&picked, |j, column| {
            sorted.clear();
            sorted.extend_from_slice(column);
            let m = median(&mut sorted);
            column.sort_unstable_by(|a, b| (a - m).abs().total_cmp(&(b - m).abs()));
            out[j] = column[..beta].iter().sum::<f64>() / beta as f64;
        });
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::strategy::staged::tests::staged_rows;

    #[test]
    fn averages_the_values_nearest_the_median_of_krum_picks() {
        // K = 7, f = 1: θ = 5 picks, β = 3 values per coordinate.
        let mut rows: Vec<Vec<f32>> = (0..6)
            .map(|i| vec![i as f32 * 0.1, 1.0 - i as f32 * 0.1, 0.5])
            .collect();
        rows.push(vec![100.0, -100.0, 100.0]);
        let staged = staged_rows(&rows, &[1.0; 7]);
        let out = Bulyan {
            num_malicious_clients: 1,
        }
        .combine(&staged)
        .unwrap();
        assert!(out.iter().all(|v| v.abs() <= 1.0), "{out:?}");
        assert!((out[2] - 0.5).abs() < 1e-7);
        let too_few = staged_rows(&rows[..6], &[1.0; 6]);
        let err = Bulyan {
            num_malicious_clients: 1,
        }
        .combine(&too_few)
        .unwrap_err();
        assert!(err.to_string().contains("7"), "{err}");
    }
}
