//! A device's part in a differentially private round: its whole update clipped to the round's
//! L2 norm before anything leaves, and nothing else about its data sent (its example count
//! goes up as 1 and its training metrics stay on the device). In a secure round with
//! distributed noise the device also adds its share of the noise after quantization
//! (`secagg.rs`).

use fedtune_privacy::clip::clip_scale;
use fedtune_privacy::discrete_gaussian;
use fedtune_proto::{FiniteBundle, v1};
use fedtune_secagg::quantize::WITHIN_SCALE;

use crate::ClientError;

/// A checked `DpSetup`: what a private round asks of this device.
#[derive(Debug, Clone, Copy)]
pub struct DpTask {
    pub clip: f64,
    pub report_within: bool,
    /// Distributed noise: the discrete Gaussian's σ per quantized value and for the count.
    pub noise_stddev: f64,
    pub count_noise_stddev: f64,
}

/// What goes up with an update besides its values.
#[derive(Debug, Clone, Copy)]
pub(crate) struct UpdateMeta {
    pub num_examples: u64,
    /// Whether the update was within the clip norm (meaningful when asked for).
    pub within_clip: bool,
}

pub fn checked_setup(setup: &v1::DpSetup) -> Result<DpTask, ClientError> {
    let ok = |x: f64| x.is_finite() && x >= 0.0;
    if !(ok(setup.clip) && setup.clip > 0.0) {
        return Err(ClientError::Protocol(format!(
            "differential privacy: clip norm {} is not a positive number",
            setup.clip
        )));
    }
    // Noise past 2^31 levels would wrap any 32-bit secure sum: a server asking for it is
    // broken or hostile.
    let cap = f64::from(i32::MAX as u32);
    if !(ok(setup.noise_stddev) && ok(setup.count_noise_stddev))
        || setup.noise_stddev > cap
        || setup.count_noise_stddev > cap
    {
        return Err(ClientError::Protocol(format!(
            "differential privacy: noise {} / {} is not a number in [0, 2^31)",
            setup.noise_stddev, setup.count_noise_stddev
        )));
    }
    Ok(DpTask {
        clip: setup.clip,
        report_within: setup.report_within,
        noise_stddev: setup.noise_stddev,
        count_noise_stddev: setup.count_noise_stddev,
    })
}

/// Under differential privacy in a secure round, after quantization and before masking: the
/// within bit goes in as one more word before the weight (when asked for), and with
/// distributed noise every value and that word get this device's share of discrete Gaussian
/// noise (its sum over the cohort is the round's noise; the server never sees less).
pub fn private_words(encoded: &mut Vec<u32>, d: &DpTask, within: bool, rng: &mut impl rand::Rng) {
    let Some(weight) = encoded.pop() else {
        return;
    };
    let noisy = |w: u32, sigma: f64, rng: &mut _| {
        w.wrapping_add(discrete_gaussian::sample(sigma, rng) as i32 as u32)
    };
    if d.noise_stddev > 0.0 {
        for w in encoded.iter_mut() {
            *w = noisy(*w, d.noise_stddev, rng);
        }
    }
    if d.report_within {
        let word = u32::from(within) * WITHIN_SCALE;
        encoded.push(noisy(word, d.count_noise_stddev, rng));
    }
    encoded.push(weight);
}

/// The update clipped to L2 norm `clip` (over all its tensors), and whether it was within.
pub fn clip_update(update: FiniteBundle, clip: f64) -> Result<(FiniteBundle, bool), ClientError> {
    let c = clip_scale(update.bundle().l2_norm(), clip);
    if c.within() {
        return Ok((update, true));
    }
    // A hair under C, so that rounding to the tensors' dtypes cannot take it over.
    let clipped = update
        .bundle()
        .scaled(c.scale * (1.0 - 1e-6))?
        .into_finite()
        .map_err(|e| ClientError::NonFiniteUpdate(e.to_string()))?;
    Ok((clipped, false))
}

#[cfg(test)]
mod tests {
    use super::*;
    use fedtune_privacy::clip::l2_norm;
    use fedtune_proto::{Bundle, Tensor};

    #[test]
    fn clipping_bounds_the_whole_update_and_keeps_small_ones() {
        let t = |name: &str, v: &[f32]| Tensor::from_f32(name, vec![v.len()], v).unwrap();
        let big = Bundle::new(vec![t("a", &[3.0, 0.0]), t("b", &[4.0])])
            .unwrap()
            .into_finite()
            .unwrap();
        let (clipped, within) = clip_update(big, 1.0).unwrap();
        assert!(!within);
        let b = clipped.bundle();
        let norm = l2_norm(
            b.tensors()
                .iter()
                .map(|t| t.to_f32())
                .collect::<Vec<_>>()
                .iter()
                .map(|v| v.as_ref()),
        );
        assert!(norm <= 1.0 && norm > 0.999_99, "{norm}");
        assert!((b.tensors()[1].to_f32()[0] - 0.8).abs() < 1e-5);
        let small = Bundle::new(vec![t("a", &[0.1])])
            .unwrap()
            .into_finite()
            .unwrap();
        let (same, within) = clip_update(small.clone(), 1.0).unwrap();
        assert!(within && same.bundle() == small.bundle());
        let bad = v1::DpSetup {
            clip: f64::NAN,
            ..Default::default()
        };
        assert!(checked_setup(&bad).is_err());
    }
}
