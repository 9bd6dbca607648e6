//! A real SMTP server process (Python aiosmtpd, `py/smtp_sink.py`) that
//! writes every accepted mail to a directory.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The Python with aiosmtpd and zeroconf: `HEALTHCHECKER_TEST_PYTHON`, else
/// the workspace's `.venv` (made by `scripts/test.sh`), else `python3`.
pub fn python() -> PathBuf {
    if let Ok(p) = std::env::var("HEALTHCHECKER_TEST_PYTHON") {
        return PathBuf::from(p);
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python");
    if venv.exists() {
        return venv;
    }
    PathBuf::from("python3")
}

/// How the sink answers.
#[derive(Debug, Clone, Copy)]
pub enum SmtpMode {
    /// 250 to everything.
    Accept,
    /// 451 to DATA.
    TempFail,
    /// 554 to DATA.
    Reject,
    /// Never answers DATA.
    Hang,
}

/// One received mail.
#[derive(Debug, Clone)]
pub struct ReceivedMail {
    /// Envelope recipients.
    pub envelope_to: Vec<String>,
    /// `Subject:` header.
    pub subject: String,
    /// `Message-ID:` header.
    pub message_id: String,
    /// The decoded text/plain part.
    pub text: String,
    /// The whole raw message.
    pub raw: String,
    /// The AUTH login used, if any.
    pub auth_login: Option<String>,
}

/// The SMTP server process; killed when dropped.
pub struct SmtpSink {
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// Where mails are written.
    pub dir: PathBuf,
    child: Child,
    _tmp: Option<tempfile::TempDir>,
}

impl SmtpSink {
    /// Starts a sink on a free port with its own directory.
    pub fn start(mode: SmtpMode) -> SmtpSink {
        let tmp = tempfile::tempdir().expect("temp dir");
        let port = crate::target::closed_port();
        let mut s = Self::start_on(port, tmp.path(), mode);
        s._tmp = Some(tmp);
        s
    }

    /// Starts a sink on `port`, writing to `dir`.
    pub fn start_on(port: u16, dir: &Path, mode: SmtpMode) -> SmtpSink {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("py/smtp_sink.py");
        let mode = match mode {
            SmtpMode::Accept => "accept",
            SmtpMode::TempFail => "tempfail",
            SmtpMode::Reject => "reject",
            SmtpMode::Hang => "hang",
        };
        let mut child = Command::new(python())
            .arg(&script)
            .arg(port.to_string())
            .arg(dir)
            .arg(mode)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {} (run scripts/test.sh to install the test peers): {e}",
                    python().display()
                )
            });
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .expect("read sink output");
        assert_eq!(
            line.trim(),
            "ready",
            "SMTP sink did not start (is aiosmtpd installed? run scripts/test.sh)"
        );
        SmtpSink {
            port,
            dir: dir.to_path_buf(),
            child,
            _tmp: None,
        }
    }

    /// The daemon's `--smtp-url` for this sink.
    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// Every mail received so far, in arrival order.
    pub fn mails(&self) -> Vec<ReceivedMail> {
        let mut names: Vec<PathBuf> = std::fs::read_dir(&self.dir)
            .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        names.retain(|p| p.extension().is_some_and(|e| e == "eml"));
        names.sort();
        names.iter().map(|p| parse(p)).collect()
    }

    /// Waits until at least `n` mails arrived.
    pub async fn wait_mails(&self, n: usize, timeout: Duration) -> Vec<ReceivedMail> {
        crate::wait_for(&format!("{n} mails"), timeout, || async {
            let m = self.mails();
            (m.len() >= n).then_some(m)
        })
        .await
    }

    /// Stops the server (SMTP outage).
    pub fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn parse(path: &Path) -> ReceivedMail {
    let raw = std::fs::read_to_string(path).unwrap_or_default();
    let text = std::fs::read_to_string(path.with_extension("txt")).unwrap_or_default();
    let auth_login = std::fs::read_to_string(path.with_extension("auth")).ok();
    // Unfold headers (RFC 5322 continuation lines), up to the blank line.
    let mut headers: Vec<String> = Vec::new();
    for line in raw.lines() {
        if line.is_empty() {
            break;
        }
        if line.starts_with([' ', '\t']) {
            if let Some(last) = headers.last_mut() {
                last.push_str(line.trim_start_matches([' ', '\t']).to_string().as_str());
                continue;
            }
        }
        headers.push(line.to_string());
    }
    let header = |name: &str| {
        headers
            .iter()
            .find_map(|h| {
                let (k, v) = h.split_once(':')?;
                k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
            })
            .unwrap_or_default()
    };
    ReceivedMail {
        envelope_to: header("X-Envelope-To")
            .split(", ")
            .map(str::to_string)
            .collect(),
        subject: header("Subject"),
        message_id: header("Message-ID"),
        text,
        raw,
        auth_login,
    }
}

/// Runs `py/<script>` of the testkit with `input` on stdin; returns stdout
/// (panics with stderr when it fails).
pub fn run_py(script: &str, input: &[u8]) -> String {
    use std::io::Write;
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("py")
        .join(script);
    let mut child = Command::new(python())
        .arg(&path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python");
    child.stdin.take().unwrap().write_all(input).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
