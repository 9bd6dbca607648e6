//! The two numbers that cross every module boundary of the daemon, as
//! newtypes: [`ServiceId`] (a service's row id) and [`UnixMs`] (a wall
//! time, milliseconds since the Unix epoch, UTC).
//!
//! Both are `i64` underneath, serialize as that number
//! (`#[serde(transparent)]`), and with the feature `sqlite` bind to and
//! read from SQLite directly (`rusqlite::ToSql`/`FromSql`), so the store
//! keeps its columns and the wire keeps its numbers. Core reads no clock:
//! "now" comes from the daemon's `clock.rs`.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::ops::{Add, Sub};

/// A service's row id (SPEC section 4: `id`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
#[repr(transparent)]
pub struct ServiceId(i64);

impl ServiceId {
    /// The id of row `id`.
    pub const fn new(id: i64) -> Self {
        ServiceId(id)
    }

    /// The row id as a number (SQL binding, wire bodies).
    pub const fn get(self) -> i64 {
        self.0
    }
}

impl From<i64> for ServiceId {
    fn from(id: i64) -> Self {
        ServiceId(id)
    }
}

impl fmt::Display for ServiceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A wall time: milliseconds since the Unix epoch (UTC), as the store and
/// the API keep it.
///
/// Arithmetic stays in milliseconds: `t + ms` and `t - ms` move a time,
/// `t1 - t0` is the `i64` milliseconds between two times.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
#[repr(transparent)]
pub struct UnixMs(i64);

impl UnixMs {
    /// The epoch itself.
    pub const EPOCH: UnixMs = UnixMs(0);

    /// The time `ms` milliseconds after the epoch.
    pub const fn new(ms: i64) -> Self {
        UnixMs(ms)
    }

    /// Milliseconds since the epoch.
    pub const fn get(self) -> i64 {
        self.0
    }

    /// Milliseconds from `earlier` to `self`, 0 if `earlier` is later.
    pub fn since(self, earlier: UnixMs) -> i64 {
        (self.0 - earlier.0).max(0)
    }
}

impl From<i64> for UnixMs {
    fn from(ms: i64) -> Self {
        UnixMs(ms)
    }
}

impl fmt::Display for UnixMs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl Add<i64> for UnixMs {
    type Output = UnixMs;
    fn add(self, ms: i64) -> UnixMs {
        UnixMs(self.0 + ms)
    }
}

impl Sub<i64> for UnixMs {
    type Output = UnixMs;
    fn sub(self, ms: i64) -> UnixMs {
        UnixMs(self.0 - ms)
    }
}

impl Sub<UnixMs> for UnixMs {
    type Output = i64;
    fn sub(self, earlier: UnixMs) -> i64 {
        self.0 - earlier.0
    }
}

#[cfg(feature = "sqlite")]
mod sqlite {
    use super::{ServiceId, UnixMs};
    use rusqlite::types::{FromSql, FromSqlResult, ToSql, ToSqlOutput, ValueRef};

    impl ToSql for ServiceId {
        fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
            Ok(ToSqlOutput::from(self.0))
        }
    }

    impl FromSql for ServiceId {
        fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
            i64::column_result(value).map(ServiceId)
        }
    }

    impl ToSql for UnixMs {
        fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
            Ok(ToSqlOutput::from(self.0))
        }
    }

    impl FromSql for UnixMs {
        fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
            i64::column_result(value).map(UnixMs)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn are_their_numbers_on_the_wire_and_in_arithmetic() {
        let id = ServiceId::new(42);
        assert_eq!(serde_json::to_string(&id).unwrap(), "42");
        assert_eq!(serde_json::from_str::<ServiceId>("42").unwrap(), id);
        assert_eq!(id.to_string(), "42");
        let t = UnixMs::new(1_000);
        assert_eq!(serde_json::to_string(&t).unwrap(), "1000");
        assert_eq!((t + 500).get(), 1_500);
        assert_eq!(t + 500 - t, 500);
        assert_eq!(t.since(t + 1), 0);
        assert!(t < t + 1);
    }
}
