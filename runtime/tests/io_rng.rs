//! Rng: determinism, checkpointable state, forks, ranges and distributions.

use resnetc_runtime::rng::Rng;

#[test]
fn same_seed_same_sequence_different_seed_different() {
    let mut a = Rng::new(7);
    let mut b = Rng::new(7);
    let mut c = Rng::new(8);
    let va: Vec<u64> = (0..100).map(|_| a.next_u64()).collect();
    let vb: Vec<u64> = (0..100).map(|_| b.next_u64()).collect();
    let vc: Vec<u64> = (0..100).map(|_| c.next_u64()).collect();
    assert_eq!(va, vb);
    assert_ne!(va, vc);
}

#[test]
fn state_round_trip_resumes_exactly() {
    let mut a = Rng::new(123);
    for _ in 0..17 {
        a.next_u64();
    }
    let saved = a.state();
    let expect: Vec<u64> = (0..50).map(|_| a.next_u64()).collect();
    let mut b = Rng::from_state(saved);
    let got: Vec<u64> = (0..50).map(|_| b.next_u64()).collect();
    assert_eq!(expect, got);
    // The all-zero state is degenerate and replaced.
    let mut z = Rng::from_state([0; 4]);
    assert_ne!(z.next_u64(), 0);
}

#[test]
fn fork_is_deterministic_independent_and_does_not_advance_parent() {
    let parent = Rng::new(5);
    let before = parent.state();
    let mut f1 = parent.fork(1);
    let mut f1b = parent.fork(1);
    let mut f2 = parent.fork(2);
    assert_eq!(parent.state(), before);
    let s1: Vec<u64> = (0..20).map(|_| f1.next_u64()).collect();
    let s1b: Vec<u64> = (0..20).map(|_| f1b.next_u64()).collect();
    let s2: Vec<u64> = (0..20).map(|_| f2.next_u64()).collect();
    assert_eq!(s1, s1b);
    assert_ne!(s1, s2);
    let mut p = parent.clone();
    let sp: Vec<u64> = (0..20).map(|_| p.next_u64()).collect();
    assert_ne!(s1, sp);
}

#[test]
fn uniform_and_below_ranges() {
    let mut r = Rng::new(1);
    let mut counts = [0usize; 10];
    for _ in 0..20_000 {
        let f = r.uniform_f32();
        assert!((0.0..1.0).contains(&f));
        let d = r.uniform_f64();
        assert!((0.0..1.0).contains(&d));
        let k = r.below(10);
        assert!(k < 10);
        counts[k as usize] += 1;
    }
    for c in counts {
        assert!(
            (1700..2300).contains(&c),
            "below(10) is not uniform: {counts:?}"
        );
    }
    assert_eq!(r.below(1), 0);
    assert_eq!(r.below(0), 0);
    for _ in 0..100 {
        assert!(r.below(u64::MAX) < u64::MAX);
    }
}

#[test]
fn normal_has_zero_mean_unit_variance() {
    let mut r = Rng::new(99);
    let n = 50_000;
    let xs: Vec<f64> = (0..n).map(|_| r.normal_f32() as f64).collect();
    assert!(xs.iter().all(|x| x.is_finite()));
    let mean = xs.iter().sum::<f64>() / n as f64;
    let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64;
    assert!(mean.abs() < 0.03, "mean {mean}");
    assert!((var - 1.0).abs() < 0.05, "var {var}");
}

#[test]
fn shuffle_is_a_deterministic_permutation() {
    let mut a: Vec<usize> = (0..100).collect();
    let mut b = a.clone();
    Rng::new(3).shuffle(&mut a);
    Rng::new(3).shuffle(&mut b);
    assert_eq!(a, b);
    assert_ne!(a, (0..100).collect::<Vec<_>>());
    let mut sorted = a.clone();
    sorted.sort();
    assert_eq!(sorted, (0..100).collect::<Vec<_>>());
    // Every position receives every value over many shuffles (no fixed bias at position 0).
    let mut seen = [false; 5];
    let mut r = Rng::new(11);
    for _ in 0..200 {
        let mut v = [0, 1, 2, 3, 4];
        r.shuffle(&mut v);
        seen[v[0]] = true;
    }
    assert!(seen.iter().all(|s| *s));
}

/// The hand-written xoshiro256** that `Rng` used before it wrapped `rand_xoshiro`, kept as the
/// oracle: training runs, checkpoints (their `rng_state`) and the shuffle orders recorded
/// before depend on every bit.
mod before {
    fn splitmix64(x: &mut u64) -> u64 {
        *x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = *x;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub struct Rng {
        pub s: [u64; 4],
    }

    impl Rng {
        pub fn new(seed: u64) -> Rng {
            let mut x = seed;
            let s = [
                splitmix64(&mut x),
                splitmix64(&mut x),
                splitmix64(&mut x),
                splitmix64(&mut x),
            ];
            Rng::from_state(s)
        }

        pub fn from_state(s: [u64; 4]) -> Rng {
            if s == [0; 4] {
                return Rng::new(0);
            }
            Rng { s }
        }

        pub fn next_u64(&mut self) -> u64 {
            let s = &mut self.s;
            let result = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
            let t = s[1] << 17;
            s[2] ^= s[0];
            s[3] ^= s[1];
            s[1] ^= s[2];
            s[0] ^= s[3];
            s[2] ^= t;
            s[3] = s[3].rotate_left(45);
            result
        }

        pub fn fork(&self, stream: u64) -> Rng {
            let mut x = self.s[0]
                ^ self.s[1].rotate_left(13)
                ^ self.s[2].rotate_left(29)
                ^ self.s[3].rotate_left(43)
                ^ splitmix64(&mut stream.wrapping_mul(0xD1B5_4A32_D192_ED03).wrapping_add(1));
            let s = [
                splitmix64(&mut x),
                splitmix64(&mut x),
                splitmix64(&mut x),
                splitmix64(&mut x),
            ];
            Rng::from_state(s)
        }
    }
}

#[test]
fn bit_identical_to_the_generator_before_rand_xoshiro() {
    for seed in [0u64, 1, 42, 0xDEAD_BEEF, u64::MAX] {
        let mut new = Rng::new(seed);
        let mut old = before::Rng::new(seed);
        assert_eq!(new.state(), old.s, "seed {seed}: initial state");
        for i in 0..1000 {
            assert_eq!(new.next_u64(), old.next_u64(), "seed {seed}, draw {i}");
        }
        // A checkpoint's state words restore the same stream, in both directions.
        assert_eq!(new.state(), old.s);
        let mut restored = Rng::from_state(old.s);
        assert_eq!(restored.next_u64(), old.next_u64());
        new.next_u64();
        assert_eq!(new.state(), old.s);
        // Forks (per epoch, per image) and forks of forks.
        for stream in [0u64, 1, 7, 1 << 40] {
            let mut f = new.fork(stream).fork(stream ^ 3);
            let mut g = old.fork(stream).fork(stream ^ 3);
            for _ in 0..50 {
                assert_eq!(f.next_u64(), g.next_u64(), "seed {seed}, stream {stream}");
            }
        }
    }
    // The degenerate all-zero state maps to the same replacement.
    let mut z = Rng::from_state([0; 4]);
    let mut oz = before::Rng::from_state([0; 4]);
    assert_eq!(z.next_u64(), oz.next_u64());
}
