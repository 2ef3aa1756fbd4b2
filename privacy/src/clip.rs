//! L2 clipping of a whole update: the step that bounds one device's influence on the sum
//! (its sensitivity) to the clip norm C, whatever it trained on.

/// The L2 norm of an update given as its tensors' values, summed in f64.
pub fn l2_norm<'a>(tensors: impl IntoIterator<Item = &'a [f32]>) -> f64 {
    tensors
        .into_iter()
        .map(|t| t.iter().map(|&v| f64::from(v) * f64::from(v)).sum::<f64>())
        .sum::<f64>()
        .sqrt()
}

/// What clipping did to one update.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Clipped {
    /// The update's norm before clipping.
    pub norm: f64,
    /// The factor every value is multiplied by: min(1, C / norm).
    pub scale: f64,
}

impl Clipped {
    /// Whether the update was within the clip norm (adaptive clipping counts these).
    pub fn within(&self) -> bool {
        self.scale >= 1.0
    }
}

/// The scaling that brings an update of norm `norm` within `clip`.
pub fn clip_scale(norm: f64, clip: f64) -> Clipped {
    let scale = if norm > clip { clip / norm } else { 1.0 };
    Clipped { norm, scale }
}

/// Clips values in place (one tensor of an update; use [`clip_scale`] of the whole update's
/// norm for the factor). Scaling by a factor below 1 in f64 then rounding keeps the clipped
/// norm within C up to f32 rounding, which [`clip_in_place`] absorbs by shrinking 1e-6 more.
pub fn scale_in_place(values: &mut [f32], scale: f64) {
    if scale < 1.0 {
        let s = scale * (1.0 - 1e-6);
        for v in values {
            *v = (f64::from(*v) * s) as f32;
        }
    }
}

/// Clips one flat update in place to L2 norm `clip`.
pub fn clip_in_place(values: &mut [f32], clip: f64) -> Clipped {
    let c = clip_scale(l2_norm([&*values]), clip);
    scale_in_place(values, c.scale);
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clipping_bounds_the_norm_and_keeps_small_updates() {
        let mut big: Vec<f32> = (0..1000).map(|i| (i as f32).sin() * 100.0).collect();
        let before = big.clone();
        let c = clip_in_place(&mut big, 0.5);
        assert!(!c.within() && c.norm > 1000.0);
        assert!(l2_norm([&big[..]]) <= 0.5, "{}", l2_norm([&big[..]]));
        // Direction kept.
        let cos = big
            .iter()
            .zip(&before)
            .map(|(a, b)| f64::from(a * b))
            .sum::<f64>()
            / (l2_norm([&big[..]]) * c.norm);
        assert!(cos > 0.999_999, "{cos}");
        let mut small = vec![0.01f32; 10];
        let c = clip_in_place(&mut small, 1.0);
        assert!(c.within());
        assert_eq!(small, vec![0.01f32; 10]);
        assert!((l2_norm([&[3.0f32][..], &[4.0f32][..]]) - 5.0).abs() < 1e-12);
    }
}
