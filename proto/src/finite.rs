//! A bundle proved finite: the check is done once, where the bundle is formed, and the type
//! carries the proof. Only [`Bundle::into_finite`] makes one, and bundles are immutable, so
//! whoever holds a [`FiniteBundle`] in the same process need not scan it again (the
//! simulation's in-process handover relies on this; bytes from the network are still checked
//! as they arrive).

use crate::{Bundle, CodecError};

/// A [`Bundle`] whose every value is finite.
#[derive(Clone, Debug, PartialEq)]
pub struct FiniteBundle(Bundle);

impl Bundle {
    /// The bundle with the proof that all its values are finite, or where the first NaN or
    /// infinity is.
    pub fn into_finite(self) -> Result<FiniteBundle, CodecError> {
        self.check_finite()?;
        Ok(FiniteBundle(self))
    }
}

impl FiniteBundle {
    pub fn bundle(&self) -> &Bundle {
        &self.0
    }

    pub fn into_bundle(self) -> Bundle {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Tensor;

    fn bundle(v: &[f32]) -> Bundle {
        Bundle::new(vec![Tensor::from_f32("w", vec![v.len()], v).unwrap()]).unwrap()
    }

    #[test]
    fn only_finite_bundles_get_the_proof() {
        let good = bundle(&[0.0, -1.5, f32::MAX, f32::MIN_POSITIVE / 2.0]);
        assert_eq!(good.clone().into_finite().unwrap().bundle(), &good);
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            let e = bundle(&[0.0, 0.0, bad]).into_finite().unwrap_err();
            assert!(
                e.to_string()
                    .contains("`w` holds a non-finite value at element 2"),
                "{e}"
            );
        }
    }
}
