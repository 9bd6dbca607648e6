//! A real, throwaway PostgreSQL server (Debian package `postgresql`) for
//! the cluster's tests: `initdb` into a temporary directory, `postgres`
//! listening on 127.0.0.1 on a free port (its socket in that directory
//! too, never in /var/run), one database `healthchecker`, stopped by its
//! PID and the directory removed when the handle drops, also when the test
//! fails.
//!
//! PostgreSQL refuses to run as root, and tests run as root here and in
//! CI: then `initdb` and `postgres` run as the package's `postgres` user
//! (`setpriv --reuid --regid --clear-groups`, which execs, so the PID we
//! hold is the server's), in a directory chowned to it. Durability is
//! switched off (`fsync=off`, `full_page_writes=off`, `initdb --no-sync`):
//! a test database is not worth a disk flush.
//!
//! Every server has a watchdog (`sh`, started with it, as root when we are
//! root) reading a pipe from the test process: when that process ends
//! without stopping the server — killed by a timeout, or a server held by
//! a static, which is never dropped ([`Postgres::shared`]) — the pipe
//! closes, and the watchdog stops the server by its PID (SIGINT, SIGKILL
//! after 10 s) and removes its directory. A clean [`Postgres::stop`]
//! disarms it first.
//!
//! [`Postgres::start_tls`] starts one with `ssl=on` and a certificate
//! of [`crate::tls::TlsCert`] (its key file mode 0600, owned by the
//! server's user, as PostgreSQL demands), for the tests of `sslmode`.
//!
//! [`Postgres::shared`] is the one server of a test process that runs the
//! API suite on PostgreSQL (`HEALTHCHECKER_TEST_DB=postgres`): started
//! once, lazily, each daemon on a database of its own
//! ([`Postgres::create_database`]).

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Where Debian installs the server versions (`<version>/bin/initdb`).
pub const PG_LIB: &str = "/usr/lib/postgresql";

/// The database every throwaway server has.
pub const DATABASE: &str = "healthchecker";

/// How long a start may take before the test fails (initdb on a loaded
/// two-core machine takes a few seconds).
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a fast shutdown may take before the server is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections the shared server accepts: each daemon holds up to 18
/// (four readers, a writer, four for the API's writes, a listener, a pool
/// of eight), the suite runs eight tests at a time, some with several
/// daemons.
const SHARED_MAX_CONNECTIONS: u32 = 800;

/// The watchdog (`sh -c`, arguments: the server's PID, its directory):
/// a line on its stdin disarms it ([`Postgres::stop`]); end of file, i.e.
/// the test process is gone, stops the server and removes the directory.
/// It ignores the signals a Ctrl-C or a kill of the process group sends,
/// so that it outlives the test process.
const WATCHDOG: &str = r#"trap '' INT TERM HUP
if read -r _; then exit 0; fi
kill -INT "$1" 2>/dev/null
i=0
while kill -0 "$1" 2>/dev/null && [ "$i" -lt 100 ]; do sleep 0.1; i=$((i+1)); done
kill -KILL "$1" 2>/dev/null
rm -rf "$2""#;

/// The `bin` directory of the newest installed PostgreSQL, if any.
pub fn bin_dir() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir(PG_LIB)
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((v, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

/// A running throwaway server.
pub struct Postgres {
    /// Its port on 127.0.0.1.
    pub port: u16,
    bin: PathBuf,
    /// Holds the data directory, socket and log alive; removed on drop.
    dir: tempfile::TempDir,
    /// `(uid, gid)` to run as when we are root.
    run_as: Option<(u32, u32)>,
    child: Option<Child>,
    /// The watchdog of the running server and its stdin (see [`WATCHDOG`]).
    watchdog: Option<(Child, ChildStdin)>,
    /// Server settings (`-c name=value`) besides the durability ones.
    settings: Vec<String>,
}

impl Postgres {
    /// Initialises and starts a server on a free port and waits until it
    /// answers a query; creates the database [`DATABASE`]. `None` when
    /// PostgreSQL is not installed and `CI` is not set (the test prints
    /// SKIPPED and passes); under CI a missing server fails the test,
    /// because a test that cannot run must not pass.
    pub async fn start() -> Option<Postgres> {
        Self::start_with_settings(Vec::new(), None).await
    }

    /// As [`Postgres::start`], with more server settings (`name=value`,
    /// each passed as `-c`). They come after the durability ones, so
    /// `full_page_writes=on` turns full-page images back on (the
    /// benchmark's steady-state WAL: docs/performance.md).
    pub async fn start_with(settings: Vec<String>) -> Option<Postgres> {
        Self::start_with_settings(settings, None).await
    }

    /// As [`Postgres::start`], with TLS on (`ssl=on`) and `cert` as the
    /// server's certificate and key; plain connections are still accepted
    /// (the default `pg_hba.conf` has `host` lines, not `hostssl`), so a
    /// client's `sslmode` alone decides.
    pub async fn start_tls(cert: &crate::tls::TlsCert) -> Option<Postgres> {
        Self::start_with_settings(Vec::new(), Some(cert)).await
    }

    async fn start_with_settings(
        mut settings: Vec<String>,
        tls: Option<&crate::tls::TlsCert>,
    ) -> Option<Postgres> {
        let Some(bin) = bin_dir() else {
            let why = "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb; \
                       scripts/test.sh installs the Debian package postgresql)";
            if std::env::var_os("CI").is_some() {
                panic!("this test needs PostgreSQL, and CI must run it: {why}");
            }
            eprintln!("SKIPPED: {why}");
            return None;
        };
        let dir = tempfile::Builder::new()
            .prefix("hc-pg-")
            .tempdir()
            .expect("temp dir");
        let run_as = if nix::unistd::geteuid().is_root() {
            let user = nix::unistd::User::from_name("postgres")
                .expect("read the user database")
                .expect("the postgres user (created by the Debian package postgresql)");
            std::os::unix::fs::chown(dir.path(), Some(user.uid.as_raw()), Some(user.gid.as_raw()))
                .expect("chown the temp dir to postgres");
            Some((user.uid.as_raw(), user.gid.as_raw()))
        } else {
            None
        };
        if let Some(cert) = tls {
            settings.extend(write_tls_files(dir.path(), cert, run_as));
        }
        let mut pg = Postgres {
            port: crate::closed_port(),
            bin,
            dir,
            run_as,
            child: None,
            watchdog: None,
            settings,
        };
        pg.initdb();
        // The free port may be taken by another test between its choice
        // and the server's bind: then again on another one.
        let mut tries = 0;
        while let Err(log) = pg.spawn_once().await {
            tries += 1;
            if tries == 5 || !log.contains("Address already in use") {
                panic!("postgres exited at start:\n{log}");
            }
            pg.stop();
            pg.port = crate::closed_port();
        }
        let (client, conn) = tokio_postgres::connect(&pg.url_of("postgres"), tokio_postgres::NoTls)
            .await
            .expect("connect to the throwaway server");
        let conn = tokio::spawn(conn);
        client
            .batch_execute(&format!("CREATE DATABASE {DATABASE}"))
            .await
            .expect("create the test database");
        drop(client);
        let _ = conn.await;
        Some(pg)
    }

    /// The throwaway server of this test process for the API suite on
    /// PostgreSQL (`HEALTHCHECKER_TEST_DB=postgres`, testkit's
    /// `TestDaemon`): started on first use, on a thread of its own (tests
    /// run on many runtimes), accepting [`SHARED_MAX_CONNECTIONS`]; never
    /// dropped, so it is stopped by its watchdog when the process ends,
    /// passed or failed. Panics when PostgreSQL is not installed: the run
    /// asked for it.
    pub fn shared() -> &'static Postgres {
        static SHARED: OnceLock<Postgres> = OnceLock::new();
        SHARED.get_or_init(|| {
            if bin_dir().is_none() {
                panic!(
                    "HEALTHCHECKER_TEST_DB=postgres needs PostgreSQL (no {PG_LIB}/*/bin/initdb; \
                     scripts/test.sh installs the Debian package postgresql)"
                );
            }
            let settings = vec![format!("max_connections={SHARED_MAX_CONNECTIONS}")];
            let started = std::thread::spawn(move || {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a runtime to start PostgreSQL")
                    .block_on(Self::start_with_settings(settings, None))
            })
            .join();
            match started {
                Ok(pg) => pg.expect("PostgreSQL is installed"),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    }

    /// Creates a new, empty database (`hc_1`, `hc_2`, … per process) and
    /// returns its URL: each daemon on the shared server gets its own. The
    /// URL is TCP on 127.0.0.1, or the server's Unix socket when the
    /// calling thread is in a private network namespace (`netns`), whose
    /// loopback is not the server's.
    pub async fn create_database(&self) -> String {
        static NEXT: AtomicUsize = AtomicUsize::new(1);
        let name = format!("hc_{}", NEXT.fetch_add(1, Ordering::Relaxed));
        let url = |db: &str| {
            if in_private_netns() {
                self.socket_url_of(db)
            } else {
                self.url_of(db)
            }
        };
        let (client, conn) = tokio_postgres::connect(&url("postgres"), tokio_postgres::NoTls)
            .await
            .expect("connect to the throwaway server");
        let conn = tokio::spawn(conn);
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap_or_else(|e| panic!("create the database {name}: {e:?}"));
        drop(client);
        let _ = conn.await;
        url(&name)
    }

    /// The URL of database `db` through the server's Unix socket (its
    /// directory percent-encoded as the host).
    fn socket_url_of(&self, db: &str) -> String {
        let dir: String = self
            .socket_dir()
            .to_str()
            .expect("a UTF-8 temp dir")
            .chars()
            .map(|c| {
                if c == '/' {
                    "%2F".to_string()
                } else {
                    c.to_string()
                }
            })
            .collect();
        format!("postgres://postgres@{dir}:{}/{db}", self.port)
    }

    /// `postgres://postgres@127.0.0.1:PORT/healthchecker`.
    pub fn url(&self) -> String {
        self.url_of(DATABASE)
    }

    fn url_of(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// The data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The server's log so far (for a failing test's message).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("postgres.log")).unwrap_or_default()
    }

    /// A command for `program` (in the server's bin directory), run as the
    /// `postgres` user when we are root.
    fn command(&self, program: &str) -> Command {
        let exe = self.bin.join(program);
        match self.run_as {
            Some((uid, gid)) => {
                let mut c = Command::new("setpriv");
                c.arg(format!("--reuid={uid}"))
                    .arg(format!("--regid={gid}"))
                    .arg("--clear-groups")
                    .arg("--")
                    .arg(exe);
                c
            }
            None => Command::new(exe),
        }
    }

    fn initdb(&self) {
        let out = self
            .command("initdb")
            .arg("-D")
            .arg(self.data_dir())
            .args([
                "--username=postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
                "--no-instructions",
            ])
            .current_dir(self.dir.path())
            .output()
            .expect("run initdb (util-linux setpriv and the Debian package postgresql)");
        assert!(
            out.status.success(),
            "initdb failed: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Starts `postgres` on the data directory and port, and waits until it
    /// answers `SELECT 1` (polled, with a deadline).
    async fn spawn(&mut self) {
        if let Err(log) = self.spawn_once().await {
            panic!("postgres exited at start:\n{log}");
        }
    }

    /// Starts the server and waits until it answers; `Err` with its log
    /// when it exited at start.
    async fn spawn_once(&mut self) -> Result<(), String> {
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.dir.path().join("postgres.log"))
            .expect("open postgres.log");
        let child = self
            .command("postgres")
            .arg("-D")
            .arg(self.data_dir())
            .arg("-k")
            .arg(self.dir.path())
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-c", "fsync=off", "-c", "full_page_writes=off"])
            .args(self.settings.iter().flat_map(|s| ["-c", s.as_str()]))
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log)
            .spawn()
            .expect("start postgres");
        let mut watchdog = Command::new("sh")
            .arg("-c")
            .arg(WATCHDOG)
            .arg("hc-pg-watchdog")
            .arg(child.id().to_string())
            .arg(self.dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the watchdog of postgres (sh)");
        let pipe = watchdog.stdin.take().expect("the watchdog's stdin");
        self.watchdog = Some((watchdog, pipe));
        self.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        let url = self.url_of("postgres");
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                return Err(format!("{status}:\n{}", self.log()));
            }
            if ready(&url).await {
                return Ok(());
            }
            assert!(
                Instant::now() < deadline,
                "postgres did not accept connections within {START_TIMEOUT:?}:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops the server (fast shutdown: SIGINT to its PID, which rolls back
    /// open transactions and closes every connection; SIGKILL if it has not
    /// exited within 10 s). Clients see their connections closed.
    pub fn stop(&mut self) {
        use nix::sys::signal::{kill, Signal};
        use nix::unistd::Pid;
        if let Some((mut watchdog, mut pipe)) = self.watchdog.take() {
            // Disarmed: it exits at once.
            let _ = pipe.write_all(b"stop\n");
            drop(pipe);
            let _ = watchdog.wait();
        }
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = Pid::from_raw(child.id() as i32);
        let _ = kill(pid, Signal::SIGINT);
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            match child.try_wait() {
                Ok(Some(_)) | Err(_) => return,
                Ok(None) if Instant::now() >= deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }

    /// Stops the server and starts it again on the same data directory
    /// and port (for "PostgreSQL restarted under load"); returns when it
    /// answers queries again.
    pub async fn restart(&mut self) {
        self.stop();
        self.spawn().await;
    }

    /// Whether the server process is running (not stopped, not exited).
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// The socket directory (for `psql -h`).
    pub fn socket_dir(&self) -> &Path {
        self.dir.path()
    }
}

/// Writes `cert` and its key into `dir` (the key mode 0600, both owned by
/// `run_as` when set: PostgreSQL refuses a key others can read) and
/// returns the settings that serve them.
fn write_tls_files(
    dir: &Path,
    cert: &crate::tls::TlsCert,
    run_as: Option<(u32, u32)>,
) -> Vec<String> {
    use std::os::unix::fs::PermissionsExt;
    let crt = dir.join("server.crt");
    let key = dir.join("server.key");
    std::fs::write(&crt, &cert.pem).expect("write server.crt");
    std::fs::write(&key, &cert.key_pem).expect("write server.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600))
        .expect("chmod 0600 server.key");
    if let Some((uid, gid)) = run_as {
        for f in [&crt, &key] {
            std::os::unix::fs::chown(f, Some(uid), Some(gid)).expect("chown the TLS files");
        }
    }
    let path = |p: &Path| p.to_str().expect("a UTF-8 temp dir").to_string();
    vec![
        "ssl=on".to_string(),
        format!("ssl_cert_file={}", path(&crt)),
        format!("ssl_key_file={}", path(&key)),
    ]
}

/// Whether the calling thread is in another network namespace than the
/// process's first thread (testkit's `netns::in_private_netns`).
fn in_private_netns() -> bool {
    let ns = |p: &str| std::fs::read_link(p).ok();
    ns("/proc/thread-self/ns/net") != ns("/proc/self/ns/net")
}

/// Whether a server at `url` accepts a TCP connection and answers a query.
async fn ready(url: &str) -> bool {
    let connect = tokio_postgres::connect(url, tokio_postgres::NoTls);
    let Ok(Ok((client, conn))) = tokio::time::timeout(Duration::from_secs(2), connect).await else {
        return false;
    };
    let conn = tokio::spawn(conn);
    let ok = client.simple_query("SELECT 1").await.is_ok();
    drop(client);
    let _ = conn.await;
    ok
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
    }
}
