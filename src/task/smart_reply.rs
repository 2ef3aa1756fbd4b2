//! The smart-reply task: given a message, the reply. A pair is one sequence, the message
//! (with BOS when the model adds one), a separator, the reply and an end token; only the
//! reply's tokens (and the end) are targets. Metrics: the reply's perplexity, and recall@1/@3
//! of the true reply among a fixed set of candidates (the true one and replies drawn from other
//! pairs), ranked by how much the message raises each reply's log-likelihood:
//! log p(reply | message) − log p(reply | empty message), the pointwise mutual information that
//! response-selection work uses with language models (plain likelihood mostly ranks replies by
//! how common their words are, whatever the message).

use fedtune_client::llama::{LlamaModel, Logits, nll};
use fedtune_client::tokenizer::Tokenizer;
use fedtune_client::train::Example;
use rand::SeedableRng;
use rand::seq::index;
use rand_chacha::ChaCha8Rng;

use super::{ScoreError, Scores};

/// How a pair becomes tokens for a given tokenizer.
#[derive(Debug, Clone)]
pub struct ReplyFormat {
    /// Between message and reply: BOS (or EOS) when the vocabulary has one, else a newline.
    sep: Vec<u32>,
    /// Ends the reply, when the vocabulary has an end token.
    end: Option<u32>,
    /// Tokens per pair at most.
    max_len: usize,
}

impl ReplyFormat {
    pub fn new(tok: &Tokenizer, max_len: usize) -> Result<Self, ScoreError> {
        let sep = match tok.bos().or(tok.eos()) {
            Some(t) => vec![t],
            None => tok.encode("\n\n", false, false)?,
        };
        Ok(Self {
            sep,
            end: tok.eos(),
            max_len: max_len.max(8),
        })
    }

    /// The tokens of a pair and where its reply starts. The message keeps its last tokens
    /// (at most half the length), the reply its first.
    pub fn encode(
        &self,
        tok: &Tokenizer,
        message: &str,
        reply: &str,
    ) -> Result<(Vec<u32>, usize), ScoreError> {
        let msg = tok.encode(message, true, false)?;
        let mut rep = tok.encode(reply, false, false)?;
        rep.extend(self.end);
        let msg_room = self.max_len / 2;
        let msg = &msg[msg.len().saturating_sub(msg_room)..];
        let rep_room = self.max_len - msg.len() - self.sep.len().min(self.max_len - msg.len());
        let rep = &rep[..rep.len().min(rep_room)];
        let mut tokens = Vec::with_capacity(msg.len() + self.sep.len() + rep.len());
        tokens.extend_from_slice(msg);
        tokens.extend_from_slice(&self.sep);
        let start = tokens.len();
        tokens.extend_from_slice(rep);
        Ok((tokens, start))
    }

    /// A training example: targets are the reply's tokens only.
    pub fn example(
        &self,
        tok: &Tokenizer,
        message: &str,
        reply: &str,
    ) -> Result<Example, ScoreError> {
        let (tokens, start) = self.encode(tok, message, reply)?;
        let mask = (0..tokens.len()).map(|i| i >= start).collect();
        Ok(Example {
            tokens,
            mask: Some(mask),
        })
    }

    /// Summed NLL of the reply given the message, and its token count.
    fn reply_nll(
        &self,
        model: &LlamaModel,
        tok: &Tokenizer,
        message: &str,
        reply: &str,
    ) -> Result<(f64, usize), ScoreError> {
        let (tokens, start) = self.encode(tok, message, reply)?;
        if start == 0 || start >= tokens.len() {
            return Ok((0.0, 0));
        }
        let mut cache = model.new_cache(None);
        let logits = model.forward(&mut cache, &tokens[..tokens.len() - 1], Logits::All)?;
        let v = model.cfg.n_vocab;
        let sum = (start..tokens.len())
            .map(|i| nll(&logits[(i - 1) * v..i * v], tokens[i] as usize))
            .sum();
        Ok((sum, tokens.len() - start))
    }

    /// `candidates` ranked for `message`, best first: (index, how much the message raises
    /// the candidate's log-likelihood, in nats).
    pub fn rank(
        &self,
        model: &LlamaModel,
        tok: &Tokenizer,
        message: &str,
        candidates: &[&str],
    ) -> Result<Vec<(usize, f64)>, ScoreError> {
        let mut out = candidates
            .iter()
            .enumerate()
            .map(|(i, c)| Ok((i, self.pmi(model, tok, message, c)?.0)))
            .collect::<Result<Vec<_>, ScoreError>>()?;
        out.sort_by(|a, b| b.1.total_cmp(&a.1));
        Ok(out)
    }

    /// How much `message` raises the log-likelihood of `reply` (nats), and the reply's NLL
    /// given the message with its token count.
    fn pmi(
        &self,
        model: &LlamaModel,
        tok: &Tokenizer,
        message: &str,
        reply: &str,
    ) -> Result<(f64, f64, usize), ScoreError> {
        let (given, n) = self.reply_nll(model, tok, message, reply)?;
        let (alone, _) = self.reply_nll(model, tok, "", reply)?;
        Ok((alone - given, given, n))
    }

    /// Scores one pair: its reply's NLL, and whether the true reply ranks first or in the
    /// first three among itself and `distractors`.
    pub fn score(
        &self,
        model: &LlamaModel,
        tok: &Tokenizer,
        message: &str,
        reply: &str,
        distractors: &[&str],
    ) -> Result<Scores, ScoreError> {
        let (pmi, sum, n) = self.pmi(model, tok, message, reply)?;
        if n == 0 {
            return Ok(Scores::default());
        }
        let mut better = 0;
        for d in distractors {
            let (other, _, k) = self.pmi(model, tok, message, d)?;
            if k > 0 && other > pmi {
                better += 1;
            }
        }
        Ok(Scores {
            nll: sum,
            n_tokens: n,
            n_items: 1,
            top1: usize::from(better == 0),
            top3: usize::from(better < 3),
        })
    }
}

/// The distractors of pair `i` among `n_pairs`: `k` other pairs' indices, the same for the
/// same `(i, seed)` whatever the model (a fixed candidate set).
pub fn distractors(i: usize, n_pairs: usize, k: usize, seed: u64) -> Vec<usize> {
    if n_pairs < 2 {
        return Vec::new();
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    index::sample(&mut rng, n_pairs - 1, k.min(n_pairs - 1))
        .into_iter()
        .map(|j| if j >= i { j + 1 } else { j })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use fedtune_client::tokenizer::train_bpe;

    fn tokenizer() -> Tokenizer {
        let text = "Good morrow, my lord. And to you, good sir. How fares the king?";
        Tokenizer::from_spec(&train_bpe(std::iter::repeat_n(text, 5), 300).unwrap()).unwrap()
    }

    #[test]
    fn pairs_mask_all_but_the_reply_and_fit_the_length() {
        let tok = tokenizer();
        let f = ReplyFormat::new(&tok, 24).unwrap();
        let ex = f
            .example(&tok, "How fares the king?", "Good morrow.")
            .unwrap();
        let mask = ex.mask.as_ref().unwrap();
        let start = mask.iter().position(|&m| m).unwrap();
        assert_eq!(
            ex.tokens[start - 1],
            tok.bos().unwrap(),
            "separator before the reply"
        );
        assert_eq!(*ex.tokens.last().unwrap(), tok.eos().unwrap());
        assert!(mask[start..].iter().all(|&m| m));
        assert_eq!(
            tok.decode(&ex.tokens[start..ex.tokens.len() - 1]).unwrap(),
            "Good morrow."
        );
        let long = "my lord ".repeat(40);
        let ex = f.example(&tok, &long, &long).unwrap();
        assert_eq!(ex.tokens.len(), 24);
        assert!(ex.n_targets() >= 8);
    }

    #[test]
    fn distractors_are_fixed_and_never_the_pair_itself() {
        for i in 0..10 {
            let d = distractors(i, 10, 7, 3);
            assert_eq!(d.len(), 7);
            assert!(!d.contains(&i) && d.iter().all(|&j| j < 10));
            assert_eq!(d, distractors(i, 10, 7, 3));
        }
        assert_eq!(distractors(0, 3, 7, 3).len(), 2);
        assert!(distractors(0, 1, 7, 3).is_empty());
    }
}
