//! `silence NAME|--tag T --for 2h [--comment …]`: a maintenance window from
//! now (SPEC section 14); `--list` shows the silences, `--delete ID` ends one.

use crate::client_cmd::{connect, Conn, Failure};
use clap::Args;
use serde_json::json;

/// Options of `silence`.
#[derive(Args, Debug)]
pub struct SilenceArgs {
    /// Service to silence (or give --tag)
    name: Option<String>,
    /// Silence every service with this tag (repeatable)
    #[arg(long = "tag", value_name = "TAG")]
    tags: Vec<String>,
    /// How long: 90s, 30m, 2h, 1d
    #[arg(long = "for", value_name = "DURATION")]
    duration: Option<String>,
    /// Why (shown in the API)
    #[arg(long)]
    comment: Option<String>,
    /// List the silences instead
    #[arg(long, conflicts_with_all = ["name", "tags", "duration", "delete"])]
    list: bool,
    /// End the silence with this id
    #[arg(long, value_name = "ID", conflicts_with_all = ["name", "tags", "duration"])]
    delete: Option<i64>,
    #[command(flatten)]
    conn: Conn,
}

/// `90s`, `30m`, `2h`, `1d` in seconds.
fn parse_duration(s: &str) -> Option<i64> {
    let s = s.trim();
    let (n, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit())?);
    let n: i64 = n.parse().ok()?;
    let mult = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return None,
    };
    (n > 0).then(|| n.saturating_mul(mult))
}

/// Runs `silence`.
pub async fn run(a: SilenceArgs) -> Result<(), Failure> {
    let hc = connect(&a.conn).await?;
    if a.list {
        for s in hc.silences().await? {
            let when = match s["weekly"].as_str() {
                Some(w) => format!("weekly {w} {}", s["tz"].as_str().unwrap_or("")),
                None => format!(
                    "{} to {}",
                    s["starts_at"].as_str().unwrap_or(""),
                    s["ends_at"].as_str().unwrap_or("")
                ),
            };
            let active = if s["active"] == true { "  active" } else { "" };
            println!(
                "{}  {}  {}  {when}{active}",
                s["id"], s["services"], s["tags"]
            );
        }
        return Ok(());
    }
    if let Some(id) = a.delete {
        hc.delete_silence(id).await?;
        println!("silence {id} ended");
        return Ok(());
    }
    if a.name.is_none() && a.tags.is_empty() {
        return Err(Failure("give a service name or --tag".into(), 2));
    }
    let raw = a.duration.as_deref().unwrap_or("");
    let secs = parse_duration(raw)
        .ok_or_else(|| Failure(format!("--for {raw:?}: expected e.g. 90s, 30m, 2h, 1d"), 2))?;
    let now = healthchecker_server::clock::now_ms();
    let body = json!({
        "services": a.name.iter().collect::<Vec<_>>(),
        "tags": a.tags,
        "ends_at": healthchecker_server::clock::rfc3339(now + secs * 1000),
        "comment": a.comment,
    });
    let v = hc.silence(&body).await?;
    println!(
        "silence {} until {}",
        v["id"],
        v["ends_at"].as_str().unwrap_or("")
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn durations_have_a_unit() {
        use super::parse_duration;
        assert_eq!(parse_duration("2h"), Some(7200));
        assert_eq!(parse_duration("90s"), Some(90));
        assert_eq!(parse_duration("1d"), Some(86_400));
        assert_eq!(parse_duration("2"), None);
        assert_eq!(parse_duration("0m"), None);
        assert_eq!(parse_duration("h"), None);
    }
}
