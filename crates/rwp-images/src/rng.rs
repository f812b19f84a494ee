//! The per-sample random numbers of the augmentations.

/// SplitMix64 (Steele, Lea and Flood, 2014): a 64-bit counter advanced by
/// the golden-ratio increment and passed through a fixed mixing function.
/// Seeded with a sample's seed, it gives the same sequence on every machine;
/// nearby seeds (0, 1, 2, …) give unrelated sequences.
#[derive(Debug, Clone)]
pub struct SplitMix64 {
    counter: u64,
}

impl SplitMix64 {
    #[must_use]
    pub fn new(seed: u64) -> Self {
        Self { counter: seed }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.counter = self.counter.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.counter;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1): the next output's top 53 bits times 2⁻⁵³.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in [low, high).
    pub fn uniform(&mut self, low: f64, high: f64) -> f64 {
        low + (high - low) * self.next_f64()
    }

    /// Uniform over the integers `0..=max` (one draw: ⌊u · (max + 1)⌋).
    pub fn integer_up_to(&mut self, max: u32) -> u32 {
        let drawn = (self.next_f64() * (f64::from(max) + 1.0)) as u32;
        drawn.min(max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix64_matches_the_published_sequence() {
        // The reference implementation's first outputs for seed 1234567.
        let mut rng = SplitMix64::new(1_234_567);
        let expected = [
            6_457_827_717_110_365_317_u64,
            3_203_168_211_198_807_973,
            9_817_491_932_198_370_423,
            4_593_380_528_125_082_431,
            16_408_922_859_458_223_821,
        ];
        for value in expected {
            assert_eq!(rng.next_u64(), value);
        }
    }

    #[test]
    fn draws_stay_in_their_ranges() {
        let mut rng = SplitMix64::new(7);
        let mut seen = [false; 4];
        for _ in 0..10_000 {
            let u = rng.next_f64();
            assert!((0.0..1.0).contains(&u));
            let x = rng.uniform(-2.0, 3.0);
            assert!((-2.0..3.0).contains(&x));
            seen[rng.integer_up_to(3) as usize] = true;
        }
        assert_eq!(seen, [true; 4], "every integer of 0..=3 is drawn");
        assert_eq!(rng.integer_up_to(0), 0);
    }
}
