//! `--strategy` and `--param`, shared by `server`, `simulate` and `aggregate`.

use clap::Args;
use clap::builder::PossibleValuesParser;
use fedtune::job::JobConfig;
use fedtune_server::strategy::{NAMES, Params, Strategy, build};

#[derive(Debug, Args)]
pub struct StrategyArgs {
    /// Aggregation rule, by Flower's name [default: fedavg, or the job file's].
    #[arg(long, value_parser = PossibleValuesParser::new(NAMES))]
    pub strategy: Option<String>,
    /// A strategy setting, KEY=VALUE, with Flower's names and defaults (repeat for several):
    /// eta, eta_l, beta_1, beta_2, tau (fedadagrad, fedadam, fedyogi); server_learning_rate,
    /// server_momentum (fedavgm); beta (fedtrimmedavg); num_malicious_clients,
    /// num_clients_to_keep (krum, multikrum, bulyan).
    #[arg(long = "param", value_name = "KEY=VALUE")]
    pub params: Vec<String>,
}

impl StrategyArgs {
    /// The strategy the flags name (fedavg when none).
    pub fn build(&self) -> anyhow::Result<Box<dyn Strategy>> {
        let name = self.strategy.as_deref().unwrap_or("fedavg");
        Ok(build(name, &Params::parse(&self.params)?)?)
    }

    /// Lays the flags over a job's settings: `--strategy` replaces the job's rule and its
    /// parameters; `--param` adds to or overrides them.
    pub fn lay_over(&self, cfg: &mut JobConfig) -> anyhow::Result<()> {
        if let Some(s) = &self.strategy
            && *s != cfg.strategy
        {
            cfg.strategy = s.clone();
            cfg.strategy_params.clear();
        }
        Params::parse(&self.params)?; // well-formed, no key twice
        for item in &self.params {
            if let Some((k, v)) = item.split_once('=') {
                cfg.strategy_params
                    .insert(k.trim().to_string(), toml_value(v.trim()));
            }
        }
        Ok(())
    }
}

/// A flag's value as the TOML value a job file would hold.
fn toml_value(v: &str) -> toml::Value {
    if let Ok(i) = v.parse::<i64>() {
        toml::Value::Integer(i)
    } else if let Ok(f) = v.parse::<f64>() {
        toml::Value::Float(f)
    } else {
        toml::Value::String(v.to_string())
    }
}
