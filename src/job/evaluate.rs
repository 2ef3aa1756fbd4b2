//! Measuring an adapter (or the bare base) on a fixed set of records with the task's metrics.

use std::sync::Arc;

use fedtune_client::llama::LlamaModel;
use fedtune_client::lora::LoraAdapter;
use fedtune_client::tokenizer::Tokenizer;
use fedtune_client::train::Example;
use rayon::prelude::*;

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
                    out.extend(fedtune_client::train::windows(&[ids], self.seq));
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
        let per_record: Vec<Scores> = (0..records.len())
            .into_par_iter()
            .map(|i| self.score_one(&model, records, i))
            .collect::<Result<_, _>>()?;
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
        i: usize,
    ) -> Result<Scores, ScoreError> {
        let r = &records[i];
        match (self.task, &r.reply) {
            (Task::Keyboard, _) => score_text(model, &self.tok, &self.words, &r.text, 512),
            (Task::SmartReply, Some(reply)) => {
                let others: Vec<&str> = distractors(
                    i,
                    records.len(),
                    self.candidates.saturating_sub(1),
                    self.seed,
                )
                .into_iter()
                .filter_map(|j| records[j].reply.as_deref())
                .collect();
                self.reply.score(model, &self.tok, &r.text, reply, &others)
            }
            (Task::SmartReply, None) => Ok(Scores::default()),
        }
    }
}
