//! Smart reply: rank candidate replies to a message by how much the message makes each one
//! more likely (the job's smart-reply metric), with the base model or an adapter.
//!
//! ```sh
//! cargo run --release --example smart_reply -- - "Who's there?" "Nay, answer me." "Good night." "I know not, sir."
//! cargo run --release --example smart_reply -- runs/<run>/adapter.gguf "Who's there?" ...
//! ```

use std::sync::Arc;

use anyhow::Context;
use fedtune::base_model::BaseModel;
use fedtune::task::smart_reply::ReplyFormat;
use fedtune_llm::lora;
use fedtune_llm::tokenizer::Tokenizer;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [adapter, message, candidates @ ..] = args.as_slice() else {
        anyhow::bail!("usage: smart_reply ADAPTER|- MESSAGE REPLY [REPLY ...]");
    };
    anyhow::ensure!(!candidates.is_empty(), "give at least one candidate reply");
    let base: BaseModel = std::env::var("FEDTUNE_MODEL")
        .unwrap_or_default()
        .parse()
        .unwrap_or(BaseModel::Embedded);
    let mut model = base.open()?;
    if adapter != "-" {
        let a = lora::load(std::path::Path::new(adapter), &model.cfg)
            .with_context(|| format!("loading {adapter}"))?;
        model.set_adapter(Some(Arc::new(a)))?;
    }
    let tok = Tokenizer::from_gguf(model.file())?;
    let format = ReplyFormat::new(&tok, 128)?;
    let refs: Vec<&str> = candidates.iter().map(String::as_str).collect();
    println!("message: {message}");
    for (rank, (i, gain)) in format
        .rank(&model, &tok, message, &refs)?
        .into_iter()
        .enumerate()
    {
        println!("{:>2}. {:+7.3} nats  {}", rank + 1, gain, refs[i]);
    }
    Ok(())
}
