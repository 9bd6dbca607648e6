//! Which HTTP statuses pass a check.

use super::SpecError;
use std::fmt;
use std::str::FromStr;

/// Which HTTP statuses pass: a list of inclusive ranges (`"200"`, `"200-399"`, `"200,204"`).
///
/// The first range is held inline: every HTTP check asks, and with one
/// range (nearly always) the answer needs no second memory access.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ExpectedStatus {
    first: (u16, u16),
    rest: Vec<(u16, u16)>,
}

impl Default for ExpectedStatus {
    fn default() -> Self {
        ExpectedStatus {
            first: (200, 200),
            rest: Vec::new(),
        }
    }
}

impl ExpectedStatus {
    /// True when `status` is acceptable.
    pub fn matches(&self, status: u16) -> bool {
        let within = |(lo, hi): &(u16, u16)| (*lo..=*hi).contains(&status);
        within(&self.first) || self.rest.iter().any(within)
    }
}

impl fmt::Display for ExpectedStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = std::iter::once(&self.first)
            .chain(&self.rest)
            .map(|(lo, hi)| {
                if lo == hi {
                    lo.to_string()
                } else {
                    format!("{lo}-{hi}")
                }
            })
            .collect();
        f.write_str(&parts.join(","))
    }
}

impl FromStr for ExpectedStatus {
    type Err = SpecError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || {
            SpecError::invalid(
                "expected_status",
                format!("invalid expected_status {s:?} (valid: codes or ranges from 100 to 599, e.g. \"200\", \"200-399\", \"200,204\")"),
            )
        };
        let code = |t: &str| -> Result<u16, SpecError> {
            let v: u16 = t.trim().parse().map_err(|_| bad())?;
            if (100..=599).contains(&v) {
                Ok(v)
            } else {
                Err(bad())
            }
        };
        let mut ranges = Vec::new();
        for part in s.split(',') {
            let r = match part.split_once('-') {
                Some((a, b)) => (code(a)?, code(b)?),
                None => {
                    let c = code(part)?;
                    (c, c)
                }
            };
            if r.0 > r.1 {
                return Err(bad());
            }
            ranges.push(r);
        }
        if ranges.is_empty() || ranges.len() > 16 {
            return Err(bad());
        }
        let first = ranges.remove(0);
        Ok(ExpectedStatus {
            first,
            rest: ranges,
        })
    }
}
