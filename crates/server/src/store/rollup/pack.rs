//! The packed form of a roll-up row (see the parent module).
//!
//! Format (version 0): a flags byte (bit 0: `lat_min` present, bit 1:
//! `lat_max` present, bit 2: `lat_n` stored, else it equals `total`; the
//! other bits are 0), then unsigned LEB128 varints of the values' 64-bit
//! two's complement (a negative value takes 10 bytes and still round-trips):
//! `total`, `fails`, `warns`, `lat_n` (if bit 2), `lat_sum`, `lat_min` (if
//! bit 0), `lat_max` (if bit 1: minus `lat_min`, wrapping, when there is a
//! minimum), a bitmap of the non-empty histogram buckets (bit i: bucket i)
//! and their counts, lowest bucket first. Nothing may follow. `ok` is not stored: it is
//! `total − fails` in every row (a warning counts as ok, and migration 7
//! set `fails = total − ok` for the buckets it converted).

use super::Rollup;
use healthchecker_core::CheckResult;

/// Upper edges (exclusive, µs) of the latency buckets; one more bucket
/// holds everything from the last edge up.
pub const BOUNDS_US: [i64; BUCKETS - 1] = [
    2_000, 5_000, 10_000, 20_000, 50_000, 100_000, 200_000, 500_000, 1_000_000, 2_000_000,
    5_000_000,
];
/// Number of latency buckets (`h0` .. `h11`).
pub const BUCKETS: usize = 12;

/// Counts and latency of some checks of one service in one period.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Roll {
    pub(super) total: i64,
    pub(super) fails: i64,
    pub(super) warns: i64,
    pub(super) lat_n: i64,
    pub(super) lat_min: Option<i64>,
    pub(super) lat_sum: i64,
    pub(super) lat_max: Option<i64>,
    pub(super) hist: [i64; BUCKETS],
}

pub(super) fn bucket(us: i64) -> usize {
    BOUNDS_US
        .iter()
        .position(|b| us < *b)
        .unwrap_or(BUCKETS - 1)
}

impl Roll {
    /// Adds one check.
    pub(crate) fn add(&mut self, result: CheckResult, duration_us: i64) {
        self.total += 1;
        self.fails += (result == CheckResult::Fail) as i64;
        self.warns += (result == CheckResult::Warn) as i64;
        self.lat_n += 1;
        self.lat_sum += duration_us;
        self.lat_min = Some(self.lat_min.map_or(duration_us, |m| m.min(duration_us)));
        self.lat_max = Some(self.lat_max.map_or(duration_us, |m| m.max(duration_us)));
        self.hist[bucket(duration_us)] += 1;
    }

    /// Checks that passed or warned (every check that did not fail).
    #[cfg(test)]
    pub(super) fn ok(&self) -> i64 {
        self.total.saturating_sub(self.fails)
    }

    /// Adds another roll of the same service and period (saturating: a
    /// corrupt stored row must not overflow).
    pub(crate) fn merge(&mut self, o: &Roll) {
        self.total = self.total.saturating_add(o.total);
        self.fails = self.fails.saturating_add(o.fails);
        self.warns = self.warns.saturating_add(o.warns);
        self.lat_n = self.lat_n.saturating_add(o.lat_n);
        self.lat_sum = self.lat_sum.saturating_add(o.lat_sum);
        self.lat_min = match (self.lat_min, o.lat_min) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.lat_max = match (self.lat_max, o.lat_max) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        for (h, x) in self.hist.iter_mut().zip(o.hist) {
            *h = h.saturating_add(x);
        }
    }

    /// The row as read back, for `period`.
    pub(crate) fn rollup(&self, period: i64) -> Rollup {
        let (lat_n, min, max) = (self.lat_n, self.lat_min, self.lat_max);
        let p95 = (lat_n > 0).then(|| {
            // The smallest bucket holding at least 95 % of the checks.
            let need = lat_n.saturating_mul(95).saturating_add(99) / 100;
            let mut seen = 0i64;
            let i = self
                .hist
                .iter()
                .position(|h| {
                    seen = seen.saturating_add(*h);
                    seen >= need
                })
                .unwrap_or(BUCKETS - 1);
            let edge = BOUNDS_US.get(i).copied().unwrap_or(i64::MAX);
            let edge = max.map_or(edge, |m| edge.min(m));
            min.map_or(edge, |m| edge.max(m))
        });
        Rollup {
            period,
            count: self.total,
            failures: self.fails,
            warns: self.warns,
            latency_min_us: min,
            latency_mean_us: (lat_n > 0).then(|| self.lat_sum / lat_n),
            latency_max_us: max,
            latency_p95_us: p95,
        }
    }
}

/// Why a packed roll does not decode (a corrupt or hand-edited file).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BadRoll(pub(super) &'static str);

impl std::fmt::Display for BadRoll {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "packed roll-up: {}", self.0)
    }
}

impl std::error::Error for BadRoll {}

const HAS_MIN: u8 = 1;
const HAS_MAX: u8 = 2;
const OWN_LAT_N: u8 = 4;

fn put(out: &mut Vec<u8>, v: i64) {
    let mut v = v as u64;
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Reads varints off the front of a packed roll.
struct Varints<'a>(&'a [u8]);

impl Varints<'_> {
    fn next(&mut self) -> Result<i64, BadRoll> {
        let mut v = 0u64;
        for i in 0..10 {
            let (&byte, rest) = self.0.split_first().ok_or(BadRoll("truncated"))?;
            self.0 = rest;
            // The tenth byte holds the 64th bit only, and ends the number.
            if i == 9 && byte > 1 {
                return Err(BadRoll("a number longer than 64 bits"));
            }
            v |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                return Ok(v as i64);
            }
        }
        Err(BadRoll("a number longer than 64 bits"))
    }
}

/// Appends the packed form of `r` (module docs) to `out`.
pub(crate) fn encode_into(out: &mut Vec<u8>, r: &Roll) {
    let own_n = r.lat_n != r.total;
    out.push(
        if r.lat_min.is_some() { HAS_MIN } else { 0 }
            | if r.lat_max.is_some() { HAS_MAX } else { 0 }
            | if own_n { OWN_LAT_N } else { 0 },
    );
    put(out, r.total);
    put(out, r.fails);
    put(out, r.warns);
    if own_n {
        put(out, r.lat_n);
    }
    put(out, r.lat_sum);
    if let Some(m) = r.lat_min {
        put(out, m);
    }
    if let Some(m) = r.lat_max {
        put(out, m.wrapping_sub(r.lat_min.unwrap_or(0)));
    }
    let map = r
        .hist
        .iter()
        .enumerate()
        .filter(|(_, h)| **h != 0)
        .fold(0i64, |m, (i, _)| m | 1 << i);
    put(out, map);
    for h in r.hist.iter().filter(|h| **h != 0) {
        put(out, *h);
    }
}

/// The packed form of `r` (module docs).
pub(crate) fn encode(r: &Roll) -> Vec<u8> {
    let mut out = Vec::with_capacity(24);
    encode_into(&mut out, r);
    out
}

fn flags(b: &[u8]) -> Result<(u8, Varints<'_>), BadRoll> {
    let (&flags, rest) = b.split_first().ok_or(BadRoll("empty"))?;
    if flags & !(HAS_MIN | HAS_MAX | OWN_LAT_N) != 0 {
        return Err(BadRoll("unknown format"));
    }
    Ok((flags, Varints(rest)))
}

/// Unpacks a roll (module docs); an error, never a panic, for any bytes
/// that are not a packed roll.
pub(crate) fn decode(b: &[u8]) -> Result<Roll, BadRoll> {
    let (flags, mut v) = flags(b)?;
    let (total, fails, warns) = (v.next()?, v.next()?, v.next()?);
    let lat_n = if flags & OWN_LAT_N != 0 {
        v.next()?
    } else {
        total
    };
    let lat_sum = v.next()?;
    let lat_min = if flags & HAS_MIN != 0 {
        Some(v.next()?)
    } else {
        None
    };
    let lat_max = if flags & HAS_MAX != 0 {
        Some(v.next()?.wrapping_add(lat_min.unwrap_or(0)))
    } else {
        None
    };
    let map = v.next()? as u64;
    if map >> BUCKETS != 0 {
        return Err(BadRoll("a latency bucket that does not exist"));
    }
    let mut hist = [0i64; BUCKETS];
    for (i, h) in hist.iter_mut().enumerate() {
        if map & 1 << i != 0 {
            *h = v.next()?;
        }
    }
    if !v.0.is_empty() {
        return Err(BadRoll("bytes after the end"));
    }
    Ok(Roll {
        total,
        fails,
        warns,
        lat_n,
        lat_min,
        lat_sum,
        lat_max,
        hist,
    })
}

/// `(total, fails)` of a packed roll, without unpacking the rest (uptime).
pub(crate) fn decode_counts(b: &[u8]) -> Result<(i64, i64), BadRoll> {
    let (_, mut v) = flags(b)?;
    Ok((v.next()?, v.next()?))
}
