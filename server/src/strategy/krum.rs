//! Krum (Blanchard et al., 2017): the update whose `K − f − 2` nearest neighbours are
//! closest (squared Euclidean distance) is the round's update; with `num_clients_to_keep`
//! above 0 it is Multi-Krum (see [`super::multikrum`]). Flower's `Krum`: parameters
//! `num_malicious_clients` (f, 0 by default) and `num_clients_to_keep` (0 by default).

use super::StrategyError;
use super::multikrum::keep_best;
use super::params::Params;
use super::staged::{Rows, StagedRule};

#[derive(Debug, Clone, Copy)]
pub struct Krum {
    pub num_malicious_clients: usize,
    /// 0: plain Krum (one update); otherwise the mean of this many best-scored updates.
    pub num_clients_to_keep: usize,
}

impl Krum {
    pub fn from_params(params: &Params) -> Result<Self, StrategyError> {
        let mut r = params.reader();
        let krum = Krum {
            num_malicious_clients: r.count("num_malicious_clients", 0)?,
            num_clients_to_keep: r.count("num_clients_to_keep", 0)?,
        };
        r.finish("krum")?;
        Ok(krum)
    }
}

impl StagedRule for Krum {
    fn name(&self) -> &'static str {
        "krum"
    }

    fn settings(&self) -> Vec<(&'static str, String)> {
        vec![
            (
                "num_malicious_clients",
                self.num_malicious_clients.to_string(),
            ),
            ("num_clients_to_keep", self.num_clients_to_keep.to_string()),
        ]
    }

    fn combine(&self, rows: &Rows) -> Result<Vec<f64>, StrategyError> {
        let distances = rows.squared_distances();
        let all: Vec<usize> = (0..rows.count()).collect();
        let scores = scores(&distances, &all, self.num_malicious_clients);
        if self.num_clients_to_keep > 0 {
            return Ok(rows.weighted_mean(&keep_best(&scores, self.num_clients_to_keep)));
        }
        let best = all[argmin(&scores)];
        Ok(rows
            .row(best, 0..rows.numel())
            .iter()
            .map(|&v| f64::from(v))
            .collect())
    }
}

/// Krum's score of each update in `subset`: the sum of its squared distances to its
/// `max(1, n − f − 2)` nearest others in `subset` (n = the subset's size).
pub(crate) fn scores(distances: &[Vec<f64>], subset: &[usize], f: usize) -> Vec<f64> {
    let n = subset.len();
    let closest = n.saturating_sub(f + 2).max(1);
    subset
        .iter()
        .map(|&i| {
            let mut d: Vec<f64> = subset
                .iter()
                .filter(|&&j| j != i)
                .map(|&j| distances[i][j])
                .collect();
            d.sort_unstable_by(f64::total_cmp);
            d.iter().take(closest).sum()
        })
        .collect()
}

/// Index of the smallest score, the first on ties (NumPy's `argmin`).
pub(crate) fn argmin(scores: &[f64]) -> usize {
    let mut best = 0;
    for (i, s) in scores.iter().enumerate() {
        if *s < scores[best] {
            best = i;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::strategy::staged::tests::staged_rows;

    #[test]
    fn picks_the_update_closest_to_its_neighbours_and_ignores_outliers() {
        let rows = vec![
            vec![0.0, 0.0, 0.0],
            vec![0.1, 0.0, 0.0],
            vec![0.0, 0.2, 0.0],
            vec![0.0, 0.0, 0.3],
            vec![50.0, 50.0, 50.0],
        ];
        let staged = staged_rows(&rows, &[1.0; 5]);
        let krum = Krum {
            num_malicious_clients: 1,
            num_clients_to_keep: 0,
        };
        // n − f − 2 = 2 neighbours; the origin's two nearest are at 0.01 and 0.04.
        assert_eq!(krum.combine(&staged).unwrap(), vec![0.0, 0.0, 0.0]);
        let d = staged.squared_distances();
        let s = scores(&d, &[0, 1, 2, 3, 4], 1);
        assert!((s[0] - 0.05).abs() < 1e-7, "{s:?}");
        assert_eq!(argmin(&[2.0, 1.0, 1.0]), 1);
    }
}
