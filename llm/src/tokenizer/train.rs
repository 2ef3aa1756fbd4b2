//! Training a byte-level BPE vocabulary on a corpus, for the small models `fedtune pretrain`
//! makes. The result is a GPT-2-style vocabulary (`tokenizer.ggml.model = gpt2`, pre-tokenizer
//! `gpt-2`) that this crate and llama.cpp both load from the model file.
//!
//! The merge statistics come from the `tokenizers` crate's BPE trainer (the one Hugging Face's
//! `tokenizers.trainers.BpeTrainer` runs); this module only feeds it GPT-2 pre-tokenized words
//! and turns its model into a [`VocabSpec`].

use std::collections::HashSet;

use tokenizers::models::bpe::{BPE, BpeTrainerBuilder};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{Model, OffsetReferential, OffsetType, PreTokenizedString, PreTokenizer, Trainer};

use super::{TokenizerError, VocabSpec, token_type};

/// The special token a trained vocabulary ends with: it starts every text (BOS) and ends
/// generation (EOS), as GPT-2's `<|endoftext|>` does.
pub const END_OF_TEXT: &str = "<|endoftext|>";

/// A byte-level BPE vocabulary of `vocab_size` tokens (256 bytes, merges, then
/// [`END_OF_TEXT`]) learnt from `texts`. Texts are pre-tokenized as GPT-2 does, so merges
/// never cross a word boundary.
pub fn train_bpe<S: AsRef<str> + Send>(
    texts: impl Iterator<Item = S> + Send,
    vocab_size: usize,
) -> Result<VocabSpec, TokenizerError> {
    if vocab_size < 258 {
        return Err(TokenizerError::Build(format!(
            "a byte-level vocabulary needs at least 258 tokens (256 bytes, one merge, {END_OF_TEXT}), not {vocab_size}"
        )));
    }
    let engine = |e: tokenizers::Error| TokenizerError::engine("training a BPE vocabulary", e);
    let alphabet: HashSet<char> = ByteLevel::alphabet().into_iter().collect();
    let mut trainer = BpeTrainerBuilder::new()
        .vocab_size(vocab_size - 1)
        .show_progress(false)
        .initial_alphabet(alphabet)
        .build();
    let pre = ByteLevel::new(false, true, true);
    trainer
        .feed(texts, |text| {
            let mut s = PreTokenizedString::from(text);
            pre.pre_tokenize(&mut s)?;
            Ok(s.get_splits(OffsetReferential::Original, OffsetType::Byte)
                .into_iter()
                .map(|(w, _, _)| w.to_string())
                .collect())
        })
        .map_err(engine)?;
    let mut model = BPE::default();
    trainer.train(&mut model).map_err(engine)?;
    spec_of(&model)
}

/// The vocabulary of a trained model, with [`END_OF_TEXT`] appended as BOS and EOS.
fn spec_of(model: &BPE) -> Result<VocabSpec, TokenizerError> {
    let mut tokens = vec![String::new(); model.get_vocab_size()];
    for (text, id) in model.get_vocab() {
        let slot = tokens.get_mut(id as usize).ok_or_else(|| {
            TokenizerError::inconsistent(format!("trained vocabulary has an id {id} out of range"))
        })?;
        *slot = text;
    }
    if let Some(id) = tokens.iter().position(String::is_empty) {
        return Err(TokenizerError::inconsistent(format!(
            "trained vocabulary has no token {id}"
        )));
    }
    let json = serde_json::to_value(model)
        .map_err(|e| TokenizerError::engine("reading the trained merges", e))?;
    let merges = json["merges"]
        .as_array()
        .map(|pairs| {
            pairs
                .iter()
                .filter_map(|p| Some(format!("{} {}", p[0].as_str()?, p[1].as_str()?)))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    let eot = tokens.len() as u32;
    tokens.push(END_OF_TEXT.to_string());
    let mut token_types = vec![token_type::NORMAL; tokens.len()];
    token_types[eot as usize] = token_type::CONTROL;
    Ok(VocabSpec {
        model: "gpt2".into(),
        pre: Some("gpt-2".into()),
        tokens,
        token_types,
        merges,
        bos: Some(eot),
        eos: Some(eot),
        add_bos: true,
        ..VocabSpec::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokenizer::Tokenizer;

    #[test]
    fn trained_vocabulary_round_trips_and_compresses() {
        let text = "To be, or not to be, that is the question:\nWhether 'tis nobler in the mind to suffer\n";
        let texts = vec![text; 20];
        let spec = train_bpe(texts.iter(), 300).unwrap();
        assert_eq!(spec.tokens.len(), 300);
        assert_eq!(spec.merges.len(), 300 - 257);
        let tk = Tokenizer::from_spec(&spec).unwrap();
        let ids = tk.encode(text, true, false).unwrap();
        assert_eq!(ids[0], 299, "starts with {END_OF_TEXT}");
        assert!(ids.len() < text.len() / 2, "{} tokens", ids.len());
        assert_eq!(tk.decode(&ids[1..]).unwrap(), text);
        // Text the corpus never had still encodes, byte by byte.
        let other = "Ünïcode 123 ☃";
        let ids = tk.encode(other, false, false).unwrap();
        assert_eq!(tk.decode(&ids).unwrap(), other);
    }

    #[test]
    fn too_small_a_vocabulary_is_refused() {
        let err = train_bpe(["a b"].iter(), 100).unwrap_err();
        assert!(err.to_string().contains("at least 258"), "{err}");
    }
}
