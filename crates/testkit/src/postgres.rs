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

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
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
}

impl Postgres {
    /// Initialises and starts a server on a free port and waits until it
    /// answers a query; creates the database [`DATABASE`]. `None` when
    /// PostgreSQL is not installed and `CI` is not set (the test prints
    /// SKIPPED and passes); under CI a missing server fails the test,
    /// because a test that cannot run must not pass.
    pub async fn start() -> Option<Postgres> {
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
        let mut pg = Postgres {
            port: crate::closed_port(),
            bin,
            dir,
            run_as,
            child: None,
        };
        pg.initdb();
        pg.spawn().await;
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
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log)
            .spawn()
            .expect("start postgres");
        self.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        let url = self.url_of("postgres");
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("postgres exited with {status} at start:\n{}", self.log());
            }
            if ready(&url).await {
                return;
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
