//! Rényi DP of the subsampled Gaussian mechanism, per order, for the two ways a round's cohort
//! can be drawn. The formulas and their numerics follow Google's `dp-accounting`
//! (`RdpAccountant`), which the golden fixture in `privacy/tests/` pins.

mod fixed;
mod poisson;

pub use fixed::fixed_subsampled_gaussian;
pub use poisson::poisson_subsampled_gaussian;

/// The orders RDP is tracked at: those `dp-accounting` uses by default (1.1 to 10.9 in steps of
/// 0.1, the integers 11 to 63, then 128, 256, 512, 1024).
pub fn default_orders() -> Vec<f64> {
    let mut orders: Vec<f64> = (1..100).map(|x| 1.0 + f64::from(x) / 10.0).collect();
    orders.extend((11..64).map(f64::from));
    orders.extend([128.0, 256.0, 512.0, 1024.0]);
    orders
}

/// Whether an order is a whole number (the exact integer formulas apply).
fn integer(alpha: f64) -> Option<u32> {
    (alpha.fract() == 0.0 && alpha >= 1.0 && alpha <= f64::from(u32::MAX)).then_some(alpha as u32)
}
