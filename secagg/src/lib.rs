//! Secure aggregation as in SecAgg+ (Bell et al. 2020, the semi-honest protocol with dropout
//! recovery): the server learns the sum of the cohort's updates and nothing else.
//!
//! Each device quantizes its update into Z_(2^32) ([`quantize`]), adds a self mask and pairwise
//! masks shared with its neighbours in a sparse random graph ([`prg`], [`keys`]), and
//! Shamir-shares ([`shamir`] over [`gf256`]) its self-mask seed and its masking key with those
//! neighbours, so that after the uploads the survivors can reveal what removes the masks:
//! self-mask seeds of survivors, masking keys of the dropped, never both for one device
//! ([`protocol`]). This crate has no network code; the server and the device runtime carry its
//! messages.

pub mod gf256;
pub mod keys;
pub mod prg;
pub mod protocol;
pub mod quantize;
pub mod shamir;

/// Every way the protocol refuses.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SecAggError {
    #[error("threshold {t} must be at least 2 and at most the {n} shares")]
    Threshold { t: usize, n: usize },
    #[error("{got} shares, at least {t} needed to reconstruct")]
    TooFewShares { got: usize, t: usize },
    #[error("shares of different lengths or repeated points")]
    InconsistentShares,
    #[error("a share failed to decrypt (wrong key, or altered in transit)")]
    Decrypt,
    #[error("asked for both the self-mask seed and the masking key of device {0}")]
    BothSecrets(u32),
    #[error("{0}")]
    Protocol(String),
}
