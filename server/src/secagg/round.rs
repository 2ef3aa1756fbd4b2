//! One round attempt's secure aggregation on the server, as a state machine with no I/O:
//!
//! ```text
//!  Advertise ──(all keys in, or stage deadline)──► Share ──(all shared, or deadline)──► Upload
//!  Upload ──(all sharers uploaded, or round deadline)──► Unmask ──(all revealed, or deadline)──► Ready
//! ```
//! Any stage left with fewer than t devices abandons the attempt, with nothing revealed. The
//! server routes keys and sealed shares, sums masked words (wrapping) as they arrive, and
//! holds an unmasked value only once [`SecAggRound::finish`] removes the masks from the sum.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Instant;

use fedtune_proto::v1;
use fedtune_secagg::SecAggError;
use fedtune_secagg::protocol::{self, Advert, Params, Reveal, Secret, neighbour_graph};
use fedtune_secagg::shamir::Share;

use super::settings::Sizing;
use crate::ServerError;

/// Where the round's protocol is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stage {
    Advertise,
    Share,
    Upload,
    Unmask,
    /// Every reveal is in (or the unmask deadline passed): the sum can be unmasked.
    Ready,
}

/// What closing a stage led to.
#[derive(Debug, PartialEq, Eq)]
pub enum Closed {
    /// The next stage is open.
    Next(Stage),
    /// Too few devices to go on: the attempt is abandoned, with why.
    Abandon(String),
}

/// Bytes of one sealed share message: point, two 32-byte shares, the AEAD tag.
const SEALED_BYTES: usize = 1 + 32 + 32 + 16;

/// The server's side of one round attempt.
#[derive(Debug)]
pub struct SecAggRound {
    pub stage: Stage,
    sizing: Sizing,
    /// Fewest uploads the sum may be unmasked with: the threshold, or the round's minimum.
    min_survivors: usize,
    context: Vec<u8>,
    index: HashMap<String, u32>,
    graph: Vec<Vec<u32>>,
    keys: BTreeMap<u32, v1::SecAggKeys>,
    /// Sealed shares, by recipient.
    inbox: BTreeMap<u32, Vec<v1::SecAggSealed>>,
    sharers: BTreeSet<u32>,
    core: Option<protocol::Server>,
    unmask: Option<(Vec<u32>, Vec<u32>)>,
    /// Reveals, by the device that sent them (a repeat replaces).
    reveals: BTreeMap<u32, Vec<Reveal>>,
    /// When the open stage closes (uploads: the round's deadline).
    pub stage_deadline: Instant,
    /// Words in a masked upload: the values, any extra words, the weight.
    words: usize,
}

impl SecAggRound {
    /// A round over `cohort` (numbered in its order) for updates of `params` values, with a
    /// neighbour graph drawn from `graph_seed` and key derivations salted with `context`; it
    /// unmasks only a sum of at least `min_commit` (and t) uploads.
    pub fn new(
        cohort: &BTreeSet<String>,
        sizing: Sizing,
        min_commit: usize,
        params: usize,
        graph_seed: u64,
        context: Vec<u8>,
        stage_deadline: Instant,
    ) -> Self {
        let graph = neighbour_graph(cohort.len(), sizing.neighbours, graph_seed);
        let core = protocol::Server::new(
            Params {
                threshold: sizing.threshold,
                context: context.clone(),
            },
            graph.clone(),
            params + 1,
        );
        SecAggRound {
            stage: Stage::Advertise,
            sizing,
            min_survivors: min_commit.max(sizing.threshold),
            context,
            index: cohort
                .iter()
                .enumerate()
                .map(|(i, c)| (c.clone(), i as u32))
                .collect(),
            graph,
            keys: BTreeMap::new(),
            inbox: BTreeMap::new(),
            sharers: BTreeSet::new(),
            core: Some(core),
            unmask: None,
            reveals: BTreeMap::new(),
            stage_deadline,
            words: params + 1,
        }
    }

    pub fn sizing(&self) -> &Sizing {
        &self.sizing
    }

    /// The name of the one tensor of a masked upload.
    pub const MASKED: &'static str = "secagg.masked";

    /// The manifest a masked upload must have: the encoded values and the weight, as words.
    pub fn manifest(&self) -> Vec<fedtune_proto::TensorSpec> {
        vec![fedtune_proto::TensorSpec {
            name: Self::MASKED.into(),
            dtype: fedtune_proto::DType::U32,
            shape: vec![self.words],
        }]
    }

    /// The device's part, sent with its task.
    pub fn setup_for(&self, client: &str) -> Option<v1::SecAggSetup> {
        let &i = self.index.get(client)?;
        Some(v1::SecAggSetup {
            index: i,
            neighbours: self.graph[i as usize].clone(),
            threshold: self.sizing.threshold as u32,
            clip: self.sizing.quantizer.clip,
            bits: self.sizing.quantizer.bits,
            max_weight: self.sizing.max_weight,
            context: self.context.clone().into(),
        })
    }

    /// Whether `client` can still take its part: only until it has advertised keys, and
    /// while advertising is open (a device that lost its keys cannot rejoin the round).
    pub fn can_start(&self, client: &str) -> bool {
        self.stage == Stage::Advertise
            && self
                .index
                .get(client)
                .is_some_and(|i| !self.keys.contains_key(i))
    }

    fn member(&self, client: &str) -> Result<u32, ServerError> {
        self.index.get(client).copied().ok_or_else(|| {
            ServerError::Stale("this device is not in the round's secure aggregation".into())
        })
    }

    fn passed(&self, step: &str) -> ServerError {
        ServerError::Stale(format!(
            "secure aggregation has moved past {step} (now at {:?}); this device is out of \
             the round",
            self.stage
        ))
    }

    /// Step 0: a device's keys. A repeat of the same keys is a retry; other keys are refused.
    pub fn advertise(&mut self, client: &str, keys: v1::SecAggKeys) -> Result<(), ServerError> {
        let i = self.member(client)?;
        if let Some(had) = self.keys.get(&i) {
            return if *had == keys {
                Ok(())
            } else {
                Err(ServerError::InvalidRequest(
                    "keys were already advertised for this round".into(),
                ))
            };
        }
        if self.stage != Stage::Advertise {
            return Err(self.passed("advertising"));
        }
        let c_public = key32(&keys.c_public, "c_public")?;
        let s_public = key32(&keys.s_public, "s_public")?;
        if keys.identity_key.len() > 32 || keys.signature.len() > 64 {
            return Err(ServerError::InvalidRequest(
                "identity key or signature too long".into(),
            ));
        }
        if let Some(core) = &mut self.core {
            core.advertise(Advert {
                id: i,
                c_public,
                s_public,
            });
        }
        self.keys.insert(i, keys);
        Ok(())
    }

    /// Whether every cohort member has done what the open stage waits for.
    pub fn stage_complete(&self) -> bool {
        match self.stage {
            Stage::Advertise => self.keys.len() == self.index.len(),
            Stage::Share => self.sharers.len() == self.keys.len(),
            Stage::Upload => self.uploaded().len() == self.sharers.len(),
            Stage::Unmask => self.unmask.as_ref().is_some_and(|(survivors, _)| {
                survivors.iter().all(|s| self.reveals.contains_key(s))
            }),
            Stage::Ready => true,
        }
    }

    fn uploaded(&self) -> Vec<u32> {
        self.core
            .as_ref()
            .map(|c| c.unmask_request().0)
            .unwrap_or_default()
    }

    /// The neighbours' keys, once advertising has closed.
    pub fn adverts_for(&self, client: &str) -> Result<Option<v1::SecAggAdverts>, ServerError> {
        let i = self.member(client)?;
        if !self.keys.contains_key(&i) {
            return Err(self.passed("advertising"));
        }
        if self.stage == Stage::Advertise {
            return Ok(None);
        }
        let adverts = self.graph[i as usize]
            .iter()
            .filter_map(|j| {
                self.keys.get(j).map(|k| v1::SecAggAdvert {
                    index: *j,
                    keys: Some(k.clone()),
                })
            })
            .collect();
        Ok(Some(v1::SecAggAdverts { adverts }))
    }

    /// Step 1: a device's sealed shares, one per advertised neighbour.
    pub fn share(&mut self, client: &str, shares: v1::SecAggShares) -> Result<(), ServerError> {
        let i = self.member(client)?;
        if self.sharers.contains(&i) {
            return Ok(()); // a retry: the first delivery stands
        }
        if self.stage != Stage::Share || !self.keys.contains_key(&i) {
            return Err(self.passed("sharing"));
        }
        let mut to = BTreeSet::new();
        for s in &shares.shares {
            let neighbour = self.graph[i as usize].contains(&s.to) && self.keys.contains_key(&s.to);
            if s.from != i || !neighbour || !to.insert(s.to) || s.ciphertext.len() != SEALED_BYTES {
                return Err(ServerError::InvalidRequest(format!(
                    "share from {} to {} ({} bytes) is not for an advertised neighbour, \
                     repeats one, or is not {SEALED_BYTES} bytes",
                    s.from,
                    s.to,
                    s.ciphertext.len()
                )));
            }
        }
        if to.len() < self.sizing.threshold {
            return Err(ServerError::InvalidRequest(format!(
                "{} shares, at least the threshold {} needed",
                to.len(),
                self.sizing.threshold
            )));
        }
        for s in shares.shares {
            self.inbox.entry(s.to).or_default().push(s);
        }
        self.sharers.insert(i);
        if let Some(core) = &mut self.core {
            core.shared(i);
        }
        Ok(())
    }

    /// The shares addressed to a device, once sharing has closed.
    pub fn inbox_for(&self, client: &str) -> Result<Option<v1::SecAggShares>, ServerError> {
        let i = self.member(client)?;
        if !self.sharers.contains(&i) {
            return Err(self.passed("sharing"));
        }
        if self.stage <= Stage::Share {
            return Ok(None);
        }
        Ok(Some(v1::SecAggShares {
            shares: self.inbox.get(&i).cloned().unwrap_or_default(),
        }))
    }

    /// Whether a masked upload from `client` may start.
    pub fn admit_upload(&self, client: &str) -> Result<(), ServerError> {
        let i = self.member(client)?;
        if self.stage != Stage::Upload || !self.sharers.contains(&i) {
            return Err(self.passed("uploads"));
        }
        Ok(())
    }

    /// Adds a masked upload to the sum.
    pub fn add_masked(&mut self, client: &str, words: &[u32]) -> Result<(), ServerError> {
        self.admit_upload(client)?;
        let i = self.member(client)?;
        let core = self
            .core
            .as_mut()
            .ok_or_else(|| ServerError::Internal("secure aggregation already finished".into()))?;
        core.add_masked(i, words)
            .map_err(|e| ServerError::InvalidUpdate(e.to_string()))
    }

    /// Closes the open stage (all in, or its deadline): the next stage, or abandon.
    pub fn close(&mut self, next_deadline: Instant) -> Closed {
        let t = self.sizing.threshold;
        let too_few = |what: &str, n: usize| {
            Closed::Abandon(format!(
                "{n} devices {what}, fewer than the threshold {t}: nothing can be unmasked"
            ))
        };
        let next = match self.stage {
            Stage::Advertise if self.keys.len() < t + 1 => {
                return too_few("advertised keys", self.keys.len());
            }
            Stage::Advertise => Stage::Share,
            Stage::Share if self.sharers.len() < t + 1 => {
                return too_few("shared their secrets", self.sharers.len());
            }
            Stage::Share => Stage::Upload,
            Stage::Upload => {
                let (survivors, dropped) = self
                    .core
                    .as_ref()
                    .map(protocol::Server::unmask_request)
                    .unwrap_or_default();
                if survivors.len() < self.min_survivors {
                    return Closed::Abandon(format!(
                        "{} devices uploaded, fewer than the {} needed",
                        survivors.len(),
                        self.min_survivors
                    ));
                }
                self.unmask = Some((survivors, dropped));
                Stage::Unmask
            }
            Stage::Unmask | Stage::Ready => Stage::Ready,
        };
        self.stage = next;
        self.stage_deadline = next_deadline;
        Closed::Next(next)
    }

    /// Survivors and dropped, to a survivor once uploads have closed.
    pub fn unmask_for(&self, client: &str) -> Result<Option<v1::SecAggUnmask>, ServerError> {
        let i = self.member(client)?;
        let Some((survivors, dropped)) = &self.unmask else {
            return if self.stage <= Stage::Upload && self.sharers.contains(&i) {
                Ok(None)
            } else {
                Err(self.passed("uploads"))
            };
        };
        if !survivors.contains(&i) {
            return Err(self.passed("uploads"));
        }
        Ok(Some(v1::SecAggUnmask {
            survivors: survivors.clone(),
            dropped: dropped.clone(),
        }))
    }

    /// Step 3: a survivor's shares of survivors' seeds and dropped devices' keys.
    pub fn reveal(&mut self, client: &str, reveals: &v1::SecAggReveals) -> Result<(), ServerError> {
        let i = self.member(client)?;
        let Some((survivors, dropped)) = &self.unmask else {
            return Err(self.passed("unmasking"));
        };
        if self.stage != Stage::Unmask || !survivors.contains(&i) {
            return Err(self.passed("unmasking"));
        }
        let mut parsed = Vec::with_capacity(reveals.reveals.len());
        for r in &reveals.reveals {
            let secret = if r.mask_key {
                Secret::MaskKey
            } else {
                Secret::SelfSeed
            };
            let expected = match secret {
                Secret::SelfSeed => survivors.contains(&r.about),
                Secret::MaskKey => dropped.contains(&r.about),
            };
            let x = u8::try_from(r.x).ok().filter(|&x| x != 0);
            let (Some(x), true, true) = (
                x,
                expected && self.graph[i as usize].contains(&r.about),
                r.y.len() == 32,
            ) else {
                return Err(ServerError::InvalidRequest(format!(
                    "reveal about device {} is not one the unmask request asked of this device",
                    r.about
                )));
            };
            parsed.push(Reveal {
                about: r.about,
                secret,
                share: Share { x, y: r.y.to_vec() },
            });
        }
        self.reveals.insert(i, parsed);
        Ok(())
    }

    /// Removes the masks: the sum of the survivors' encoded updates (weight last), or why it
    /// cannot be had (too few shares of some secret). Called once.
    pub fn finish(&mut self) -> Result<Vec<u32>, SecAggError> {
        let core = self
            .core
            .take()
            .ok_or_else(|| SecAggError::Protocol("finished twice".into()))?;
        let reveals: Vec<Reveal> = self.reveals.values().flatten().cloned().collect();
        core.finish(&reveals)
    }

    /// Survivors (whose updates are in the sum).
    pub fn survivors(&self) -> &[u32] {
        self.unmask.as_ref().map_or(&[], |(s, _)| s.as_slice())
    }
}

fn key32(bytes: &[u8], what: &str) -> Result<[u8; 32], ServerError> {
    bytes.try_into().map_err(|_| {
        ServerError::InvalidRequest(format!("{what} is {} bytes, not 32", bytes.len()))
    })
}
