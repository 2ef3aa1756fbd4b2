//! The keyboard task: predicting the next word, as a phone keyboard's suggestion strip does.
//!
//! One teacher-forced pass over a text gives every token's logits; from them come the
//! perplexity (per token) and next-word accuracy (per word). A *word* is a run of letters,
//! digits and apostrophes; it starts at a token whose text (after any leading whitespace)
//! begins with such a character and which is not glued to a word before it, and goes on over
//! the tokens that continue it with no space. The model's *suggestions* for the word at token
//! `s` are the distinct word-starting token texts (leading whitespace dropped), most likely
//! first, at position `s − 1`. The word counts as predicted in the top k when its first
//! token's text is among the first k suggestions and greedy decoding from there spells the
//! rest of it: each following token of the word is the argmax, and the argmax after its last
//! token does not continue it.

use fedtune_llm::llama::{LlamaModel, Logits, argmax, nll};
use fedtune_llm::tokenizer::Tokenizer;

use super::{ScoreError, Scores};

/// Suggestions shown: top-1 and top-3 accuracy are reported.
const SUGGESTIONS: usize = 3;

/// How each vocabulary entry relates to words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A control token (BOS, EOS, ...): never part of a word.
    Special,
    /// Begins with a word character, no whitespace first: starts a word at the start of a
    /// line or text, otherwise continues the word before it.
    Glued,
    /// Whitespace, then a word character: always starts a word.
    Spaced,
    /// Anything else (punctuation, whitespace): ends a word.
    Other,
}

/// The word structure of a vocabulary, computed once per tokenizer.
#[derive(Debug, Clone)]
pub struct WordTable {
    kinds: Vec<Kind>,
    /// Token text without leading whitespace (for de-duplicating suggestions).
    stems: Vec<String>,
    /// The token ends with a word character.
    ends_in_word: Vec<bool>,
}

fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || c == '\''
}

impl WordTable {
    pub fn new(tok: &Tokenizer) -> Self {
        let n = tok.n_vocab();
        let (mut kinds, mut stems, mut ends_in_word) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        for id in 0..n as u32 {
            let text = tok
                .token_bytes(id)
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default();
            let stem = text.trim_start();
            let starts_word = stem.chars().next().is_some_and(is_word_char);
            kinds.push(if tok.is_special(id) {
                Kind::Special
            } else if starts_word && stem.len() == text.len() {
                Kind::Glued
            } else if starts_word {
                Kind::Spaced
            } else {
                Kind::Other
            });
            ends_in_word.push(text.chars().last().is_some_and(is_word_char));
            stems.push(stem.to_string());
        }
        Self {
            kinds,
            stems,
            ends_in_word,
        }
    }

    fn kind(&self, id: u32) -> Kind {
        self.kinds.get(id as usize).copied().unwrap_or(Kind::Other)
    }

    /// The words of `ids` as token ranges `[start, end)`.
    fn words(&self, ids: &[u32]) -> Vec<(usize, usize)> {
        let mut words: Vec<(usize, usize)> = Vec::new();
        let mut open = false;
        let mut after_word = false;
        for (i, &id) in ids.iter().enumerate() {
            match self.kind(id) {
                Kind::Glued if open && after_word => {
                    if let Some(w) = words.last_mut() {
                        w.1 = i + 1;
                    }
                }
                Kind::Glued | Kind::Spaced => {
                    words.push((i, i + 1));
                    open = true;
                }
                Kind::Special | Kind::Other => open = false,
            }
            after_word = self.ends_in_word.get(id as usize).copied().unwrap_or(false);
        }
        words
    }

    /// The rank of `id`'s stem among the distinct stems of word-starting tokens, most likely
    /// first, if it is within the first `k`.
    fn suggestion_rank(&self, row: &[f32], id: u32, k: usize) -> Option<usize> {
        let target = self.stems.get(id as usize)?;
        let p = row[id as usize];
        // Distinct stems strictly more likely than the target's token.
        let mut better: Vec<&str> = Vec::with_capacity(k);
        for (t, &l) in row.iter().enumerate() {
            if l > p
                && matches!(self.kinds[t], Kind::Glued | Kind::Spaced)
                && self.stems[t] != *target
                && !better.contains(&self.stems[t].as_str())
            {
                better.push(&self.stems[t]);
                if better.len() >= k {
                    return None;
                }
            }
        }
        Some(better.len())
    }
}

/// The `k` words a keyboard would suggest after `prefix`: the most likely distinct
/// word-starting tokens, each completed greedily while the next most likely token continues
/// the word (at most `max_tokens` tokens a word). With their probabilities (of the first
/// token).
pub fn suggest(
    model: &LlamaModel,
    tok: &Tokenizer,
    table: &WordTable,
    prefix: &str,
    k: usize,
) -> Result<Vec<(String, f64)>, ScoreError> {
    const MAX_TOKENS: usize = 6;
    let ids = tok.encode(prefix.trim_end(), true, false)?;
    let mut cache = model.new_cache(None);
    let logits = model.forward(&mut cache, &ids, Logits::Last)?;
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let z: f64 = logits.iter().map(|&l| f64::from(l - max).exp()).sum();
    let mut order: Vec<usize> = (0..logits.len())
        .filter(|&t| matches!(table.kinds[t], Kind::Glued | Kind::Spaced))
        .collect();
    order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
    let mut out: Vec<(String, f64)> = Vec::with_capacity(k);
    for first in order {
        if out.len() >= k {
            break;
        }
        let mut cache = cache.clone();
        let mut word = vec![first as u32];
        let mut next = model.forward(&mut cache, &word, Logits::Last)?;
        while word.len() < MAX_TOKENS {
            let t = argmax(&next);
            if table.kind(t) != Kind::Glued {
                break;
            }
            word.push(t);
            next = model.forward(&mut cache, &[t], Logits::Last)?;
        }
        let text = tok.decode(&word)?.trim().to_string();
        if !text.is_empty() && !out.iter().any(|(w, _)| *w == text) {
            out.push((text, f64::from(logits[first] - max).exp() / z));
        }
    }
    Ok(out)
}

/// Scores one text with `model` (and whatever adapter it carries): the text is tokenized as
/// the model's tokenizer does (BOS included when it adds one) and scored in windows of at most
/// `ctx` tokens.
pub fn score_text(
    model: &LlamaModel,
    tok: &Tokenizer,
    table: &WordTable,
    text: &str,
    ctx: usize,
) -> Result<Scores, ScoreError> {
    let ids = tok.encode(text, true, false)?;
    let mut stats = Scores::default();
    for window in ids.chunks(ctx.clamp(2, model.cfg.context_len.max(2))) {
        stats.add(&score_window(model, table, window)?);
    }
    Ok(stats)
}

fn score_window(model: &LlamaModel, table: &WordTable, ids: &[u32]) -> Result<Scores, ScoreError> {
    let mut stats = Scores::default();
    if ids.len() < 2 {
        return Ok(stats);
    }
    let v = model.cfg.n_vocab;
    let mut cache = model.new_cache(None);
    let logits = model.forward(&mut cache, ids, Logits::All)?;
    let rows: Vec<&[f32]> = logits.chunks_exact(v).collect();
    for (row, &next) in rows.iter().zip(&ids[1..]) {
        stats.nll += nll(row, next as usize);
        stats.n_tokens += 1;
    }
    let best: Vec<u32> = rows.iter().map(|r| argmax(r)).collect();
    for (s, e) in table.words(ids) {
        if s == 0 {
            continue;
        }
        stats.n_items += 1;
        let spelled =
            (s + 1..e).all(|j| best[j - 1] == ids[j]) && table.kind(best[e - 1]) != Kind::Glued;
        if !spelled {
            continue;
        }
        match table.suggestion_rank(rows[s - 1], ids[s], SUGGESTIONS) {
            Some(0) => {
                stats.top1 += 1;
                stats.top3 += 1;
            }
            Some(_) => stats.top3 += 1,
            None => {}
        }
    }
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;
    use fedtune_llm::tokenizer::train_bpe;

    fn tokenizer() -> Tokenizer {
        let text =
            "Who's there? Nay, answer me: stand, and unfold yourself.\nLong live the king!\n";
        let spec = train_bpe(std::iter::repeat_n(text, 10), 320).unwrap();
        Tokenizer::from_spec(&spec).unwrap()
    }

    fn spelled(tok: &Tokenizer, ids: &[u32], words: &[(usize, usize)]) -> Vec<String> {
        words
            .iter()
            .map(|&(s, e)| tok.decode(&ids[s..e]).unwrap().trim_start().to_string())
            .collect()
    }

    #[test]
    fn words_are_runs_of_letters_and_apostrophes_across_tokens() {
        let tok = tokenizer();
        let table = WordTable::new(&tok);
        let text = "Who's there?\n'Tis I, unfoldment: 12 kings\n\"Long\" live";
        let ids = tok.encode(text, true, false).unwrap();
        let words = table.words(&ids);
        assert_eq!(
            spelled(&tok, &ids, &words),
            [
                "Who's",
                "there",
                "'Tis",
                "I",
                "unfoldment",
                "12",
                "kings",
                "Long",
                "live"
            ]
        );
    }

    #[test]
    fn suggestions_rank_distinct_stems_above_the_target() {
        let tok = tokenizer();
        let table = WordTable::new(&tok);
        let id = |t: &str| {
            (0..tok.n_vocab() as u32)
                .find(|&i| tok.token_bytes(i).unwrap() == t.as_bytes())
                .unwrap_or_else(|| panic!("no token {t:?}"))
        };
        // A word-starting text the vocabulary has both glued and after a space.
        let (the, sp_the) = (0..tok.n_vocab() as u32)
            .filter(|&i| table.kind(i) == Kind::Glued)
            .filter(|&i| !["king", "answer", "me"].contains(&table.stems[i as usize].as_str()))
            .find_map(|i| {
                let spaced = format!(" {}", table.stems[i as usize]);
                let j = (0..tok.n_vocab() as u32)
                    .find(|&j| tok.token_bytes(j).unwrap() == spaced.as_bytes())?;
                Some((i, j))
            })
            .unwrap();
        let (king, answer, me) = (id(" king"), id(" answer"), id(" me"));
        let mut row = vec![0f32; tok.n_vocab()];
        row[king as usize] = 5.0;
        assert_eq!(table.suggestion_rank(&row, king, 3), Some(0));
        // "the" and " the" are one suggestion; punctuation is never one.
        row[the as usize] = 6.0;
        row[sp_the as usize] = 7.0;
        row[id("?") as usize] = 9.0;
        assert_eq!(table.suggestion_rank(&row, king, 3), Some(1));
        row[answer as usize] = 8.0;
        assert_eq!(table.suggestion_rank(&row, king, 3), Some(2));
        row[me as usize] = 5.5;
        assert_eq!(table.suggestion_rank(&row, king, 3), None);
        assert_eq!(table.suggestion_rank(&row, king, 4), Some(3));
    }
}
