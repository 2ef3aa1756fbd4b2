//! Keys and values of past positions, per layer, optionally as a sliding window.
//!
//! With a window of W positions the cache holds W slots: the first few positions of the
//! sequence ("attention sinks", which StreamingLLM found the model leans on; without them text
//! degenerates as soon as they are evicted) and a ring of the most recent W − sinks positions
//! (the bounded-memory scheme of "LLM in a flash"). Keys are stored after RoPE, at their
//! absolute positions, so evicting old positions never changes the ones kept. Memory grows
//! with use up to the window or the context length, never beyond.
//!
//! Each KV head keeps its own buffers, slot after slot: a query head reads its keys and
//! values as one contiguous stream (the prefetchers' best case) instead of a head-sized
//! piece every `kv_dim` values.

/// Positions the cache grows by. Small steps keep each layer's buffers under the allocator's
/// mmap threshold for the short sequences of scoring (a fresh 256-position step cost a mapping
/// and its page faults per buffer, per scored text).
const GROW: usize = 64;
/// Attention sinks a window keeps (at most half the window).
const SINKS: usize = 4;

/// One layer: per KV head, `[slot][head_dim]` keys and values.
#[derive(Debug, Clone)]
pub(super) struct LayerCache {
    k: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
}

#[derive(Debug, Clone)]
pub struct KvCache {
    head_dim: usize,
    window: Option<usize>,
    /// Leading positions a window always keeps.
    sinks: usize,
    context_len: usize,
    pub(super) layers: Vec<LayerCache>,
    pos: usize,
}

impl KvCache {
    pub(super) fn new(
        n_layers: usize,
        n_kv_heads: usize,
        head_dim: usize,
        context_len: usize,
        window: Option<usize>,
    ) -> Self {
        let layer = LayerCache {
            k: vec![Vec::new(); n_kv_heads],
            v: vec![Vec::new(); n_kv_heads],
        };
        let window = window.filter(|&w| w > 0);
        let sinks = window.map_or(0, |w| SINKS.min(w / 2));
        Self {
            head_dim,
            window,
            sinks,
            context_len,
            layers: vec![layer; n_layers],
            pos: 0,
        }
    }

    /// Positions processed so far (the position of the next token).
    pub fn pos(&self) -> usize {
        self.pos
    }

    pub fn window(&self) -> Option<usize> {
        self.window
    }

    /// Forgets every position (a new sequence).
    pub fn clear(&mut self) {
        self.pos = 0;
        for l in &mut self.layers {
            l.k.iter_mut().chain(&mut l.v).for_each(Vec::clear);
        }
    }

    /// Bytes held by keys and values.
    pub fn memory_bytes(&self) -> usize {
        self.layers
            .iter()
            .flat_map(|l| l.k.iter().chain(&l.v))
            .map(|b| b.capacity() * 4)
            .sum()
    }

    /// Stores position `p`'s keys and values (`[kv_dim]` each, head after head) in layer `l`.
    pub(super) fn store(&mut self, l: usize, p: usize, k: &[f32], v: &[f32]) {
        let (hd, s) = (self.head_dim, self.slot(p));
        let layer = &mut self.layers[l];
        for (g, (kh, vh)) in k.chunks_exact(hd).zip(v.chunks_exact(hd)).enumerate() {
            layer.k[g][s * hd..][..hd].copy_from_slice(kh);
            layer.v[g][s * hd..][..hd].copy_from_slice(vh);
        }
    }

    /// KV head `g`'s keys and values in layer `l`, `[slot][head_dim]`.
    pub(super) fn head(&self, l: usize, g: usize) -> (&[f32], &[f32]) {
        let layer = &self.layers[l];
        (&layer.k[g], &layer.v[g])
    }

    /// Positions a sequence may reach (`usize::MAX` with a window).
    pub fn capacity(&self) -> usize {
        if self.window.is_some() {
            usize::MAX
        } else {
            self.context_len
        }
    }

    pub(super) fn slot(&self, p: usize) -> usize {
        match self.window {
            Some(w) if p >= self.sinks => self.sinks + (p - self.sinks) % (w - self.sinks),
            _ => p,
        }
    }

    /// The positions that position `p` attends to, in increasing order: the sinks, then the
    /// most recent ones up to `p`.
    pub(super) fn visible(&self, p: usize) -> impl Iterator<Item = usize> {
        let recent = self
            .window
            .map_or(0, |w| (p + 1).saturating_sub(w - self.sinks));
        (0..self.sinks.min(recent)).chain(recent..=p)
    }

    /// Whether positions `pos..pos + n` can be written before any of them attends, without
    /// overwriting a slot that one of them still needs.
    pub(super) fn fits_without_wrap(&self, n: usize) -> bool {
        self.window.is_none_or(|w| self.pos + n <= w)
    }

    /// Makes room for slots up to position `end` (exclusive), growing [`GROW`] positions at a
    /// time but never past the window or the context.
    pub(super) fn reserve(&mut self, end: usize) {
        let limit = self.window.unwrap_or(self.context_len);
        let slots = end.min(limit);
        let len = slots * self.head_dim;
        let cap = slots.next_multiple_of(GROW).min(limit).max(slots) * self.head_dim;
        for buf in self
            .layers
            .iter_mut()
            .flat_map(|l| l.k.iter_mut().chain(&mut l.v))
        {
            if buf.len() < len {
                if buf.capacity() < len {
                    buf.reserve_exact(cap - buf.len());
                }
                buf.resize(len, 0.0);
            }
        }
    }

    pub(super) fn advance(&mut self, n: usize) {
        self.pos += n;
    }
}
