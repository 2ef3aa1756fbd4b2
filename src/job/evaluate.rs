//! Measuring an adapter (or the bare base) on a fixed set of records with the task's metrics.

use std::sync::Arc;

use fedtune_llm::backprop::Example;
use fedtune_llm::llama::LlamaModel;
use fedtune_llm::lora::LoraAdapter;
use fedtune_llm::tokenizer::Tokenizer;

use super::Task;
use crate::task::keyboard::{WordTable, score_text};
use crate::task::smart_reply::{ReplyFormat, distractors};
use crate::task::{ScoreError, Scores};
use crate::text_data::Record;

/// How a task turns records into training examples and scores them.
#[derive(Debug, Clone)]
pub struct TaskIo {
    pub task: Task,
    tok: Arc<Tokenizer>,
    words: Arc<WordTable>,
    reply: ReplyFormat,
    seq: usize,
    /// Smart reply: candidates per message (the true reply and distractors).
    candidates: usize,
    seed: u64,
}

impl TaskIo {
    pub fn new(
        task: Task,
        tok: Arc<Tokenizer>,
        seq: usize,
        candidates: usize,
        seed: u64,
    ) -> Result<Self, ScoreError> {
        Ok(Self {
            task,
            words: Arc::new(WordTable::new(&tok)),
            reply: ReplyFormat::new(&tok, seq)?,
            tok,
            seq,
            candidates,
            seed,
        })
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tok
    }

    /// Training examples of `records`: keyboard, each text (with BOS) cut into sequences of
    /// at most `seq` tokens; smart reply, one masked sequence per pair. Examples with nothing
    /// to predict are left out.
    pub fn examples(&self, records: &[Record]) -> Result<Vec<Example>, ScoreError> {
        let mut out = Vec::new();
        for r in records {
            match (self.task, &r.reply) {
                (Task::SmartReply, Some(reply)) => {
                    out.push(self.reply.example(&self.tok, &r.text, reply)?)
                }
                (Task::SmartReply, None) => {}
                (Task::Keyboard, _) => {
                    let ids = self.tok.encode(&r.text, true, false)?;
                    out.extend(fedtune_llm::backprop::windows(&[ids], self.seq));
                }
            }
        }
        out.retain(|e| e.n_targets() > 0);
        Ok(out)
    }

    /// Scores `records` with `base` carrying `adapter` (records in parallel; summed in order,
    /// so the result does not depend on the thread count).
    pub fn score(
        &self,
        base: &LlamaModel,
        adapter: Option<&LoraAdapter>,
        records: &[Record],
    ) -> Result<Scores, ScoreError> {
        let mut model = base.clone();
        model.set_adapter(adapter.map(|a| Arc::new(a.clone())))?;
        // Smart reply: every reply's unconditional NLLs, once (each is a candidate of several
        // messages).
        let alone: Vec<Vec<f64>> = match self.task {
            Task::SmartReply => each_on_one_thread(records.len(), |i| {
                let reply = records[i].reply.as_deref().unwrap_or("");
                Ok(self
                    .reply
                    .unconditional(&model, &self.tok, &[reply])?
                    .remove(0))
            })?,
            Task::Keyboard => Vec::new(),
        };
        let per_record = each_on_one_thread(records.len(), |i| {
            self.score_one(&model, records, &alone, i)
        })?;
        let mut total = Scores::default();
        for s in &per_record {
            total.add(s);
        }
        Ok(total)
    }

    fn score_one(
        &self,
        model: &LlamaModel,
        records: &[Record],
        alone: &[Vec<f64>],
        i: usize,
    ) -> Result<Scores, ScoreError> {
        let r = &records[i];
        match (self.task, &r.reply) {
            (Task::Keyboard, _) => score_text(model, &self.tok, &self.words, &r.text, 512),
            (Task::SmartReply, Some(_)) => {
                // The true reply first, then the distractors.
                let mut idx = vec![i];
                idx.extend(distractors(
                    i,
                    records.len(),
                    self.candidates.saturating_sub(1),
                    self.seed,
                ));
                idx.retain(|&j| records[j].reply.is_some());
                let texts: Vec<&str> = idx
                    .iter()
                    .filter_map(|&j| records[j].reply.as_deref())
                    .collect();
                let alone: Vec<Vec<f64>> = idx.iter().map(|&j| alone[j].clone()).collect();
                self.reply.score(model, &self.tok, &r.text, &texts, &alone)
            }
            (Task::SmartReply, None) => Ok(Scores::default()),
        }
    }
}

/// `f(0..n)` in order, the indices split into as many contiguous runs as the current rayon
/// pool has threads, each run on its own single-threaded pool: scoring many short texts is
/// faster one text per thread than each text's small matrix products split across threads.
fn each_on_one_thread<T: Send>(
    n: usize,
    f: impl Fn(usize) -> Result<T, ScoreError> + Sync,
) -> Result<Vec<T>, ScoreError> {
    let threads = rayon::current_num_threads().clamp(1, n.max(1));
    let per = n.div_ceil(threads);
    let runs: Vec<Result<Vec<T>, ScoreError>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let f = &f;
                s.spawn(move || {
                    let pool = rayon::ThreadPoolBuilder::new()
                        .num_threads(1)
                        .build()
                        .map_err(|e| ScoreError::Pool(e.to_string()))?;
                    pool.install(|| (t * per..((t + 1) * per).min(n)).map(f).collect())
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(ScoreError::Pool("a scoring thread panicked".into())))
            })
            .collect()
    });
    let mut out = Vec::with_capacity(n);
    for run in runs {
        out.extend(run?);
    }
    Ok(out)
}
