//! `ping NAME` and `run NAME -- CMD [ARGS…]`: the client side of heartbeat
//! services (SPEC section 15).
//!
//! `run` pings `start`, runs the command with its output passed through
//! (and a copy of its last 10 KiB kept), then pings its exit code with that
//! tail as the check's output, and exits with the command's own code, so
//! that it can wrap a cron job without changing what cron sees.

use crate::client_cmd::{connect, Conn, Failure};
use clap::Args;
use healthchecker_core::heartbeat::MAX_PING_BODY;
use std::io::Write;
use std::process::{ExitCode, Stdio};
use tokio::io::{AsyncRead, AsyncReadExt};

/// Options of `ping`.
#[derive(Args, Debug)]
pub struct PingArgs {
    /// Heartbeat service name
    name: String,
    /// Report a start instead of a success
    #[arg(long, conflicts_with_all = ["fail", "exit_code"])]
    start: bool,
    /// Report a failure
    #[arg(long, conflicts_with = "exit_code")]
    fail: bool,
    /// Report this exit code (0 is a success)
    #[arg(long = "exit-code", value_name = "CODE")]
    exit_code: Option<u8>,
    /// Text kept as the check's output (at most its last 10 KiB)
    #[arg(long, short = 'm', value_name = "TEXT")]
    message: Option<String>,
    #[command(flatten)]
    conn: Conn,
}

/// Options of `run`.
#[derive(Args, Debug)]
pub struct RunArgs {
    /// Heartbeat service name
    name: String,
    /// The command and its arguments (after `--`)
    #[arg(last = true, required = true, value_name = "CMD")]
    command: Vec<String>,
    #[command(flatten)]
    conn: Conn,
}

/// `ping NAME`.
pub async fn ping(a: PingArgs) -> Result<(), Failure> {
    let hc = connect(&a.conn).await?;
    let code = a.exit_code.map(|c| c.to_string());
    let what = match (a.start, a.fail) {
        (true, _) => Some("start"),
        (_, true) => Some("fail"),
        _ => code.as_deref(),
    };
    let body = a.message.unwrap_or_default().into_bytes();
    hc.ping(&a.name, what, body).await?;
    println!("pinged {:?} ({})", a.name, what.unwrap_or("success"));
    Ok(())
}

/// `run NAME -- CMD [ARGS…]`: exits with the command's code (1 when it
/// could not start or was killed by a signal).
pub fn run(a: RunArgs) -> ExitCode {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match rt.block_on(run_inner(a)) {
        Ok(code) => ExitCode::from(code),
        Err(Failure(msg, code)) => {
            eprintln!("healthchecker: {msg}");
            ExitCode::from(code)
        }
    }
}

async fn run_inner(a: RunArgs) -> Result<u8, Failure> {
    let hc = connect(&a.conn).await?;
    // A daemon that cannot be reached must not keep the job from running:
    // say so and run it anyway.
    let report = |e: healthchecker_client::ClientError| {
        eprintln!("healthchecker: could not ping {:?}: {e}", a.name);
    };
    if let Err(e) = hc.ping(&a.name, Some("start"), Vec::new()).await {
        report(e);
    }
    let (program, args) = a.command.split_first().expect("clap requires a command");
    let child = tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::inherit())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let (code, tail) = match child {
        Err(e) => {
            let msg = format!("cannot run {program:?}: {e}\n");
            eprint!("healthchecker: {msg}");
            (1u8, msg.into_bytes())
        }
        Ok(mut child) => {
            let out = child.stdout.take().expect("piped");
            let err = child.stderr.take().expect("piped");
            let tail = std::sync::Arc::new(std::sync::Mutex::new(Tail::default()));
            let (a1, a2) = (tail.clone(), tail.clone());
            let copy_out = tokio::spawn(copy(out, a1, false));
            let copy_err = tokio::spawn(copy(err, a2, true));
            let status = child
                .wait()
                .await
                .map_err(|e| Failure(format!("waiting for {program:?}: {e}"), 1))?;
            let _ = copy_out.await;
            let _ = copy_err.await;
            let code = status.code().map(|c| c.clamp(0, 255) as u8).unwrap_or(1);
            let tail = std::mem::take(&mut tail.lock().unwrap_or_else(|e| e.into_inner()).0);
            (code, tail)
        }
    };
    if let Err(e) = hc.ping(&a.name, Some(&code.to_string()), tail).await {
        report(e);
    }
    Ok(code)
}

/// The last [`MAX_PING_BODY`] bytes of the command's output.
#[derive(Default)]
struct Tail(Vec<u8>);

impl Tail {
    fn push(&mut self, b: &[u8]) {
        self.0.extend_from_slice(b);
        if self.0.len() > MAX_PING_BODY {
            let cut = self.0.len() - MAX_PING_BODY;
            self.0.drain(..cut);
        }
    }
}

/// Passes `from` through to our stdout (or stderr), keeping its tail.
async fn copy(
    mut from: impl AsyncRead + Unpin,
    tail: std::sync::Arc<std::sync::Mutex<Tail>>,
    stderr: bool,
) {
    let mut buf = vec![0u8; 8192];
    while let Ok(n) = from.read(&mut buf).await {
        if n == 0 {
            break;
        }
        let _ = if stderr {
            std::io::stderr().write_all(&buf[..n])
        } else {
            std::io::stdout().write_all(&buf[..n])
        };
        tail.lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(&buf[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tail_keeps_the_last_10_kib() {
        let mut t = Tail::default();
        t.push(&vec![b'a'; 8000]);
        t.push(&vec![b'b'; 8000]);
        assert_eq!(t.0.len(), MAX_PING_BODY);
        assert!(t.0.ends_with(b"b") && t.0.starts_with(b"a"));
    }
}
