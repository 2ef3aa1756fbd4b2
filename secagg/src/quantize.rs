//! Updates into Z_(2^32) and back: each value clipped to [−clip, clip], mapped onto the
//! integers 0..=L (L = 2^bits − 1) with seeded stochastic rounding (unbiased), and multiplied
//! by the device's weight; the weight itself rides as the last element. Sums of encodings
//! decode to the weighted mean, as long as Σ weight · L < 2^32 ([`fits`]).

use rand::Rng;

/// Under differential privacy with adaptive clipping, a device's "within the clip norm" bit
/// rides as one more word, multiplied by this: distributed noise on the count is then drawn at
/// a scale where the discrete Gaussian is as private as the continuous one.
pub const WITHIN_SCALE: u32 = 1024;

/// How values are quantized.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Quantizer {
    pub clip: f32,
    pub bits: u32,
}

impl Quantizer {
    /// Quantization levels per unit of value: L / (2·clip).
    pub fn scale(&self) -> f64 {
        self.levels() / (2.0 * f64::from(self.clip))
    }

    /// The sum of `n` devices' encoded values (words summed mod 2^32, noise included) as the
    /// sum of their values: each word read as a signed integer, which is exact while
    /// n·L plus the noise stays below 2^31.
    pub fn decode_sum(&self, words: &[u32], n: u32) -> Vec<f64> {
        let (clip, scale) = (f64::from(self.clip), self.scale());
        let offset = f64::from(n) * clip;
        words
            .iter()
            .map(|&w| f64::from(w as i32) / scale - offset)
            .collect()
    }

    pub fn levels(&self) -> f64 {
        f64::from((1u32 << self.bits) - 1)
    }

    /// Whether sums of encodings with these total weights cannot wrap.
    pub fn fits(&self, total_weight: u64) -> bool {
        self.bits >= 1
            && self.bits <= 24
            && (total_weight as f64) * self.levels() < f64::from(u32::MAX)
    }

    /// `weight · q(values)`, then `weight`.
    pub fn encode(&self, values: &[f32], weight: u32, rng: &mut impl Rng) -> Vec<u32> {
        let (clip, levels) = (f64::from(self.clip), self.levels());
        let scale = levels / (2.0 * clip);
        let mut out = Vec::with_capacity(values.len() + 1);
        out.extend(values.iter().map(|&v| {
            // x ≥ 0, so truncation is the floor; round up with probability frac(x).
            let x = (f64::from(v).clamp(-clip, clip) + clip) * scale;
            let q = x as u32;
            let frac = x - f64::from(q);
            let up = f64::from(rng.next_u32()) < frac * 4_294_967_296.0;
            (q + u32::from(up)).min(levels as u32).wrapping_mul(weight)
        }));
        out.push(weight);
        out
    }

    /// The weighted mean of the encodings summed into `sum`, and their total weight.
    pub fn decode(&self, sum: &[u32]) -> (Vec<f32>, u32) {
        let (clip, levels) = (f64::from(self.clip), self.levels());
        let Some((&total, values)) = sum.split_last() else {
            return (Vec::new(), 0);
        };
        let w = f64::from(total.max(1));
        let mean = values
            .iter()
            .map(|&q| (f64::from(q) / w / levels * 2.0 * clip - clip) as f32)
            .collect();
        (mean, total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn sums_decode_to_the_weighted_mean_within_a_level() {
        let q = Quantizer {
            clip: 1.0,
            bits: 16,
        };
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        let a: Vec<f32> = (0..1000).map(|i| ((i as f32) * 0.01).sin() * 0.9).collect();
        let b: Vec<f32> = (0..1000).map(|i| ((i as f32) * 0.03).cos() * 0.5).collect();
        let (ea, eb) = (q.encode(&a, 3, &mut rng), q.encode(&b, 1, &mut rng));
        let sum: Vec<u32> = ea
            .iter()
            .zip(&eb)
            .map(|(x, y)| x.wrapping_add(*y))
            .collect();
        let (mean, w) = q.decode(&sum);
        assert_eq!(w, 4);
        let step = 2.0 / 65535.0;
        for i in 0..1000 {
            let want = (3.0 * a[i] + b[i]) / 4.0;
            assert!((mean[i] - want).abs() <= step, "{i}: {} vs {want}", mean[i]);
        }
        assert!(q.fits(65_000) && !q.fits(70_000));
    }

    /// Stochastic rounding is unbiased: the mean of many encodings of one value is the value.
    #[test]
    fn rounding_is_unbiased_and_clipping_bounds() {
        let q = Quantizer { clip: 1.0, bits: 2 };
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let n = 20_000;
        let mut sum = vec![0u32; 3];
        for _ in 0..n {
            let e = q.encode(&[0.1, 5.0], 1, &mut rng);
            for (s, x) in sum.iter_mut().zip(e) {
                *s = s.wrapping_add(x);
            }
        }
        let (mean, w) = q.decode(&sum);
        assert_eq!(w, n);
        assert!((mean[0] - 0.1).abs() < 0.01, "{}", mean[0]);
        assert_eq!(mean[1], 1.0, "clipped to the range");
    }
}
