//! `fedtune tokenize`: text to token ids, as llama.cpp's tokenizer gives them.

use anyhow::Context;
use fedtune::base_model::BaseModel;
use fedtune_llm::tokenizer::Tokenizer;

#[derive(Debug, clap::Args)]
pub struct TokenizeArgs {
    /// Model whose vocabulary to use: `embedded`, `smollm2`, `gemma3` or a GGUF file (as every command).
    #[arg(short = 'm', long, default_value = "embedded")]
    model: BaseModel,
    /// The text to tokenize.
    #[arg(short = 'p', long, conflicts_with = "file")]
    text: Option<String>,
    /// Read the text from a file instead.
    #[arg(short = 'f', long)]
    file: Option<std::path::PathBuf>,
    /// Don't add BOS/EOS even if the model asks for them.
    #[arg(long)]
    no_add_special: bool,
    /// Treat special-token text such as `<|im_start|>` as plain text.
    #[arg(long)]
    no_parse_special: bool,
}

pub fn run(a: TokenizeArgs) -> anyhow::Result<()> {
    let text = match (&a.text, &a.file) {
        (Some(t), _) => t.clone(),
        (None, Some(f)) => {
            std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?
        }
        (None, None) => anyhow::bail!("give the text with --text or --file"),
    };
    let file = a.model.open_file()?;
    let tok = Tokenizer::from_gguf(&file)?;
    let ids = tok.encode(&text, !a.no_add_special, !a.no_parse_special)?;
    let line: Vec<String> = ids.iter().map(u32::to_string).collect();
    println!("{}", line.join(","));
    Ok(())
}
