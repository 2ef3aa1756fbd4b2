//! Multi-Krum (Blanchard et al., 2017): the example-weighted mean of the
//! `num_clients_to_keep` updates with the best Krum scores (Flower: `Krum` with
//! `num_clients_to_keep` > 0; here also by its own name, which requires it).

use super::StrategyError;
use super::krum::{Krum, scores};
use super::params::Params;
use super::staged::{Rows, StagedRule};

#[derive(Debug, Clone, Copy)]
pub struct MultiKrum(pub Krum);

impl MultiKrum {
    pub fn from_params(params: &Params) -> Result<Self, StrategyError> {
        let mut r = params.reader();
        let krum = Krum {
            num_malicious_clients: r.count("num_malicious_clients", 0)?,
            num_clients_to_keep: r.count("num_clients_to_keep", 0)?,
        };
        r.finish("multikrum")?;
        if krum.num_clients_to_keep == 0 {
            return Err(StrategyError::Param {
                key: "num_clients_to_keep".into(),
                why: "multikrum keeps at least one update: set num_clients_to_keep ≥ 1".into(),
            });
        }
        Ok(MultiKrum(krum))
    }
}

impl StagedRule for MultiKrum {
    fn name(&self) -> &'static str {
        "multikrum"
    }

    fn settings(&self) -> Vec<(&'static str, String)> {
        self.0.settings()
    }

    fn combine(&self, rows: &Rows) -> Result<Vec<f64>, StrategyError> {
        let all: Vec<usize> = (0..rows.count()).collect();
        let s = scores(
            &rows.squared_distances(),
            &all,
            self.0.num_malicious_clients,
        );
        Ok(rows.weighted_mean(&keep_best(&s, self.0.num_clients_to_keep)))
    }
}

/// The `keep` indices with the smallest scores (all of them when `keep` ≥ the count).
pub(crate) fn keep_best(scores: &[f64], keep: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    order.truncate(keep);
    order
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::strategy::staged::tests::staged_rows;

    #[test]
    fn weighted_mean_of_the_best_scored() {
        let rows = vec![
            vec![0.0, 0.0, 0.0],
            vec![1.0, 0.0, 0.0],
            vec![0.0, 1.0, 0.0],
            vec![40.0, 0.0, 0.0],
            vec![0.0, 0.0, -60.0],
        ];
        let staged = staged_rows(&rows, &[1.0, 3.0, 1.0, 1.0, 1.0]);
        let mk = MultiKrum::from_params(
            &Params::parse(&["num_malicious_clients=1", "num_clients_to_keep=3"]).unwrap(),
        )
        .unwrap();
        // The three near the origin win; weights 1, 3, 1.
        assert_eq!(mk.combine(&staged).unwrap(), vec![0.6, 0.2, 0.0]);
        assert!(MultiKrum::from_params(&Params::default()).is_err());
        assert_eq!(keep_best(&[3.0, 1.0, 2.0], 5), vec![1, 2, 0]);
    }
}
