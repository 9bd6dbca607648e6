//! `discover --devices`: what a daemon found on the LAN and does not
//! monitor yet (SPEC section 16), with the `monitor` command that would.

use crate::client_cmd::{connect, Conn, Failure};

/// Prints the daemon's `GET /api/v1/discovered`: a table, or `--json`.
pub async fn devices(conn: &Conn, json: bool) -> Result<(), Failure> {
    let hc = connect(conn).await?;
    let found = hc.discovered().await?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::Value::Array(found)).unwrap_or_default()
        );
        return Ok(());
    }
    if found.is_empty() {
        println!("nothing new found on the LAN (yet: devices answer within a few seconds)");
        return Ok(());
    }
    for d in &found {
        let s = |k: &str| d[k].as_str().unwrap_or("").to_string();
        let ty = s("type");
        let ty = ty.trim_end_matches(".local.");
        match (
            d["suggested"]["name"].as_str(),
            d["suggested"]["url"].as_str(),
        ) {
            (Some(name), Some(url)) => {
                println!("{}  {ty}  {}", s("name"), url);
                println!("    healthchecker monitor {} {url}", shell_quote(name));
            }
            _ => println!("{}  {ty}  (no target to suggest)", s("name")),
        }
    }
    Ok(())
}

/// `name` quoted for a POSIX shell.
fn shell_quote(name: &str) -> String {
    format!("'{}'", name.replace('\'', r"'\''"))
}
