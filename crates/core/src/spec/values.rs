//! The numbers of a registration as newtypes: [`Interval`], [`Timeout`],
//! [`Threshold`], [`Port`], [`CertWarnDays`], [`Period`] and [`Grace`].
//!
//! Each is read from a JSON number or a numeric string (HTML forms and the
//! seed's client send strings) and knows its valid range, so a refusal
//! quotes the value and the range whatever the input looked like. The
//! serde helpers for the other loose fields (text, booleans, lists) are
//! here too: every one accepts any JSON value and refuses it with a message
//! of the same shape, `<value> (<what is valid>)`, which
//! [`super::register`] prefixes with `invalid <field> `.

use serde::{de::Error as _, Deserialize, Deserializer, Serialize};
use serde_json::Value;
use std::ops::RangeInclusive;

/// How a value is quoted in a message: a string in quotes, anything else
/// as JSON.
pub(crate) fn describe(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{s:?}"),
        other => other.to_string(),
    }
}

/// The message of a number out of `range`: `<value> (valid: a to b<unit>)`.
fn out_of_range(v: &dyn std::fmt::Display, range: &RangeInclusive<u32>, unit: &str) -> String {
    format!("{v} (valid: {} to {}{unit})", range.start(), range.end())
}

/// Reads a whole number in `range` from a JSON number or a numeric string.
/// `Err` is the message after `invalid <field> `.
pub(crate) fn whole_number(
    v: &Value,
    range: &RangeInclusive<u32>,
    unit: &str,
) -> Result<u32, String> {
    let bad = || out_of_range(&describe(v), range, unit);
    let n: i64 = match v {
        Value::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => i,
            (None, Some(f)) if f.fract() == 0.0 && f.abs() < 1e12 => f as i64,
            _ => return Err(bad()),
        },
        Value::String(s) => s.trim().parse().map_err(|_| bad())?,
        _ => return Err(bad()),
    };
    u32::try_from(n)
        .ok()
        .filter(|n| range.contains(n))
        .ok_or_else(bad)
}

macro_rules! bounded {
    ($(#[$doc:meta])* $name:ident($int:ty), $range:expr, $unit:literal) => {
        $(#[$doc])*
        ///
        /// Read from a JSON number or a numeric string; written as a number.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
        #[serde(transparent)]
        pub struct $name($int);

        impl $name {
            /// Valid values.
            pub const RANGE: RangeInclusive<u32> = $range;

            /// The value as given; [`Self::valid`] checks it (deserializing
            /// checks it too).
            pub const fn new(v: $int) -> Self {
                Self(v)
            }

            /// The value.
            pub const fn get(self) -> $int {
                self.0
            }

            /// The value when within [`Self::RANGE`]; `Err` quotes it and
            /// the range (the message after `invalid <field> `).
            pub fn valid(self) -> Result<$int, String> {
                if Self::RANGE.contains(&u32::from(self.0)) {
                    Ok(self.0)
                } else {
                    Err(out_of_range(&self.0, &Self::RANGE, $unit))
                }
            }
        }

        impl From<$int> for $name {
            fn from(v: $int) -> Self {
                Self(v)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let v = Value::deserialize(d)?;
                let n = whole_number(&v, &Self::RANGE, $unit).map_err(D::Error::custom)?;
                <$int>::try_from(n).map(Self).map_err(|_| {
                    D::Error::custom(out_of_range(&describe(&v), &Self::RANGE, $unit))
                })
            }
        }

        #[cfg(feature = "openapi")]
        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                loose_number_schema(&Self::RANGE)
            }
        }

        #[cfg(feature = "openapi")]
        impl utoipa::ToSchema for $name {}
    };
}

bounded!(
    /// Seconds between checks (SPEC section 2: 5 to 300).
    Interval(u32), super::INTERVAL_RANGE, " seconds"
);
bounded!(
    /// Response timeout in seconds (2 to 60, below the interval).
    Timeout(u32), super::TIMEOUT_RANGE, " seconds"
);
bounded!(
    /// Consecutive results that change the state (2 to 10), healthy or
    /// unhealthy.
    Threshold(u32), super::THRESHOLD_RANGE, ""
);
bounded!(
    /// Days before certificate expiry that turn a check into a warn
    /// (0 to 365; 0: no expiry check).
    CertWarnDays(u32), super::CERT_WARN_DAYS_RANGE, " days"
);
bounded!(
    /// A target's TCP or UDP port (1 to 65535).
    Port(u16), 1..=65535, ""
);
bounded!(
    /// A heartbeat's period: seconds between the job's runs (60 s to 365 d).
    Period(u32), crate::heartbeat::PERIOD_RANGE, " seconds"
);
bounded!(
    /// A heartbeat's grace: seconds of lateness tolerated (60 s to 30 d).
    Grace(u32), crate::heartbeat::GRACE_RANGE, " seconds"
);

/// `oneOf: [integer in range, numeric string]`.
#[cfg(feature = "openapi")]
fn loose_number_schema(
    range: &RangeInclusive<u32>,
) -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Type};
    OneOfBuilder::new()
        .item(
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .minimum(Some(*range.start()))
                .maximum(Some(*range.end())),
        )
        .item(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some("^ *[0-9]+ *$")),
        )
        .into()
}

/// `deserialize_with` of a text field: a JSON string (null: absent).
pub(crate) fn text<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    match Option::<Value>::deserialize(d)? {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(D::Error::custom(format!(
            "{} (expected a string)",
            describe(&other)
        ))),
    }
}

/// `deserialize_with` of `tls_verify`: a boolean, or `true`/`1`/`yes`/`on`
/// and `false`/`0`/`no`/`off` as strings.
pub(crate) fn loose_bool<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    let v = match Option::<Value>::deserialize(d)? {
        None | Some(Value::Null) => return Ok(None),
        Some(v) => v,
    };
    match &v {
        Value::Bool(b) => return Ok(Some(*b)),
        Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => return Ok(Some(true)),
            "false" | "0" | "no" | "off" => return Ok(Some(false)),
            _ => {}
        },
        _ => {}
    }
    Err(D::Error::custom(format!(
        "{} (valid: true or false)",
        describe(&v)
    )))
}

/// `deserialize_with` of `expected_status`: a string (`"200-399"`) or a
/// number (`204`), kept as text; [`super::ExpectedStatus`] parses it.
pub(crate) fn status_text<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    match Option::<Value>::deserialize(d)? {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(D::Error::custom(format!(
            "{} (expected a string such as \"200-399\")",
            describe(&other)
        ))),
    }
}

/// `deserialize_with` of a list of names (`channels`, `tags`,
/// `depends_on`): a JSON list of strings; each is validated later.
pub(crate) fn names<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    let v = match Option::<Value>::deserialize(d)? {
        None | Some(Value::Null) => return Ok(None),
        Some(v) => v,
    };
    let bad = || D::Error::custom(format!("{} (expected a list of names)", describe(&v)));
    let Value::Array(items) = &v else {
        return Err(bad());
    };
    items
        .iter()
        .map(|i| i.as_str().map(str::to_string).ok_or_else(bad))
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}
