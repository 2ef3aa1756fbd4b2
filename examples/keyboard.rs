//! A keyboard's suggestion strip: the top-3 next words after a typed prefix, from the base
//! model and from a (federated or personalised) adapter, side by side.
//!
//! ```sh
//! cargo run --release --example keyboard -- runs/<run>/adapter.gguf "My lord, I have"
//! cargo run --release --example keyboard -- - "To be, or not to"     # base model only
//! ```
//! The base model is the embedded one; `FEDTUNE_MODEL=smollm2` (or a GGUF path) picks another.

use std::sync::Arc;

use anyhow::Context;
use fedtune::base_model::BaseModel;
use fedtune::task::keyboard::{WordTable, suggest};
use fedtune_llm::lora;
use fedtune_llm::tokenizer::Tokenizer;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (adapter, prefixes) = match args.split_first() {
        Some((a, rest)) if !rest.is_empty() => (a.as_str(), rest),
        _ => anyhow::bail!("usage: keyboard ADAPTER|- PREFIX [PREFIX ...]"),
    };
    let base: BaseModel = std::env::var("FEDTUNE_MODEL")
        .unwrap_or_default()
        .parse()
        .unwrap_or(BaseModel::Embedded);
    let model = base.open()?;
    let tok = Tokenizer::from_gguf(model.file())?;
    let table = WordTable::new(&tok);
    let mut adapted = model.clone();
    if adapter != "-" {
        let a = lora::load(std::path::Path::new(adapter), &model.cfg)
            .with_context(|| format!("loading {adapter}"))?;
        adapted.set_adapter(Some(Arc::new(a)))?;
    }
    for prefix in prefixes {
        let show = |m| -> anyhow::Result<String> {
            Ok(suggest(m, &tok, &table, prefix, 3)?
                .iter()
                .map(|(w, p)| format!("{w} ({:.0}%)", p * 100.0))
                .collect::<Vec<_>>()
                .join(" | "))
        };
        println!("{prefix} …");
        println!("  base:    {}", show(&model)?);
        if adapter != "-" {
            println!("  adapter: {}", show(&adapted)?);
        }
    }
    Ok(())
}
