//! `channel add|list|test|rm`: notification channels (SPEC section 13).
//! A channel's secret (webhook secret, token, routing key) never goes on
//! the command line, where `ps` shows it: it comes from `--secret-file` or
//! `HEALTHCHECKER_CHANNEL_SECRET`.

use crate::client_cmd::{connect, Conn, Failure};
use clap::{Args, Subcommand};
use serde_json::{json, Map, Value};

/// `channel` and its subcommands.
#[derive(Args, Debug)]
pub struct ChannelArgs {
    #[command(subcommand)]
    command: ChannelCommand,
}

#[derive(Subcommand, Debug)]
enum ChannelCommand {
    /// Create or update a channel.
    Add(Box<AddArgs>),
    /// List channels (secrets are never shown).
    List(ListArgs),
    /// Send a test message now and show the result.
    Test(NameArgs),
    /// Delete a channel.
    Rm(NameArgs),
}

#[derive(Args, Debug)]
struct AddArgs {
    /// Channel name
    name: String,
    /// email, webhook, ntfy, slack, discord, telegram, gotify, matrix, pagerduty or mqtt
    #[arg(long)]
    kind: String,
    /// Endpoint URL (ntfy: the topic URL; telegram, gotify, matrix: the server)
    #[arg(long)]
    url: Option<String>,
    /// E-mail recipient (kind email; repeatable)
    #[arg(long = "to", value_name = "ADDR")]
    to: Vec<String>,
    /// Telegram chat id
    #[arg(long)]
    chat_id: Option<String>,
    /// Matrix room id (!abc:example.org)
    #[arg(long)]
    room: Option<String>,
    /// MQTT user name (kind mqtt; the password is the secret)
    #[arg(long)]
    username: Option<String>,
    /// MQTT topic prefix of the retained state [default: healthchecker]
    #[arg(long)]
    topic_prefix: Option<String>,
    /// Home Assistant discovery prefix [default: homeassistant]
    #[arg(long)]
    discovery_prefix: Option<String>,
    /// Used by every service that names no channels
    #[arg(long)]
    default: bool,
    /// File holding the secret (webhook secret, token or routing key)
    #[arg(long, value_name = "PATH")]
    secret_file: Option<std::path::PathBuf>,
    /// Print the daemon's answer as JSON
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    conn: Conn,
}

#[derive(Args, Debug)]
struct ListArgs {
    /// Print JSON
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    conn: Conn,
}

#[derive(Args, Debug)]
struct NameArgs {
    /// Channel name
    name: String,
    #[command(flatten)]
    conn: Conn,
}

/// The field that carries `kind`'s secret.
fn secret_field(kind: &str) -> Option<&'static str> {
    match kind {
        "webhook" => Some("secret"),
        "ntfy" | "telegram" | "gotify" | "matrix" => Some("token"),
        "pagerduty" => Some("routing_key"),
        "mqtt" => Some("password"),
        _ => None,
    }
}

fn read_secret(a: &AddArgs) -> Result<Option<String>, Failure> {
    if let Some(p) = &a.secret_file {
        let s = std::fs::read_to_string(p)
            .map_err(|e| Failure(format!("--secret-file {}: {e}", p.display()), 2))?;
        return Ok(Some(s.trim_end_matches(['\r', '\n']).to_string()));
    }
    Ok(std::env::var("HEALTHCHECKER_CHANNEL_SECRET")
        .ok()
        .filter(|s| !s.is_empty()))
}

/// Runs a `channel` subcommand.
pub async fn run(args: ChannelArgs) -> Result<(), Failure> {
    match args.command {
        ChannelCommand::Add(a) => {
            let mut body = Map::new();
            body.insert("name".into(), json!(a.name));
            body.insert("kind".into(), json!(a.kind));
            body.insert("default".into(), json!(a.default));
            if let Some(u) = &a.url {
                body.insert("url".into(), json!(u));
            }
            if !a.to.is_empty() {
                body.insert("to".into(), json!(a.to));
            }
            if let Some(c) = &a.chat_id {
                body.insert("chat_id".into(), json!(c));
            }
            for (k, v) in [
                ("room", &a.room),
                ("username", &a.username),
                ("topic_prefix", &a.topic_prefix),
                ("discovery_prefix", &a.discovery_prefix),
            ] {
                if let Some(v) = v {
                    body.insert(k.into(), json!(v));
                }
            }
            if let (Some(field), Some(secret)) = (secret_field(&a.kind), read_secret(&a)?) {
                body.insert(field.into(), json!(secret));
            }
            let hc = connect(&a.conn).await?;
            let (v, created) = hc.put_channel(&Value::Object(body)).await?;
            if a.json {
                println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            } else {
                let what = if created { "created" } else { "updated" };
                println!("channel {} {what} ({})", a.name, a.kind);
            }
            Ok(())
        }
        ChannelCommand::List(a) => {
            let hc = connect(&a.conn).await?;
            let list = hc.channels().await?;
            if a.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&Value::Array(list)).unwrap_or_default()
                );
                return Ok(());
            }
            for c in &list {
                let s = |k: &str| c[k].as_str().unwrap_or("").to_string();
                let default = if c["default"] == true {
                    "  default"
                } else {
                    ""
                };
                println!("{}  {}  {}{default}", s("name"), s("kind"), s("url"));
            }
            Ok(())
        }
        ChannelCommand::Test(a) => {
            let hc = connect(&a.conn).await?;
            let v = hc.test_channel(&a.name).await?;
            if v["delivered"] == true {
                println!("delivered ({})", v["delivery_id"].as_str().unwrap_or(""));
                Ok(())
            } else {
                Err(Failure(
                    format!(
                        "not delivered: {}",
                        v["error"].as_str().unwrap_or("unknown error")
                    ),
                    1,
                ))
            }
        }
        ChannelCommand::Rm(a) => {
            let hc = connect(&a.conn).await?;
            hc.delete_channel(&a.name).await?;
            println!("channel {} deleted", a.name);
            Ok(())
        }
    }
}
