//! Decoding stored rows by column name, strictly.
//!
//! Every record type has one decoding function, its [`Record::decode`],
//! that reads its columns by name through a [`Fields`]; [`all`] and [`one`]
//! run a statement and decode its rows. A value that does not decode — an unknown state or kind, a
//! recipient that is not an address, a JSON list that does not parse, a
//! NULL or a number where the schema has none — is a
//! [`StoreError::Corrupt`](super::StoreError::Corrupt) naming the table, the
//! row id and the column: nothing is repaired or dropped silently.

use rusqlite::types::FromSql;
use rusqlite::{Params, Row, Statement};
use std::str::FromStr;

/// A record type stored as one row of `TABLE`, with its one decoder.
pub(crate) trait Record: Sized {
    /// The table, for errors.
    const TABLE: &'static str;
    /// Reads the record from a row (its `id` column names it in errors).
    fn decode(f: &Fields<'_, '_>) -> rusqlite::Result<Self>;
}

/// A statement's column names, read once per query rather than once per
/// value (each name from SQLite is an FFI call and a UTF-8 check: looking
/// names up in the row itself made decoding a service row 2.3 µs slower).
pub(crate) struct Columns(Vec<String>);

impl Columns {
    /// The columns of `stmt`.
    pub(crate) fn of(stmt: &Statement<'_>) -> Columns {
        Columns(stmt.column_names().map(str::to_string).collect())
    }
}

/// Every row of `stmt` run with `params`, decoded as `T`.
pub(crate) fn all<T: Record, P: Params>(
    stmt: &mut Statement<'_>,
    params: P,
) -> rusqlite::Result<Vec<T>> {
    let cols = Columns::of(stmt);
    let mut rows = stmt.query(params)?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        out.push(T::decode(&Fields::new(r, Some(&cols), T::TABLE)?)?);
    }
    Ok(out)
}

/// The first row of `stmt` run with `params`, decoded as `T`, if any.
pub(crate) fn one<T: Record, P: Params>(
    stmt: &mut Statement<'_>,
    params: P,
) -> rusqlite::Result<Option<T>> {
    let cols = Columns::of(stmt);
    let mut rows = stmt.query(params)?;
    match rows.next()? {
        Some(r) => Ok(Some(T::decode(&Fields::new(r, Some(&cols), T::TABLE)?)?)),
        None => Ok(None),
    }
}

/// Where a stored value that does not decode was found, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Corruption {
    /// The table.
    pub table: String,
    /// The row's id, when the row has one.
    pub row: Option<i64>,
    /// The column.
    pub column: String,
    /// What is wrong with the value.
    pub detail: String,
}

impl std::fmt::Display for Corruption {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "table {}", self.table)?;
        if let Some(id) = self.row {
            write!(f, ", row {id}")?;
        }
        write!(f, ", column {}: {}", self.column, self.detail)
    }
}

impl std::error::Error for Corruption {}

impl Corruption {
    /// Wrapped in a `rusqlite::Error`, the error type of row-mapping
    /// closures; `From<rusqlite::Error> for StoreError` unwraps it again.
    pub(crate) fn into_sqlite(self) -> rusqlite::Error {
        rusqlite::Error::ToSqlConversionFailure(Box::new(self))
    }
}

/// The columns of one row of `table`, read by name.
///
/// A name is looked up from the column after the one last found, so a
/// decoder reading mostly in `SELECT` order compares one or two names per
/// column instead of scanning the list (rusqlite's `Row::get(&str)`
/// compares with every column before it: about 18 per column for a
/// service row of 37). The lookup is always by name; the order only makes
/// it cheap.
pub(crate) struct Fields<'a, 'r> {
    row: &'a Row<'r>,
    cols: Option<&'a Columns>,
    table: &'static str,
    id: Option<i64>,
    next: std::cell::Cell<usize>,
}

impl<'a, 'r> Fields<'a, 'r> {
    /// A row of `table` whose `id` column names it in errors.
    pub(crate) fn new(
        row: &'a Row<'r>,
        cols: Option<&'a Columns>,
        table: &'static str,
    ) -> rusqlite::Result<Self> {
        let mut f = Fields::unnamed(row, table);
        f.cols = cols;
        f.id = Some(f.get("id")?);
        Ok(f)
    }

    /// A row without an id column (an aggregate).
    pub(crate) fn unnamed(row: &'a Row<'r>, table: &'static str) -> Self {
        Fields {
            row,
            cols: None,
            table,
            id: None,
            next: std::cell::Cell::new(0),
        }
    }

    /// The index of `column` in the row.
    fn index(&self, column: &str) -> rusqlite::Result<usize> {
        let stmt: &Statement<'_> = self.row.as_ref();
        let n = stmt.column_count();
        let start = self.next.get();
        for i in (start..n).chain(0..start.min(n)) {
            let found = match self.cols {
                Some(cols) => cols
                    .0
                    .get(i)
                    .is_some_and(|c| c.eq_ignore_ascii_case(column)),
                None => stmt
                    .column_name(i)
                    .is_ok_and(|c| c.eq_ignore_ascii_case(column)),
            };
            if found {
                self.next.set(i + 1);
                return Ok(i);
            }
        }
        Err(rusqlite::Error::InvalidColumnName(column.into()))
    }

    /// The row id (0 for a row without one).
    pub(crate) fn id(&self) -> i64 {
        self.id.unwrap_or(0)
    }

    /// The error for `column` holding a bad value.
    pub(crate) fn corrupt(&self, column: &str, detail: impl Into<String>) -> rusqlite::Error {
        Corruption {
            table: self.table.into(),
            row: self.id,
            column: column.into(),
            detail: detail.into(),
        }
        .into_sqlite()
    }

    /// A column as SQLite's type maps to `T`; a NULL or a value of the
    /// wrong type is corrupt.
    pub(crate) fn get<T: FromSql>(&self, column: &str) -> rusqlite::Result<T> {
        self.row.get(self.index(column)?).map_err(|e| match e {
            rusqlite::Error::InvalidColumnType(..)
            | rusqlite::Error::FromSqlConversionFailure(..)
            | rusqlite::Error::IntegralValueOutOfRange(..) => self.corrupt(column, e.to_string()),
            other => other,
        })
    }

    /// A text column parsed with `FromStr` (states, results, kinds).
    pub(crate) fn parse<T: FromStr>(&self, column: &str) -> rusqlite::Result<T> {
        let text: String = self.get(column)?;
        text.parse()
            .map_err(|_| self.corrupt(column, format!("unknown value {text:?}")))
    }

    /// A nullable text column parsed with `FromStr`.
    pub(crate) fn parse_opt<T: FromStr>(&self, column: &str) -> rusqlite::Result<Option<T>> {
        match self.get::<Option<String>>(column)? {
            None => Ok(None),
            Some(text) => text
                .parse()
                .map(Some)
                .map_err(|_| self.corrupt(column, format!("unknown value {text:?}"))),
        }
    }

    /// A text column holding JSON.
    pub(crate) fn json<T: serde::de::DeserializeOwned>(&self, column: &str) -> rusqlite::Result<T> {
        let text: String = self.get(column)?;
        serde_json::from_str(&text).map_err(|e| self.corrupt(column, format!("bad JSON: {e}")))
    }

    /// A JSON list of strings, each parsed with `FromStr` (addresses).
    pub(crate) fn json_list<T: FromStr>(&self, column: &str) -> rusqlite::Result<Vec<T>> {
        let items: Vec<String> = self.json(column)?;
        items
            .into_iter()
            .map(|s| {
                s.parse()
                    .map_err(|_| self.corrupt(column, format!("bad item {s:?}")))
            })
            .collect()
    }
}

/// The state-event columns every outbox row (`notifications`,
/// `deliveries`) carries, decoded one way for all of them.
pub(crate) struct Announced {
    pub(crate) service_id: healthchecker_core::ServiceId,
    pub(crate) service: String,
    pub(crate) created_at: i64,
    pub(crate) from: healthchecker_core::HealthState,
    pub(crate) to: healthchecker_core::HealthState,
    pub(crate) reason: Option<String>,
}

impl Announced {
    /// Reads `service_id, service, created_at, from_state, to_state, reason`.
    pub(crate) fn decode(f: &Fields<'_, '_>) -> rusqlite::Result<Announced> {
        Ok(Announced {
            service_id: f.get("service_id")?,
            service: f.get("service")?,
            created_at: f.get("created_at")?,
            from: f.parse("from_state")?,
            to: f.parse("to_state")?,
            reason: f.get("reason")?,
        })
    }
}

/// The delivery-attempt columns every outgoing message's row
/// (`notifications`, `deliveries`, `digests`) carries.
pub(crate) struct Attempts {
    pub(crate) attempts: i64,
    pub(crate) next_attempt_at: i64,
    pub(crate) last_error: Option<String>,
    pub(crate) sent_at: Option<i64>,
}

impl Attempts {
    /// Reads `attempts, next_attempt_at, last_error, sent_at`.
    pub(crate) fn decode(f: &Fields<'_, '_>) -> rusqlite::Result<Attempts> {
        Ok(Attempts {
            attempts: f.get("attempts")?,
            next_attempt_at: f.get("next_attempt_at")?,
            last_error: f.get("last_error")?,
            sent_at: f.get("sent_at")?,
        })
    }
}
