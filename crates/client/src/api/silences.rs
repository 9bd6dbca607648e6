//! Silences (SPEC section 14): create, list and delete maintenance windows.

use super::{ClientError, HealthChecker};
use serde_json::Value;

impl HealthChecker {
    /// Creates a silence from `{"services", "tags", "starts_at", "ends_at",
    /// "comment"}` or a weekly window; returns the daemon's answer (with `id`).
    pub async fn silence(&self, silence: &Value) -> Result<Value, ClientError> {
        let (_, v) = self
            .call(
                self.http
                    .post(format!("{}/api/v1/silences", self.base))
                    .json(silence),
            )
            .await?;
        Ok(v)
    }

    /// Every silence.
    pub async fn silences(&self) -> Result<Vec<Value>, ClientError> {
        let (_, v) = self
            .call(self.http.get(format!("{}/api/v1/silences", self.base)))
            .await?;
        Ok(v["silences"].as_array().cloned().unwrap_or_default())
    }

    /// Deletes a silence (what it held is decided at once).
    pub async fn delete_silence(&self, id: i64) -> Result<(), ClientError> {
        self.call(
            self.http
                .delete(format!("{}/api/v1/silences/{id}", self.base)),
        )
        .await
        .map(|_| ())
    }
}
