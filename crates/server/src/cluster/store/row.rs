//! Reading the store's record types out of PostgreSQL rows: columns by
//! name, and a value that does not decode (a bad state, a number out of
//! range, a list that is not JSON) as a [`Corruption`] naming the table,
//! the row and the column, as the SQLite store's `decode` does.

use crate::store::{Corruption, StoreError};
use postgres::types::FromSql;
use postgres::Row;
use std::str::FromStr;

/// One row of `table`.
pub(crate) struct Fields<'a> {
    row: &'a Row,
    table: &'static str,
    id: Option<i64>,
}

impl<'a> Fields<'a> {
    /// A row whose `id` column names it in errors.
    pub(crate) fn new(row: &'a Row, table: &'static str) -> Result<Self, StoreError> {
        let mut f = Fields::unnamed(row, table);
        f.id = Some(f.get("id")?);
        Ok(f)
    }

    /// A row without an `id` column (or read without it).
    pub(crate) fn unnamed(row: &'a Row, table: &'static str) -> Self {
        Fields {
            row,
            table,
            id: None,
        }
    }

    /// The row's id (0 when unnamed).
    pub(crate) fn id(&self) -> i64 {
        self.id.unwrap_or(0)
    }

    /// A [`Corruption`] of `column`.
    pub(crate) fn corrupt(&self, column: &str, detail: impl Into<String>) -> StoreError {
        StoreError::Corrupt(Corruption {
            table: self.table.into(),
            row: self.id,
            column: column.into(),
            detail: detail.into(),
        })
    }

    /// `column` as `T`.
    pub(crate) fn get<T: FromSql<'a>>(&self, column: &str) -> Result<T, StoreError> {
        self.row
            .try_get(column)
            .map_err(|e| self.corrupt(column, crate::cluster::with_causes(&e)))
    }

    /// A `bigint` column that must fit `T` (`u32`, `u16`, ...).
    pub(crate) fn int<T: TryFrom<i64>>(&self, column: &str) -> Result<T, StoreError> {
        let v: i64 = self.get(column)?;
        T::try_from(v).map_err(|_| self.corrupt(column, format!("{v} is out of range")))
    }

    /// A nullable `bigint` column that must fit `T`.
    pub(crate) fn int_opt<T: TryFrom<i64>>(&self, column: &str) -> Result<Option<T>, StoreError> {
        match self.get::<Option<i64>>(column)? {
            None => Ok(None),
            Some(v) => T::try_from(v)
                .map(Some)
                .map_err(|_| self.corrupt(column, format!("{v} is out of range"))),
        }
    }

    /// A text column parsed as `T`.
    pub(crate) fn parse<T: FromStr>(&self, column: &str) -> Result<T, StoreError> {
        let s: String = self.get(column)?;
        s.parse()
            .map_err(|_| self.corrupt(column, format!("unexpected value {s:?}")))
    }

    /// A nullable text column parsed as `T`.
    pub(crate) fn parse_opt<T: FromStr>(&self, column: &str) -> Result<Option<T>, StoreError> {
        match self.get::<Option<String>>(column)? {
            None => Ok(None),
            Some(s) => s
                .parse()
                .map(Some)
                .map_err(|_| self.corrupt(column, format!("unexpected value {s:?}"))),
        }
    }

    /// A JSON text column.
    pub(crate) fn json<T: serde::de::DeserializeOwned>(
        &self,
        column: &str,
    ) -> Result<T, StoreError> {
        let s: String = self.get(column)?;
        serde_json::from_str(&s).map_err(|e| self.corrupt(column, format!("not JSON: {e}")))
    }

    /// A JSON list of strings, each parsed as `T`.
    pub(crate) fn json_list<T: FromStr>(&self, column: &str) -> Result<Vec<T>, StoreError> {
        let items: Vec<String> = self.json(column)?;
        items
            .into_iter()
            .map(|s| {
                s.parse()
                    .map_err(|_| self.corrupt(column, format!("unexpected item {s:?}")))
            })
            .collect()
    }
}

/// Decodes every row with `f`.
pub(crate) fn all<T>(
    rows: &[Row],
    f: impl Fn(&Row) -> Result<T, StoreError>,
) -> Result<Vec<T>, StoreError> {
    rows.iter().map(f).collect()
}
