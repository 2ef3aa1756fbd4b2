//! GF(2^8) with AES's polynomial x^8 + x^4 + x^3 + x + 1, the field of byte-wise Shamir
//! sharing. Multiplication is a fixed eight-step loop without tables or branches on secret
//! values.

/// a · b in GF(2^8).
pub fn mul(a: u8, b: u8) -> u8 {
    let (mut a, mut b, mut p) = (a, b, 0u8);
    for _ in 0..8 {
        p ^= a & 0u8.wrapping_sub(b & 1);
        let carry = 0u8.wrapping_sub(a >> 7);
        a = (a << 1) ^ (0x1B & carry);
        b >>= 1;
    }
    p
}

/// a⁻¹ (a^254); 0 has none and gives 0.
pub fn inv(a: u8) -> u8 {
    // a^254 = a^(2+4+8+16+32+64+128)
    let mut result = 1u8;
    let mut power = a;
    for _ in 1..8 {
        power = mul(power, power);
        result = mul(result, power);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    /// FIPS-197 §4.2: {57}·{83} = {c1}, {57}·{13} = {fe}; §4.2.1's xtime chain.
    #[test]
    fn fips_197_products() {
        assert_eq!(mul(0x57, 0x83), 0xC1);
        assert_eq!(mul(0x57, 0x13), 0xFE);
        assert_eq!(mul(0x57, 0x02), 0xAE);
        assert_eq!(mul(0x57, 0x04), 0x47);
        assert_eq!(mul(0x57, 0x08), 0x8E);
        assert_eq!(mul(0x57, 0x10), 0x07);
    }

    #[test]
    fn every_nonzero_element_has_its_inverse() {
        for a in 1..=255u8 {
            assert_eq!(mul(a, inv(a)), 1, "{a}");
        }
        for a in 0..=255u8 {
            for b in [0u8, 1, 3, 0x53, 0xCA, 0xFF] {
                assert_eq!(mul(a, b), mul(b, a));
            }
        }
    }
}
