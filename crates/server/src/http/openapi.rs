//! The OpenAPI 3 document of the v1 API (utoipa), served at
//! `/api/v1/openapi.json`. Its schemas are the types the API decodes and
//! answers with: the registration and response types of
//! [`healthchecker_core`] (feature `openapi`), the channel and silence
//! bodies of [`super::channels`] and [`super::silences`]. No copy is kept
//! for the document's sake, so it cannot drift from the code.
//!
//! Only this module names the handlers; the handlers never name it.

use super::AppState;
use axum::routing::get;
use axum::{Json, Router};
use utoipa::OpenApi;

#[derive(OpenApi)]
#[openapi(
    info(title = "healthchecker API", description = "Register services for periodic health checks; read their state, history and notifications; manage notification channels and silences."),
    paths(
        super::v1::register,
        super::v1::list,
        super::v1::one,
        super::v1::remove,
        super::v1::pause,
        super::v1::resume,
        super::v1::checks,
        super::v1::events,
        super::v1::notifications,
        super::channels::put,
        super::channels::list,
        super::channels::one,
        super::channels::remove,
        super::channels::test,
        super::silences::create,
        super::silences::list,
        super::silences::remove,
        super::ping::ping_by_name,
        super::ping::ping_by_name_what,
        super::discovered::list_discovered,
        super::discovered::monitor_discovered,
        super::cluster::cluster,
    ),
    tags(
        (name = "services", description = "Registered services"),
        (name = "events", description = "State changes"),
        (name = "notifications", description = "The mail outbox and the deliveries to channels"),
        (name = "channels", description = "Notification channels (SPEC section 13)"),
        (name = "silences", description = "Maintenance windows (SPEC section 14)"),
        (name = "discovery", description = "Devices found on the LAN over DNS-SD"),
        (name = "cluster", description = "The nodes sharing the work on PostgreSQL (SPEC section 19)"),
    )
)]
struct ApiDoc;

/// The document.
pub fn openapi() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// `GET /api/v1/openapi.json`.
pub(super) fn router() -> Router<AppState> {
    Router::new().route("/api/v1/openapi.json", get(document))
}

async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(openapi())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_covers_channels_and_silences_and_derives_the_registration() {
        let doc = serde_json::to_value(openapi()).unwrap();
        let paths = &doc["paths"];
        for (path, methods) in [
            ("/api/v1/channels", &["get", "post"][..]),
            ("/api/v1/channels/{name}", &["get", "delete"]),
            ("/api/v1/channels/{name}/test", &["post"]),
            ("/api/v1/silences", &["get", "post"]),
            ("/api/v1/silences/{id}", &["delete"]),
            ("/api/v1/notifications", &["get"]),
            ("/api/v1/cluster", &["get"]),
        ] {
            for m in methods {
                assert!(paths[path][m].is_object(), "{m} {path} missing");
            }
        }
        // The registration schema is the core type's: its fields, the
        // loose numbers (number or numeric string) and no unknown field.
        let reg = &doc["components"]["schemas"]["RegisterBody"];
        assert_eq!(reg["additionalProperties"], false, "{reg}");
        let interval = &reg["properties"]["interval"];
        // `oneOf: [oneOf: [integer, numeric string], null]` (optional).
        let one_of: Vec<&serde_json::Value> = interval["oneOf"]
            .as_array()
            .expect("interval is oneOf")
            .iter()
            .flat_map(|s| s["oneOf"].as_array().into_iter().flatten())
            .collect();
        assert!(
            one_of
                .iter()
                .any(|s| s["type"] == "integer" && s["minimum"] == 5 && s["maximum"] == 300),
            "{interval}"
        );
        assert!(one_of.iter().any(|s| s["type"] == "string"), "{interval}");
        for f in ["name", "url", "email", "channels", "tags", "depends_on"] {
            assert!(reg["properties"][f].is_object(), "{f}");
        }
        let state = &doc["components"]["schemas"]["HealthState"]["enum"];
        assert_eq!(
            state,
            &serde_json::json!(["unknown", "healthy", "degraded", "unhealthy"])
        );
    }
}
