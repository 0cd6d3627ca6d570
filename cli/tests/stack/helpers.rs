//! What the stack tests share: the repository's files, free ports, the `reviews` binary as a
//! child process (killed when the test ends, pass or fail), and waiting for things.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

pub fn repo_path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
}

pub fn read(rel: &str) -> String {
    std::fs::read_to_string(repo_path(rel)).unwrap_or_else(|e| panic!("reading {rel}: {e}"))
}

/// `N` distinct free ports: all bound at once, then released, so no two are the same.
pub fn free_addrs<const N: usize>() -> [SocketAddr; N] {
    let held: Vec<TcpListener> = (0..N)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    std::array::from_fn(|i| held[i].local_addr().unwrap())
}

/// `reviews proxy --config <config> --reload` (the unit's `ExecReload=`), its output to
/// `log` and `log` with the extension `err`; the caller adds what it needs and runs it.
pub fn reload_command(config: &str, log: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_reviews"));
    c.args(["proxy", "--config", config, "--reload"])
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(log).unwrap())
        .stderr(std::fs::File::create(log.with_extension("err")).unwrap());
    c
}

/// A child process, killed on drop (resumed first, in case a test stopped it).
pub struct Proc(pub Child);

impl Proc {
    pub fn pid(&self) -> Pid {
        Pid::from_raw(self.0.id() as i32)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = kill(self.pid(), Signal::SIGCONT);
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A process a test did not spawn itself (a reload's new edge): SIGKILL on drop.
pub struct PidGuard(pub u32);

impl Drop for PidGuard {
    fn drop(&mut self) {
        let _ = kill(Pid::from_raw(self.0 as i32), Signal::SIGKILL);
    }
}

/// `reviews <args>`, logging to `log` (stdout) and `log.err` (stderr), with `NOTIFY_SOCKET`
/// set to `notify` or removed.
pub fn reviews(args: &[&str], notify: Option<&Path>, log: &Path) -> Proc {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_reviews"));
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(log).unwrap())
        .stderr(std::fs::File::create(log.with_extension("err")).unwrap());
    match notify {
        Some(p) => cmd.env("NOTIFY_SOCKET", p),
        None => cmd.env_remove("NOTIFY_SOCKET"),
    };
    Proc(cmd.spawn().expect("spawn reviews"))
}

/// `reviews <args>` with environment variables set, logging like [`reviews`].
pub fn reviews_env<V: AsRef<std::ffi::OsStr>>(
    args: &[&str],
    log: &Path,
    env: &[(&str, V)],
) -> Proc {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_reviews"));
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(log).unwrap())
        .stderr(std::fs::File::create(log.with_extension("err")).unwrap())
        .env_remove("NOTIFY_SOCKET");
    for (k, v) in env {
        cmd.env(k, v);
    }
    Proc(cmd.spawn().expect("spawn reviews"))
}

/// `reviews api` on the SQLite file `db` (made and migrated if missing), on ports it picks
/// itself (read back from its log): a port found free beforehand could be taken by another
/// test's server before the API binds it.
pub fn api(db: &Path, log: &Path) -> (Proc, SocketAddr) {
    api_env(
        &format!("sqlite://{}", db.display()),
        log,
        &[] as &[(&str, String)],
    )
}

/// `reviews api` on `database_url` with environment variables (config overrides) set.
pub fn api_env(database_url: &str, log: &Path, env: &[(&str, String)]) -> (Proc, SocketAddr) {
    let p = reviews_env(
        &[
            "api",
            "--database-url",
            database_url,
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
        ],
        log,
        env,
    );
    let err = log.with_extension("err");
    let mut addr = None;
    wait_until("the API's listening line", Duration::from_secs(60), || {
        addr = std::fs::read_to_string(&err).ok().and_then(|text| {
            text.lines()
                .find(|l| l.contains("reviews API listening"))?
                .split_whitespace()
                .find_map(|field| field.strip_prefix("addr="))?
                .parse()
                .ok()
        });
        addr.is_some()
    });
    (p, addr.expect("waited for it"))
}

pub fn wait_until(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until `url` answers 200.
pub async fn wait_ok(client: &reqwest::Client, url: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while !client
        .get(url)
        .send()
        .await
        .is_ok_and(|r| r.status() == 200)
    {
        assert!(
            Instant::now() < deadline,
            "{url} did not answer 200 in time"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The purge token of a [`Stack`]'s edge.
pub const STACK_TOKEN: &str = "stack-token";

/// An API process and the config of an edge in front of it (cache on `/reviews/meta`, a
/// snapshot path, a purge token), in a temporary directory; edges are started by the test.
pub struct Stack {
    pub dir: tempfile::TempDir,
    _api: Proc,
    pub listen: SocketAddr,
    pub admin: SocketAddr,
    pub client: reqwest::Client,
}

impl Stack {
    pub async fn start() -> Stack {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let (api, api_addr) = api(&d.join("reviews.db"), &d.join("api.log"));
        let [listen, admin] = free_addrs();
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        wait_ok(
            &client,
            &format!("http://{api_addr}/readyz"),
            Duration::from_secs(30),
        )
        .await;
        std::fs::write(
            d.join("edge.toml"),
            format!(
                r#"max_connections = 512
[listen]
address = "{listen}"
[admin]
address = "{admin}"
token = "{STACK_TOKEN}"
[[upstream.servers]]
address = "{api_addr}"
[cache]
snapshot_path = "{snapshot}"
[[cache.routes]]
path = "/reviews/meta"
params = ["product_id"]
[shutdown]
grace_period = "2s"
graceful_timeout = "1s"
upgrade_sock = "{sock}"
pid_file = "{pid}"
"#,
                snapshot = d.join("cache.snapshot").display(),
                sock = d.join("upgrade.sock").display(),
                pid = d.join("edge.pid").display(),
            ),
        )
        .unwrap();
        Stack {
            dir,
            _api: api,
            listen,
            admin,
            client,
        }
    }

    pub fn path(&self, name: &str) -> std::path::PathBuf {
        self.dir.path().join(name)
    }

    pub fn config(&self) -> String {
        self.path("edge.toml").display().to_string()
    }

    pub fn edge(&self, log: &str) -> Proc {
        self.edge_notifying(log, None)
    }

    /// An edge process telling `notify` (as `$NOTIFY_SOCKET`) when it is ready.
    pub fn edge_notifying(&self, log: &str, notify: Option<&Path>) -> Proc {
        reviews(
            &["proxy", "--config", &self.config()],
            notify,
            &self.path(log),
        )
    }

    pub async fn ready(&self) {
        wait_ok(
            &self.client,
            &format!("http://{}/healthz", self.admin),
            Duration::from_secs(30),
        )
        .await;
    }

    /// The cache status of `GET /reviews/meta?product_id={id}`.
    pub async fn get(&self, id: u64) -> String {
        let r = self
            .client
            .get(format!(
                "http://{}/reviews/meta?product_id={id}",
                self.listen
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "page {id}");
        r.headers()
            .get("x-cache-status")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default()
    }

    pub async fn purge_tag(&self, tag: &str) {
        let r = self
            .client
            .post(format!("http://{}/purge?tag={tag}", self.admin))
            .bearer_auth(STACK_TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "purge {tag}");
    }

    pub fn pid_in_file(&self) -> u32 {
        std::fs::read_to_string(self.path("edge.pid"))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }
}
