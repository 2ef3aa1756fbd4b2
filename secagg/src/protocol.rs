//! The steps of one SecAgg+ round between a server and a cohort, as plain values that a
//! transport carries:
//!
//! 0. every device advertises two public keys ([`Device::advert`]);
//! 1. each shares its self-mask seed and its masking key with its advertised neighbours, t of
//!    them needed, each share sealed for its holder ([`Device::share`]; the server routes);
//! 2. each masks its encoded update with its self mask and ± the pairwise masks of the
//!    neighbours whose shares it received, and uploads ([`Device::mask`]); the server sums;
//! 3. the server names survivors (uploaded) and dropped (shared, never uploaded); each device
//!    reveals its shares of survivors' seeds and of the dropped's keys, never both for one
//!    device ([`Device::unmask`]); the server removes every mask ([`Server::finish`]).
//!
//! Fewer than t shares of any needed secret abandon the round with nothing unmasked.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use rand::seq::SliceRandom;
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::SecAggError;
use crate::keys::{KeyPair, LABEL_MASK, LABEL_SHARE, open, seal};
use crate::prg::apply_mask;
use crate::shamir::{Share, reconstruct, split};

/// Settings both sides agree on for a round.
#[derive(Debug, Clone)]
pub struct Params {
    /// Shares needed to reconstruct a device's secret.
    pub threshold: usize,
    /// Salt of the round's key derivations ([`crate::keys::round_context`]).
    pub context: Vec<u8>,
}

/// Each device's neighbours: devices on a ring in a seeded random order, each linked to the
/// `k / 2` before and after it (a Harary graph, as SecAgg+ uses), or to all when k ≥ n − 1.
pub fn neighbour_graph(n: usize, k: usize, seed: u64) -> Vec<Vec<u32>> {
    let mut order: Vec<u32> = (0..n as u32).collect();
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    let mut graph = vec![Vec::new(); n];
    if k + 1 >= n {
        for (i, g) in graph.iter_mut().enumerate() {
            *g = (0..n as u32).filter(|&j| j as usize != i).collect();
        }
        return graph;
    }
    let half = k.div_ceil(2);
    for (p, &id) in order.iter().enumerate() {
        let mut ns: Vec<u32> = (1..=half)
            .flat_map(|d| [order[(p + d) % n], order[(p + n - d) % n]])
            .collect();
        ns.sort_unstable();
        ns.dedup();
        graph[id as usize] = ns;
    }
    graph
}

/// A device's public keys for the round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advert {
    pub id: u32,
    pub c_public: [u8; 32],
    pub s_public: [u8; 32],
}

/// Shares from one device for one neighbour, sealed for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedShares {
    pub from: u32,
    pub to: u32,
    pub bytes: Vec<u8>,
}

/// Which secret a revealed share is of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Secret {
    /// A survivor's self-mask seed.
    SelfSeed,
    /// A dropped device's masking key.
    MaskKey,
}

/// One share revealed to the server in step 3.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reveal {
    pub about: u32,
    pub secret: Secret,
    pub share: Share,
}

/// One device's side of a round.
#[derive(Debug)]
pub struct Device {
    id: u32,
    neighbours: Vec<u32>,
    params: Params,
    c: KeyPair,
    s: KeyPair,
    seed: [u8; 32],
    adverts: HashMap<u32, Advert>,
    /// Share-encryption keys agreed with each neighbour (one X25519 agreement each, used
    /// to seal and to open).
    share_keys: HashMap<u32, [u8; 32]>,
    /// Shares held of each neighbour's (self-mask seed, masking key).
    held: BTreeMap<u32, (Share, Share)>,
}

impl Device {
    /// Fresh keys and self-mask seed for a round (never reused across rounds or attempts).
    pub fn new(id: u32, neighbours: Vec<u32>, params: Params, rng: &mut impl RngCore) -> Self {
        let mut seed = [0u8; 32];
        rng.fill_bytes(&mut seed);
        Device {
            id,
            neighbours,
            params,
            c: KeyPair::generate(rng),
            s: KeyPair::generate(rng),
            seed,
            adverts: HashMap::new(),
            share_keys: HashMap::new(),
            held: BTreeMap::new(),
        }
    }

    pub fn advert(&self) -> Advert {
        Advert {
            id: self.id,
            c_public: self.c.public,
            s_public: self.s.public,
        }
    }

    /// Step 1: shares of the self-mask seed and the masking key for each neighbour that
    /// advertised, sealed under the key agreed with it.
    pub fn share(
        &mut self,
        adverts: &[Advert],
        rng: &mut impl RngCore,
    ) -> Result<Vec<SealedShares>, SecAggError> {
        for a in adverts {
            if a.id != self.id && self.neighbours.contains(&a.id) {
                self.adverts.insert(a.id, a.clone());
            }
        }
        let holders: Vec<(u32, u8)> = self
            .neighbours
            .iter()
            .enumerate()
            .filter(|(_, j)| self.adverts.contains_key(j))
            .map(|(p, &j)| point(p).map(|x| (j, x)))
            .collect::<Result<_, _>>()?;
        let xs: Vec<u8> = holders.iter().map(|&(_, x)| x).collect();
        let t = self.params.threshold;
        let seed_shares = split(&self.seed, &xs, t, rng)?;
        let key_shares = split(&self.s.secret_bytes(), &xs, t, rng)?;
        Ok(holders
            .iter()
            .zip(seed_shares.into_iter().zip(key_shares))
            .map(|(&(j, x), (b, s))| {
                let mut plain = Vec::with_capacity(65);
                plain.push(x);
                plain.extend_from_slice(&b.y);
                plain.extend_from_slice(&s.y);
                let key = self.share_key(j);
                self.share_keys.insert(j, key);
                SealedShares {
                    from: self.id,
                    to: j,
                    bytes: seal(&key, self.id, j, &plain),
                }
            })
            .collect())
    }

    fn share_key(&self, j: u32) -> [u8; 32] {
        self.c.derive(
            &self.adverts[&j].c_public,
            &self.params.context,
            LABEL_SHARE,
        )
    }

    /// Step 2: opens the shares received from neighbours, then masks `encoded`: its self mask,
    /// and + or − the mask agreed with each neighbour whose shares arrived (+ toward higher
    /// ids), so that pairs cancel in the sum.
    pub fn mask(
        &mut self,
        inbox: &[SealedShares],
        encoded: &[u32],
    ) -> Result<Vec<u32>, SecAggError> {
        for m in inbox.iter().filter(|m| m.to == self.id) {
            if !self.adverts.contains_key(&m.from) {
                continue; // not a neighbour of this round
            }
            let key = match self.share_keys.get(&m.from) {
                Some(k) => *k,
                None => self.share_key(m.from),
            };
            let plain = open(&key, m.from, self.id, &m.bytes)?;
            if plain.len() != 65 {
                return Err(SecAggError::Protocol(format!(
                    "shares from device {} are {} bytes, not 65",
                    m.from,
                    plain.len()
                )));
            }
            let x = plain[0];
            let b = Share {
                x,
                y: plain[1..33].to_vec(),
            };
            let s = Share {
                x,
                y: plain[33..65].to_vec(),
            };
            self.held.insert(m.from, (b, s));
        }
        let mut y = encoded.to_vec();
        apply_mask(&mut y, &self.seed, true);
        for &j in self.held.keys() {
            let pair = self
                .s
                .derive(&self.adverts[&j].s_public, &self.params.context, LABEL_MASK);
            apply_mask(&mut y, &pair, j > self.id);
        }
        Ok(y)
    }

    /// Step 3: this device's shares of the survivors' self-mask seeds and of the dropped
    /// devices' masking keys. A device named in both lists would have its update exposed:
    /// refused.
    pub fn unmask(&self, survivors: &[u32], dropped: &[u32]) -> Result<Vec<Reveal>, SecAggError> {
        if let Some(&both) = survivors.iter().find(|j| dropped.contains(j)) {
            return Err(SecAggError::BothSecrets(both));
        }
        if dropped.contains(&self.id) {
            return Err(SecAggError::Protocol(format!(
                "device {} is alive but was named as dropped",
                self.id
            )));
        }
        let mut out = Vec::new();
        for (&j, (b, s)) in &self.held {
            if survivors.contains(&j) {
                out.push(Reveal {
                    about: j,
                    secret: Secret::SelfSeed,
                    share: b.clone(),
                });
            } else if dropped.contains(&j) {
                out.push(Reveal {
                    about: j,
                    secret: Secret::MaskKey,
                    share: s.clone(),
                });
            }
        }
        Ok(out)
    }
}

/// A holder's Shamir point: its place in the sharer's neighbour list, from 1.
fn point(position: usize) -> Result<u8, SecAggError> {
    u8::try_from(position + 1).map_err(|_| SecAggError::Protocol("more than 255 neighbours".into()))
}

/// The server's side of a round: it routes, sums and unmasks, and never holds an unmasked
/// update.
#[derive(Debug)]
pub struct Server {
    params: Params,
    graph: Vec<Vec<u32>>,
    adverts: BTreeMap<u32, Advert>,
    shared: BTreeSet<u32>,
    uploaded: BTreeSet<u32>,
    sum: Vec<u32>,
}

impl Server {
    /// A round over the devices of `graph`, for encoded updates of `len` words.
    pub fn new(params: Params, graph: Vec<Vec<u32>>, len: usize) -> Self {
        Server {
            params,
            graph,
            adverts: BTreeMap::new(),
            shared: BTreeSet::new(),
            uploaded: BTreeSet::new(),
            sum: vec![0; len],
        }
    }

    pub fn advertise(&mut self, a: Advert) {
        if (a.id as usize) < self.graph.len() {
            self.adverts.insert(a.id, a);
        }
    }

    /// The adverts a device needs: its neighbours'.
    pub fn adverts_for(&self, id: u32) -> Vec<Advert> {
        self.graph
            .get(id as usize)
            .into_iter()
            .flatten()
            .filter_map(|j| self.adverts.get(j).cloned())
            .collect()
    }

    /// Records that `from` shared (its sealed shares go on to their holders as they are).
    pub fn shared(&mut self, from: u32) {
        if self.adverts.contains_key(&from) {
            self.shared.insert(from);
        }
    }

    /// Adds a masked update to the sum (wrapping, as it streams in).
    pub fn add_masked(&mut self, id: u32, masked: &[u32]) -> Result<(), SecAggError> {
        if !self.shared.contains(&id) || self.uploaded.contains(&id) {
            return Err(SecAggError::Protocol(format!(
                "device {id} did not share, or uploaded twice"
            )));
        }
        if masked.len() != self.sum.len() {
            return Err(SecAggError::Protocol(format!(
                "masked update of {} words, expected {}",
                masked.len(),
                self.sum.len()
            )));
        }
        for (s, m) in self.sum.iter_mut().zip(masked) {
            *s = s.wrapping_add(*m);
        }
        self.uploaded.insert(id);
        Ok(())
    }

    /// Step 3's question: (survivors, dropped).
    pub fn unmask_request(&self) -> (Vec<u32>, Vec<u32>) {
        let dropped = self.shared.difference(&self.uploaded).copied().collect();
        (self.uploaded.iter().copied().collect(), dropped)
    }

    /// Removes every mask with the revealed shares: the sum of the survivors' encoded updates.
    pub fn finish(mut self, reveals: &[Reveal]) -> Result<Vec<u32>, SecAggError> {
        let t = self.params.threshold;
        let mut by_secret: BTreeMap<(u32, Secret), Vec<Share>> = BTreeMap::new();
        for r in reveals {
            by_secret
                .entry((r.about, r.secret))
                .or_default()
                .push(r.share.clone());
        }
        let (survivors, dropped) = self.unmask_request();
        let secret = |id: u32, kind: Secret| -> Result<[u8; 32], SecAggError> {
            let shares = by_secret.get(&(id, kind)).map_or(&[][..], Vec::as_slice);
            reconstruct(shares, t)?
                .try_into()
                .map_err(|_| SecAggError::InconsistentShares)
        };
        for &j in &survivors {
            apply_mask(&mut self.sum, &secret(j, Secret::SelfSeed)?, false);
        }
        for &j in &dropped {
            let key = KeyPair::from_secret(secret(j, Secret::MaskKey)?);
            for &k in self.graph[j as usize]
                .iter()
                .filter(|k| survivors.contains(k))
            {
                // k masked with j (it held j's shares): k added + toward higher ids.
                let pair = key.derive(&self.adverts[&k].s_public, &self.params.context, LABEL_MASK);
                apply_mask(&mut self.sum, &pair, j < k);
            }
        }
        Ok(self.sum)
    }
}
