//! Deterministic random request bodies for robustness tests: JSON documents that mix the API's real field
//! names with wrong types, extreme numbers, NUL and other control characters, long strings and deep
//! nesting, plus bodies that are not JSON at all. The same seed gives the same bodies, so a failure can
//! be replayed.

use serde_json::{Map, Value, json};

/// xorshift64*: small, deterministic, good enough to spread test inputs.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    pub fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len())]
    }
}

/// A string that is likely to upset a parser or a database.
pub fn string(rng: &mut Rng) -> String {
    match rng.below(10) {
        0 => String::new(),
        1 => "nul\u{0}inside".into(),
        2 => "x".repeat(rng.below(20_000)),
        3 => "ünïcödé ✓ 𝄞 \u{202e}rtl".into(),
        4 => "../../etc/passwd".into(),
        5 => "' OR 1=1; --".into(),
        6 => "\t\r\n\u{7f}\u{1b}[31m".into(),
        7 => format!("{}", rng.next_u64()),
        8 => "-1".into(),
        _ => ["acme", "tmus", "EU", "A", "local", "dev", "x.y-z_1"][rng.below(7)].into(),
    }
}

fn number(rng: &mut Rng) -> Value {
    match rng.below(8) {
        0 => json!(0),
        1 => json!(-1),
        2 => json!(i64::MIN),
        3 => json!(u64::MAX),
        4 => json!(1e308),
        5 => json!(-0.5),
        6 => json!(65536),
        _ => json!(rng.below(100)),
    }
}

/// A random JSON value; objects take their keys mostly from `names`.
pub fn value(rng: &mut Rng, names: &[&str], depth: usize) -> Value {
    let kinds = if depth == 0 { 5 } else { 7 };
    match rng.below(kinds) {
        0 => Value::Null,
        1 => Value::Bool(rng.below(2) == 0),
        2 => number(rng),
        3 | 4 => Value::String(string(rng)),
        5 => Value::Array(
            (0..rng.below(4))
                .map(|_| value(rng, names, depth - 1))
                .collect(),
        ),
        _ => object(rng, names, depth - 1),
    }
}

/// A random JSON object of up to six fields.
pub fn object(rng: &mut Rng, names: &[&str], depth: usize) -> Value {
    let mut m = Map::new();
    for _ in 0..rng.below(7) {
        let key = if !names.is_empty() && rng.below(5) != 0 {
            rng.pick(names).to_string()
        } else {
            string(rng)
        };
        m.insert(key, value(rng, names, depth));
    }
    Value::Object(m)
}

/// A request body: usually a JSON object, sometimes something else entirely.
pub fn body(rng: &mut Rng, names: &[&str]) -> Vec<u8> {
    match rng.below(12) {
        0 => Vec::new(),
        1 => b"{not json".to_vec(),
        2 => (0..rng.below(256)).map(|_| rng.next_u64() as u8).collect(),
        3 => value(rng, names, 2).to_string().into_bytes(),
        4 => {
            // Deeply nested: a parser must not overflow its stack.
            let n = 10_000;
            let mut s = "[".repeat(n);
            s.push_str(&"]".repeat(n));
            s.into_bytes()
        }
        _ => object(rng, names, 3).to_string().into_bytes(),
    }
}
