//! The smart-reply task: given a message, the reply. A pair is one sequence, the message
//! (with BOS when the model adds one), a separator, the reply and an end token; only the
//! reply's tokens (and the end) are targets. Metrics: the reply's perplexity, and recall@1/@3
//! of the true reply among a fixed set of candidates (the true one and replies drawn from other
//! pairs), ranked by how much the message raises each reply's log-likelihood:
//! log p(reply | message) − log p(reply | empty message), the pointwise mutual information that
//! response-selection work uses with language models (plain likelihood mostly ranks replies by
//! how common their words are, whatever the message).

use fedtune_llm::backprop::Example;
use fedtune_llm::llama::{LlamaModel, Logits, nll};
use fedtune_llm::tokenizer::Tokenizer;
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

    /// The message's tokens as a pair begins: its last tokens (at most half the length), then
    /// the separator.
    fn message_tokens(&self, tok: &Tokenizer, message: &str) -> Result<Vec<u32>, ScoreError> {
        let msg = tok.encode(message, true, false)?;
        let msg = &msg[msg.len().saturating_sub(self.max_len / 2)..];
        let mut out = msg.to_vec();
        out.extend_from_slice(&self.sep);
        Ok(out)
    }

    /// The reply's first tokens (its end token included) that fit in `room`.
    fn reply_tokens(
        &self,
        tok: &Tokenizer,
        reply: &str,
        room: usize,
    ) -> Result<Vec<u32>, ScoreError> {
        let mut rep = tok.encode(reply, false, false)?;
        rep.extend(self.end);
        rep.truncate(room);
        Ok(rep)
    }

    /// The tokens of a pair and where its reply starts. The message keeps its last tokens
    /// (at most half the length), the reply its first.
    pub fn encode(
        &self,
        tok: &Tokenizer,
        message: &str,
        reply: &str,
    ) -> Result<(Vec<u32>, usize), ScoreError> {
        let mut tokens = self.message_tokens(tok, message)?;
        let start = tokens.len();
        let room = self.max_len.saturating_sub(start);
        tokens.extend(self.reply_tokens(tok, reply, room)?);
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

    /// The NLL of every token of each of `replies` after `message`. The message runs once;
    /// each reply continues a copy of its cache.
    pub fn reply_nlls(
        &self,
        model: &LlamaModel,
        tok: &Tokenizer,
        message: &str,
        replies: &[&str],
    ) -> Result<Vec<Vec<f64>>, ScoreError> {
        let msg = self.message_tokens(tok, message)?;
        let room = self.max_len.saturating_sub(msg.len());
        let mut cache = model.new_cache(None);
        let first = model.forward(&mut cache, &msg, Logits::Last)?;
        let v = model.cfg.n_vocab;
        replies
            .iter()
            .map(|r| {
                let rep = self.reply_tokens(tok, r, room)?;
                let Some(&head) = rep.first() else {
                    return Ok(Vec::new());
                };
                let mut out = vec![nll(&first, head as usize)];
                if rep.len() > 1 {
                    let mut c = cache.clone();
                    let logits = model.forward(&mut c, &rep[..rep.len() - 1], Logits::All)?;
                    out.extend(
                        logits
                            .chunks_exact(v)
                            .zip(&rep[1..])
                            .map(|(row, &t)| nll(row, t as usize)),
                    );
                }
                Ok(out)
            })
            .collect()
    }

    /// The per-token NLLs of `replies` with an empty message (the second term of the ranking
    /// score; the same for every message, so computed once per reply).
    pub fn unconditional(
        &self,
        model: &LlamaModel,
        tok: &Tokenizer,
        replies: &[&str],
    ) -> Result<Vec<Vec<f64>>, ScoreError> {
        self.reply_nlls(model, tok, "", replies)
    }

    /// Ranking scores of `candidates` for `message`: Σ log p(token | message) − Σ log p(token)
    /// over each candidate's tokens (`alone[i]`: candidate i's unconditional per-token NLLs).
    /// Also returns the candidates' NLL sums and token counts given the message.
    fn pmi(
        &self,
        model: &LlamaModel,
        tok: &Tokenizer,
        message: &str,
        candidates: &[&str],
        alone: &[Vec<f64>],
    ) -> Result<Vec<(f64, f64, usize)>, ScoreError> {
        let given = self.reply_nlls(model, tok, message, candidates)?;
        Ok(given
            .iter()
            .zip(alone)
            .map(|(g, a)| {
                let k = g.len().min(a.len());
                let (sg, sa): (f64, f64) = (g[..k].iter().sum(), a[..k].iter().sum());
                (sa - sg, g.iter().sum(), g.len())
            })
            .collect())
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
        let alone = self.unconditional(model, tok, candidates)?;
        let mut out: Vec<(usize, f64)> = self
            .pmi(model, tok, message, candidates, &alone)?
            .into_iter()
            .enumerate()
            .map(|(i, (score, _, _))| (i, score))
            .collect();
        out.sort_by(|a, b| b.1.total_cmp(&a.1));
        Ok(out)
    }

    /// Scores one pair: the true reply is `candidates[0]`, the others distractors (`alone`:
    /// their unconditional per-token NLLs, as [`Self::unconditional`] gives). Returns the true
    /// reply's NLL and whether it ranks first or in the first three.
    pub fn score(
        &self,
        model: &LlamaModel,
        tok: &Tokenizer,
        message: &str,
        candidates: &[&str],
        alone: &[Vec<f64>],
    ) -> Result<Scores, ScoreError> {
        let scored = self.pmi(model, tok, message, candidates, alone)?;
        let Some(&(truth, sum, n)) = scored.first() else {
            return Ok(Scores::default());
        };
        if n == 0 {
            return Ok(Scores::default());
        }
        let better = scored[1..]
            .iter()
            .filter(|(s, _, k)| *k > 0 && *s > truth)
            .count();
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
    use fedtune_llm::tokenizer::train_bpe;

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
    fn shared_prefix_scoring_equals_whole_pairs_and_rank_agrees_with_score() {
        let model = crate::base_model::BaseModel::Embedded.open().unwrap();
        let tok = Tokenizer::from_gguf(model.file()).unwrap();
        let f = ReplyFormat::new(&tok, 48).unwrap();
        let message = "Who's there?";
        let replies = [
            "Nay, answer me: stand, and unfold yourself.",
            "Good night.",
            "Ay.",
        ];
        let nlls = f.reply_nlls(&model, &tok, message, &replies).unwrap();
        for (reply, got) in replies.iter().zip(&nlls) {
            // The same NLLs from one forward pass over the whole pair.
            let (tokens, start) = f.encode(&tok, message, reply).unwrap();
            let mut cache = model.new_cache(None);
            let logits = model.forward(&mut cache, &tokens, Logits::All).unwrap();
            let v = model.cfg.n_vocab;
            let want: Vec<f64> = (start..tokens.len())
                .map(|i| nll(&logits[(i - 1) * v..i * v], tokens[i] as usize))
                .collect();
            assert_eq!(got.len(), want.len());
            for (g, w) in got.iter().zip(&want) {
                assert!((g - w).abs() < 1e-3, "{reply}: {g} vs {w}");
            }
        }
        let ranked = f.rank(&model, &tok, message, &replies).unwrap();
        let alone = f.unconditional(&model, &tok, &replies).unwrap();
        let s = f.score(&model, &tok, message, &replies, &alone).unwrap();
        assert_eq!(s.n_items, 1);
        assert_eq!(s.top1 == 1, ranked[0].0 == 0, "{ranked:?}");
        assert!((s.nll - nlls[0].iter().sum::<f64>()).abs() < 1e-9);
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
