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

use half::f16;
use half::slice::HalfFloatSliceExt;

/// How keys and values are stored, as llama.cpp's `--cache-type-k/-v`: f32 (exact, the
/// arithmetic of llama.cpp's f32 cache) or f16 (llama.cpp's default: half the memory and half
/// the bytes each generated token reads).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum KvType {
    #[default]
    F32,
    F16,
}

impl KvType {
    pub fn name(self) -> &'static str {
        match self {
            KvType::F32 => "f32",
            KvType::F16 => "f16",
        }
    }
}

/// One KV head's keys or values, `[slot][head_dim]`.
#[derive(Debug, Clone)]
enum Buf {
    F32(Vec<f32>),
    F16(Vec<f16>),
}

impl Buf {
    fn new(ty: KvType) -> Self {
        match ty {
            KvType::F32 => Buf::F32(Vec::new()),
            KvType::F16 => Buf::F16(Vec::new()),
        }
    }

    fn bytes(&self) -> usize {
        match self {
            Buf::F32(b) => b.capacity() * 4,
            Buf::F16(b) => b.capacity() * 2,
        }
    }

    fn clear(&mut self) {
        match self {
            Buf::F32(b) => b.clear(),
            Buf::F16(b) => b.clear(),
        }
    }

    /// Grows to `len` values, reserving up to `cap` at once.
    fn grow(&mut self, len: usize, cap: usize) {
        fn grow<T: Copy>(b: &mut Vec<T>, len: usize, cap: usize, zero: T) {
            if b.len() < len {
                if b.capacity() < len {
                    b.reserve_exact(cap - b.len());
                }
                b.resize(len, zero);
            }
        }
        match self {
            Buf::F32(b) => grow(b, len, cap, 0.0),
            Buf::F16(b) => grow(b, len, cap, f16::ZERO),
        }
    }

    fn write(&mut self, at: usize, x: &[f32]) {
        match self {
            Buf::F32(b) => b[at..at + x.len()].copy_from_slice(x),
            Buf::F16(b) => b[at..at + x.len()].convert_from_f32_slice(x),
        }
    }
}

/// One KV head's keys and values in one layer, `[slot][head_dim]` each.
pub(super) enum HeadKv<'a> {
    F32(&'a [f32], &'a [f32]),
    F16(&'a [f16], &'a [f16]),
}

/// Positions the cache grows by. Small steps keep each layer's buffers under the allocator's
/// mmap threshold for the short sequences of scoring (a fresh 256-position step cost a mapping
/// and its page faults per buffer, per scored text).
const GROW: usize = 64;
/// Attention sinks a window keeps (at most half the window).
const SINKS: usize = 4;

/// One layer: per KV head, `[slot][head_dim]` keys and values.
#[derive(Debug, Clone)]
pub(super) struct LayerCache {
    k: Vec<Buf>,
    v: Vec<Buf>,
}

#[derive(Debug, Clone)]
pub struct KvCache {
    head_dim: usize,
    ty: KvType,
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
        ty: KvType,
    ) -> Self {
        let layer = LayerCache {
            k: vec![Buf::new(ty); n_kv_heads],
            v: vec![Buf::new(ty); n_kv_heads],
        };
        let window = window.filter(|&w| w > 0);
        let sinks = window.map_or(0, |w| SINKS.min(w / 2));
        Self {
            head_dim,
            ty,
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

    /// How keys and values are stored.
    pub fn kv_type(&self) -> KvType {
        self.ty
    }

    /// Forgets every position (a new sequence).
    pub fn clear(&mut self) {
        self.pos = 0;
        for l in &mut self.layers {
            l.k.iter_mut().chain(&mut l.v).for_each(Buf::clear);
        }
    }

    /// Bytes held by keys and values.
    pub fn memory_bytes(&self) -> usize {
        self.layers
            .iter()
            .flat_map(|l| l.k.iter().chain(&l.v))
            .map(Buf::bytes)
            .sum()
    }

    /// Stores position `p`'s keys and values (`[kv_dim]` each, head after head) in layer `l`.
    pub(super) fn store(&mut self, l: usize, p: usize, k: &[f32], v: &[f32]) {
        let (hd, s) = (self.head_dim, self.slot(p));
        let layer = &mut self.layers[l];
        for (g, (kh, vh)) in k.chunks_exact(hd).zip(v.chunks_exact(hd)).enumerate() {
            layer.k[g].write(s * hd, kh);
            layer.v[g].write(s * hd, vh);
        }
    }

    /// KV head `g`'s keys and values in layer `l`.
    pub(super) fn head(&self, l: usize, g: usize) -> HeadKv<'_> {
        let layer = &self.layers[l];
        match (&layer.k[g], &layer.v[g]) {
            (Buf::F16(k), Buf::F16(v)) => HeadKv::F16(k, v),
            (Buf::F32(k), Buf::F32(v)) => HeadKv::F32(k, v),
            _ => unreachable!("keys and values share one type"),
        }
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
            buf.grow(len, cap);
        }
    }

    pub(super) fn advance(&mut self, n: usize) {
        self.pos += n;
    }
}
