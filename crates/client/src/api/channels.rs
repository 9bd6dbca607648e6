//! Notification channels (SPEC section 13): create or update, list, test
//! and delete. Answers are the daemon's JSON: channels carry no secrets.

use super::{path_segment, ClientError, HealthChecker};
use serde_json::Value;

impl HealthChecker {
    fn channel_url(&self, name: &str, suffix: &str) -> String {
        format!(
            "{}/api/v1/channels/{}{suffix}",
            self.base,
            path_segment(name)
        )
    }

    /// Creates or updates a channel from `{"name", "kind", ...}`; `true`
    /// when it was new. Needs the admin token in token mode.
    pub async fn put_channel(&self, channel: &Value) -> Result<(Value, bool), ClientError> {
        let (status, v) = self
            .call(
                self.http
                    .post(format!("{}/api/v1/channels", self.base))
                    .json(channel),
            )
            .await?;
        Ok((v, status == 201))
    }

    /// Every channel.
    pub async fn channels(&self) -> Result<Vec<Value>, ClientError> {
        let (_, v) = self
            .call(self.http.get(format!("{}/api/v1/channels", self.base)))
            .await?;
        Ok(v["channels"].as_array().cloned().unwrap_or_default())
    }

    /// Sends a test message now: `{"delivered", "delivery_id", "error"}`.
    pub async fn test_channel(&self, name: &str) -> Result<Value, ClientError> {
        let (_, v) = self
            .call(
                self.http
                    .post(self.channel_url(name, "/test"))
                    .header("content-type", "application/json")
                    .body("{}"),
            )
            .await?;
        Ok(v)
    }

    /// Deletes a channel.
    pub async fn delete_channel(&self, name: &str) -> Result<(), ClientError> {
        self.call(self.http.delete(self.channel_url(name, "")))
            .await
            .map(|_| ())
    }
}
