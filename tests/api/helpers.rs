//! Shared fixtures: a temporary environment (database + tokens file), the real
//! `imagemeta` binary started as a child process, a small HTTP client and
//! assertion helpers that compare wire output literally.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use serde_json::{Value, json};

pub const BIN: &str = env!("CARGO_BIN_EXE_imagemeta");

/// Maximum microversion the server emulates.
pub const MAX_MV: &str = "2.104";

// Projects (hex, so they match the `[0-9a-f-]+` URL segment).
pub const PROJ_A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa1";
pub const PROJ_B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb2";
pub const PROJ_ADMIN: &str = "ccccccccccccccccccccccccccccccc3";

// Tokens of the static tokens file.
pub const TOK_A: &str = "tok-a-member"; // project A, member + reader
pub const TOK_A_READER: &str = "tok-a-reader"; // project A, reader only
pub const TOK_B: &str = "tok-b-member"; // project B, member + reader
pub const TOK_ADMIN: &str = "tok-admin"; // admin project, admin

pub const BAD_METHOD_MSG: &str =
    "The server could not comply with the request since\r\nit is either malformed or otherwise incorrect.\r\n";
pub const FAULT_CT: &str = "application/json; charset=UTF-8";
pub const KEY_PATTERN: &str = "^[a-zA-Z0-9-_:. ]{1,255}$";

pub fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

// ---------------------------------------------------------------------------
// Temporary directory
// ---------------------------------------------------------------------------

struct TempDir(PathBuf, Vec<PathBuf>, Option<PgDatabase>);

impl Drop for TempDir {
    fn drop(&mut self) {
        // Filesystems mounted inside, innermost first.
        for mount in self.1.iter().rev() {
            let _ = Command::new("umount").arg("-l").arg(mount).status();
        }
        let _ = std::fs::remove_dir_all(&self.0);
        if let Some(db) = &self.2 {
            db.drop_database();
        }
    }
}

/// `IMAGEMETA_TEST_DATABASE`: the URL of a PostgreSQL database (`postgres://…/postgres`) to
/// run the suite against instead of SQLite. Each environment gets a database of its own on
/// that server.
pub fn test_postgres() -> Option<String> {
    std::env::var("IMAGEMETA_TEST_DATABASE").ok().filter(|u| u.starts_with("postgres"))
}

/// A database of its own on the test PostgreSQL server.
struct PgDatabase {
    admin_url: String,
    name: String,
}

impl PgDatabase {
    fn create(admin_url: &str) -> PgDatabase {
        let db = PgDatabase {
            admin_url: admin_url.to_owned(),
            name: format!("imagemeta_test_{}", uuid::Uuid::new_v4().simple()),
        };
        db.psql(&format!("CREATE DATABASE {}", db.name));
        db
    }

    fn url(&self) -> String {
        let (server, _) = self.admin_url.rsplit_once('/').expect("a postgres:// URL with a database");
        format!("{server}/{}?sslmode=disable", self.name)
    }

    fn psql(&self, sql: &str) {
        let out = Command::new("psql")
            .args(["-q", "-v", "ON_ERROR_STOP=1", &self.admin_url, "-c", sql])
            .output()
            .expect("run psql");
        assert!(out.status.success(), "psql {sql}: {}", String::from_utf8_lossy(&out.stderr));
    }

    fn drop_database(&self) {
        let _ = Command::new("psql")
            .args(["-q", &self.admin_url, "-c", &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name)])
            .output();
    }
}

/// Mounts a tmpfs of `mib` MiB at `at` (root only: the tests that fill disks need it).
fn mount_tmpfs(at: &Path, mib: u64) {
    std::fs::create_dir_all(at).unwrap();
    let out = Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
        .arg(at)
        .output()
        .expect("run mount");
    assert!(
        out.status.success(),
        "mounting a tmpfs needs root (the disk-full tests fill a small filesystem): {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A test environment: a fresh temporary directory with a SQLite database
/// path and a static tokens file. Cloning shares the directory.
#[derive(Clone)]
pub struct Env {
    dir: Arc<TempDir>,
}

impl Env {
    pub fn new() -> Env {
        Env::with_mounts(&[])
    }

    /// An environment whose directory (the database's) is a tmpfs of `db_mib` MiB, and whose
    /// `images` directory is another of `data_mib` MiB: disks that tests can fill.
    pub fn on_small_disks(db_mib: u64, data_mib: u64) -> Env {
        Env::with_mounts(&[("", db_mib), ("images", data_mib)])
    }

    fn with_mounts(mounts: &[(&str, u64)]) -> Env {
        let dir = std::env::temp_dir().join(format!("imagemeta-test-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        let mut mounted = Vec::new();
        for (sub, mib) in mounts {
            let at = dir.join(sub);
            mount_tmpfs(&at, *mib);
            mounted.push(at);
        }
        let pg = test_postgres().map(|admin| PgDatabase::create(&admin));
        let env = Env { dir: Arc::new(TempDir(dir, mounted, pg)) };
        let tokens = json!({
            TOK_A: {"user_id": "user-a", "project_id": PROJ_A, "roles": ["member", "reader"]},
            TOK_A_READER: {"user_id": "user-a-reader", "project_id": PROJ_A, "roles": ["reader"]},
            TOK_B: {"user_id": "user-b", "project_id": PROJ_B, "roles": ["member", "reader"]},
            TOK_ADMIN: {"user_id": "admin-user", "project_id": PROJ_ADMIN, "roles": ["admin", "member", "reader"]},
        });
        std::fs::write(env.tokens_path(), serde_json::to_vec_pretty(&tokens).unwrap()).unwrap();
        env
    }

    pub fn dir(&self) -> &Path {
        &self.dir.0
    }

    pub fn db_path(&self) -> PathBuf {
        self.dir().join("imagemeta.db")
    }

    /// The catalogue's URL: a SQLite file in the directory, or this environment's own
    /// PostgreSQL database (see [`test_postgres`]).
    pub fn db_url(&self) -> String {
        match &self.dir.2 {
            Some(pg) => pg.url(),
            None => format!("sqlite:{}", self.db_path().display()),
        }
    }

    /// Whether the catalogue is on PostgreSQL (tests of SQLite's own files do not apply).
    pub fn is_postgres(&self) -> bool {
        self.dir.2.is_some()
    }

    pub fn tokens_path(&self) -> PathBuf {
        self.dir().join("tokens.json")
    }

    /// Runs the binary with the given arguments (IMAGEMETA_* env removed).
    pub fn cli(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(BIN);
        clear_env(&mut cmd);
        cmd.current_dir(self.dir());
        cmd.args(args).stdin(Stdio::null()).output().expect("run imagemeta")
    }

    /// Seeds one image through `imagemeta image create`; returns its JSON.
    pub fn seed(&self, seed: &Seed) -> Value {
        let out = self.seed_raw(seed);
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "image create failed: {:?}\nstdout: {}\nstderr: {}",
            out.status,
            text,
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("image create output is not JSON ({e}): {text}"))
    }

    /// Seeds `count` images with `--count`; returns each printed JSON object.
    pub fn seed_count(&self, seed: &Seed, count: usize) -> Vec<Value> {
        let mut args = seed.args(&self.db_url());
        args.push("--count".into());
        args.push(count.to_string());
        let out = self.cli(&args.iter().map(String::as_str).collect::<Vec<_>>());
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(out.status.success(), "image create --count failed: {}", String::from_utf8_lossy(&out.stderr));
        let v: Vec<Value> = text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line ({e}): {l}")))
            .collect();
        assert_eq!(v.len(), count, "image create --count {count} printed {} objects", v.len());
        v
    }

    pub fn seed_raw(&self, seed: &Seed) -> Output {
        let args = seed.args(&self.db_url());
        self.cli(&args.iter().map(String::as_str).collect::<Vec<_>>())
    }

    pub fn start(&self) -> Server {
        self.start_with(&ServerOpts::default())
    }

    pub fn start_quota(&self, n: i64) -> Server {
        self.start_with(&ServerOpts { metadata_items: Some(n), ..Default::default() })
    }

    pub fn start_with(&self, opts: &ServerOpts) -> Server {
        Server::spawn(self.serve_command(opts), self.clone())
    }

    /// Runs `serve` with `opts` expecting it to refuse to start: its exit status and stderr.
    pub fn start_fails(&self, opts: &ServerOpts) -> (std::process::ExitStatus, String) {
        let mut cmd = self.serve_command(opts);
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn imagemeta serve");
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                let mut err = String::new();
                child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
                return (status, err);
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                panic!("serve did not stop: it was expected to refuse to start");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn serve_command(&self, opts: &ServerOpts) -> Command {
        let mut cmd = match opts.wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(BIN);
                c
            }
            None => Command::new(BIN),
        };
        clear_env(&mut cmd);
        cmd.envs(opts.env.iter().map(|(k, v)| (k, v)));
        // Relative defaults of the server land in the temp dir, never in the repo.
        cmd.current_dir(self.dir());
        if opts.via_env {
            cmd.arg("serve");
            cmd.env("IMAGEMETA_COMPUTE_LISTEN", "127.0.0.1:0");
            cmd.env("IMAGEMETA_IMAGE_LISTEN", "127.0.0.1:0");
            cmd.env("IMAGEMETA_ADMIN_LISTEN", "127.0.0.1:0");
            cmd.env("IMAGEMETA_IMAGE_DATA_DIR", self.dir().join("images"));
            cmd.env("IMAGEMETA_DATABASE", opts.database.clone().unwrap_or_else(|| self.db_url()));
            match opts.auth {
                Auth::Static => {
                    cmd.env("IMAGEMETA_AUTH", "static");
                    cmd.env("IMAGEMETA_TOKENS", self.tokens_path());
                }
                Auth::Noauth => {
                    cmd.env("IMAGEMETA_AUTH", "noauth");
                }
                Auth::External => {}
            }
            if let Some(n) = opts.metadata_items {
                cmd.env("IMAGEMETA_METADATA_ITEMS", n.to_string());
            }
        } else {
            cmd.args(["serve", "--compute-listen", "127.0.0.1:0", "--image-listen", "127.0.0.1:0"]);
            cmd.args(["--admin-listen", "127.0.0.1:0", "--database"]);
            cmd.arg(opts.database.clone().unwrap_or_else(|| self.db_url()));
            cmd.arg("--image-data-dir");
            cmd.arg(self.dir().join("images"));
            match opts.auth {
                Auth::Static => {
                    cmd.args(["--auth", "static", "--tokens"]);
                    cmd.arg(self.tokens_path());
                }
                Auth::Noauth => {
                    cmd.args(["--auth", "noauth"]);
                }
                Auth::External => {}
            }
            if let Some(n) = opts.metadata_items {
                cmd.arg(format!("--metadata-items={n}"));
            }
        }
        cmd.args(&opts.extra_args);
        cmd
    }
}

fn clear_env(cmd: &mut Command) {
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("IMAGEMETA_") {
            cmd.env_remove(&k);
        }
    }
    cmd.env_remove("RUST_LOG");
}

#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub enum Auth {
    #[default]
    Static,
    Noauth,
    /// No auth flags: `extra_args` carry `--auth keystone …`.
    External,
}

#[derive(Default, Clone)]
pub struct ServerOpts {
    pub auth: Auth,
    pub metadata_items: Option<i64>,
    pub extra_args: Vec<String>,
    /// Configure through IMAGEMETA_* environment variables instead of flags.
    pub via_env: bool,
    /// A program (and its arguments) that runs the binary, e.g. `prlimit --nofile=1024 --`.
    pub wrapper: Vec<String>,
    /// Another database than the environment's own.
    pub database: Option<String>,
    /// Environment variables for the server (after the IMAGEMETA_* of the test's own are
    /// removed).
    pub env: Vec<(String, String)>,
}

// ---------------------------------------------------------------------------
// Image seeds
// ---------------------------------------------------------------------------

#[derive(Clone, Debug)]
pub struct Seed {
    pub id: Option<String>,
    pub name: Option<String>,
    pub owner: Option<String>,
    pub visibility: Option<String>,
    pub status: Option<String>,
    pub min_disk: Option<i64>,
    pub min_ram: Option<i64>,
    pub size: Option<i64>,
    pub protected: bool,
    pub os_hidden: bool,
    pub created_at: Option<String>,
    pub props: Vec<(String, String)>,
}

impl Seed {
    /// A private, active image owned by project A with a fresh id.
    pub fn new() -> Seed {
        Seed {
            id: Some(new_id()),
            name: Some("test-image".into()),
            owner: Some(PROJ_A.into()),
            visibility: Some("private".into()),
            status: None,
            min_disk: None,
            min_ram: None,
            size: None,
            protected: false,
            os_hidden: false,
            created_at: None,
            props: vec![],
        }
    }
    /// Completely bare: only what the caller sets (CLI defaults apply).
    pub fn bare() -> Seed {
        Seed {
            id: None,
            name: None,
            owner: None,
            visibility: None,
            status: None,
            min_disk: None,
            min_ram: None,
            size: None,
            protected: false,
            os_hidden: false,
            created_at: None,
            props: vec![],
        }
    }
    pub fn id(mut self, v: &str) -> Self {
        self.id = Some(v.into());
        self
    }
    pub fn no_id(mut self) -> Self {
        self.id = None;
        self
    }
    pub fn name(mut self, v: &str) -> Self {
        self.name = Some(v.into());
        self
    }
    pub fn owner(mut self, v: &str) -> Self {
        self.owner = Some(v.into());
        self
    }
    pub fn visibility(mut self, v: &str) -> Self {
        self.visibility = Some(v.into());
        self
    }
    pub fn public(self) -> Self {
        self.visibility("public")
    }
    pub fn status(mut self, v: &str) -> Self {
        self.status = Some(v.into());
        self
    }
    pub fn min_disk(mut self, v: i64) -> Self {
        self.min_disk = Some(v);
        self
    }
    pub fn min_ram(mut self, v: i64) -> Self {
        self.min_ram = Some(v);
        self
    }
    pub fn size(mut self, v: i64) -> Self {
        self.size = Some(v);
        self
    }
    pub fn protected(mut self) -> Self {
        self.protected = true;
        self
    }
    pub fn os_hidden(mut self) -> Self {
        self.os_hidden = true;
        self
    }
    pub fn created_at(mut self, v: &str) -> Self {
        self.created_at = Some(v.into());
        self
    }
    pub fn prop(mut self, k: &str, v: &str) -> Self {
        self.props.push((k.into(), v.into()));
        self
    }
    /// Adds `n` properties `p0`..`p{n-1}` with values `v0`...
    pub fn props_n(mut self, n: usize) -> Self {
        for i in 0..n {
            self.props.push((format!("p{i}"), format!("v{i}")));
        }
        self
    }

    pub fn args(&self, db_url: &str) -> Vec<String> {
        let mut a: Vec<String> = vec!["image".into(), "create".into(), "--database".into(), db_url.into()];
        let mut opt = |k: &str, v: &Option<String>| {
            if let Some(v) = v {
                a.push(format!("--{k}"));
                a.push(v.clone());
            }
        };
        opt("id", &self.id);
        opt("name", &self.name);
        opt("owner", &self.owner);
        opt("visibility", &self.visibility);
        opt("status", &self.status);
        opt("min-disk", &self.min_disk.map(|v| v.to_string()));
        opt("min-ram", &self.min_ram.map(|v| v.to_string()));
        opt("size", &self.size.map(|v| v.to_string()));
        opt("created-at", &self.created_at);
        if self.protected {
            a.push("--protected".into());
        }
        if self.os_hidden {
            a.push("--os-hidden".into());
        }
        for (k, v) in &self.props {
            a.push("--property".into());
            a.push(format!("{k}={v}"));
        }
        a
    }
}

/// The Nova rendering of a Glance timestamp: `YYYY-MM-DDTHH:MM:SSZ`.
pub fn nova_time(glance: &Value) -> Value {
    match glance {
        Value::Null => Value::Null,
        Value::String(s) => {
            assert!(s.len() >= 19, "unexpected timestamp {s}");
            Value::String(format!("{}Z", &s[..19]))
        }
        other => panic!("unexpected timestamp {other}"),
    }
}

// ---------------------------------------------------------------------------
// Server process
// ---------------------------------------------------------------------------

pub struct Server {
    child: Option<Child>,
    pub base: String,
    pub port: u16,
    /// The image API (Glance v2) listener, `http://127.0.0.1:PORT`.
    pub image_base: String,
    /// The admin listener (`/healthz`, `/readyz`, `/metrics`).
    pub admin_base: String,
    client: reqwest::Client,
    pub env: Env,
    stderr_path: PathBuf,
}

impl Server {
    fn spawn(mut cmd: Command, env: Env) -> Server {
        let stderr_path = env.dir().join(format!("server-{}.stderr", uuid::Uuid::new_v4().simple()));
        let stderr = std::fs::File::create(&stderr_path).unwrap();
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::from(stderr));
        let mut child = cmd.spawn().expect("spawn imagemeta serve");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel::<(&'static str, String)>();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            loop {
                line.clear();
                match reader.read_line(&mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let which = ["compute API", "image API", "admin"]
                            .into_iter()
                            .find(|w| line.contains(&format!("{w} listening on")));
                        if let (Some(which), Some(i)) = (which, line.find("http://")) {
                            let _ = tx.send((which, line[i..].trim().to_string()));
                        }
                    }
                }
            }
        });
        let mut urls = (None, None, None);
        while urls.0.is_none() || urls.1.is_none() || urls.2.is_none() {
            match rx.recv_timeout(Duration::from_secs(30)) {
                Ok(("compute API", u)) => urls.0 = Some(u),
                Ok(("image API", u)) => urls.1 = Some(u),
                Ok((_, u)) => urls.2 = Some(u),
                Err(_) => break,
            }
        }
        let (url, image_url, admin_url) = match urls {
            (Some(u), Some(i), Some(a)) => (u, i, a),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "server did not report its listen address; stderr:\n{}",
                    std::fs::read_to_string(&stderr_path).unwrap_or_default()
                );
            }
        };
        let base = url.trim_end_matches('/').to_string();
        assert!(base.starts_with("http://127.0.0.1:"), "server must listen on 127.0.0.1, got {base}");
        let port: u16 = base.rsplit(':').next().unwrap().parse().expect("port in listen URL");
        imagemeta::auth::keystone::install_tls();
        let client = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(60)).build().unwrap();
        let image_base = image_url.trim_end_matches('/').to_string();
        let admin_base = admin_url.trim_end_matches('/').to_string();
        Server { child: Some(child), base, port, image_base, admin_base, client, env, stderr_path }
    }

    /// `127.0.0.1:PORT`, the Host header the client sends.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// The server process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("server running").id()
    }

    /// SIGTERM; then the exit status, if the process ends within `within`.
    pub fn terminate(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        self.signal(libc::SIGTERM);
        self.wait_exit(within)
    }

    /// Sends `signal` to the server process.
    pub fn signal(&self, signal: libc::c_int) {
        let pid = self.pid();
        // SAFETY: kill(2) on our own child's pid.
        let sent = unsafe { libc::kill(pid as libc::pid_t, signal) };
        assert_eq!(sent, 0, "kill({pid}, {signal})");
    }

    /// The exit status, if the process ends within `within` (it is reaped then).
    pub fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + within;
        let child = self.child.as_mut()?;
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                self.child = None;
                return Some(status);
            }
            if std::time::Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL the server and reap it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// A request with project A's member token.
    pub fn call(&self, method: &str, path: &str) -> Call {
        self.handle().call(method, path)
    }

    /// A handle on the image API (Glance v2) listener.
    pub fn image(&self) -> Handle {
        Handle { client: self.client.clone(), base: self.image_base.clone() }
    }

    /// A cloneable, 'static handle for issuing requests from spawned tasks.
    pub fn handle(&self) -> Handle {
        Handle { client: self.client.clone(), base: self.base.clone() }
    }
    pub fn get(&self, path: &str) -> Call {
        self.call("GET", path)
    }
    pub fn delete(&self, path: &str) -> Call {
        self.call("DELETE", path)
    }
    pub fn post(&self, path: &str, body: Value) -> Call {
        self.call("POST", path).json(&body)
    }
    pub fn put(&self, path: &str, body: Value) -> Call {
        self.call("PUT", path).json(&body)
    }

    /// Sends raw bytes on a fresh connection (`Connection: close` expected in
    /// `req`) and parses the response.
    pub fn raw(&self, req: &[u8]) -> Resp {
        raw_http(self.port, req)
    }

    /// Current metadata of an image, read through the API as admin.
    pub async fn metadata_of(&self, image_id: &str) -> Value {
        let r = self.get(&format!("/v2.1/images/{image_id}/metadata")).token(TOK_ADMIN).send().await;
        assert_eq!(r.status, 200, "metadata GET failed: {}", r.text());
        r.json()["metadata"].clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

// ---------------------------------------------------------------------------
// Requests and responses
// ---------------------------------------------------------------------------

#[derive(Clone)]
pub struct Handle {
    client: reqwest::Client,
    base: String,
}

impl Handle {
    /// A request with project A's member token.
    pub fn call(&self, method: &str, path: &str) -> Call {
        Call {
            client: self.client.clone(),
            method: method.to_string(),
            url: format!("{}{}", self.base, path),
            headers: vec![],
            body: None,
            token: Some(TOK_A.to_string()),
        }
    }
}

pub struct Call {
    client: reqwest::Client,
    method: String,
    url: String,
    headers: Vec<(String, String)>,
    body: Option<Vec<u8>>,
    token: Option<String>,
}

impl Call {
    pub fn token(mut self, t: &str) -> Self {
        self.token = Some(t.into());
        self
    }
    pub fn no_token(mut self) -> Self {
        self.token = None;
        self
    }
    pub fn header(mut self, k: &str, v: &str) -> Self {
        self.headers.push((k.into(), v.into()));
        self
    }
    /// `OpenStack-API-Version: compute <v>`.
    pub fn mv(self, v: &str) -> Self {
        self.header("OpenStack-API-Version", &format!("compute {v}"))
    }
    pub fn json(mut self, v: &Value) -> Self {
        self.body = Some(serde_json::to_vec(v).unwrap());
        self.headers.retain(|(k, _)| !k.eq_ignore_ascii_case("content-type"));
        self.headers.push(("Content-Type".into(), "application/json".into()));
        self
    }
    /// Raw body bytes; keeps whatever Content-Type was set.
    pub fn body(mut self, b: impl Into<Vec<u8>>) -> Self {
        self.body = Some(b.into());
        self
    }
    /// Raw body with `Content-Type: application/json`.
    pub fn json_bytes(mut self, b: impl Into<Vec<u8>>) -> Self {
        self.body = Some(b.into());
        self.headers.retain(|(k, _)| !k.eq_ignore_ascii_case("content-type"));
        self.headers.push(("Content-Type".into(), "application/json".into()));
        self
    }
    pub fn content_type(mut self, ct: &str) -> Self {
        self.headers.retain(|(k, _)| !k.eq_ignore_ascii_case("content-type"));
        self.headers.push(("Content-Type".into(), ct.into()));
        self
    }
    pub fn no_content_type(mut self) -> Self {
        self.headers.retain(|(k, _)| !k.eq_ignore_ascii_case("content-type"));
        self
    }

    pub async fn send(self) -> Resp {
        let url: String = self.url.chars().take(200).collect();
        let what = format!("{} {url}", self.method);
        self.try_send().await.unwrap_or_else(|e| panic!("{what} failed: {e}"))
    }

    /// Like `send`, but a transport error (e.g. the server was killed) is returned.
    pub async fn try_send(self) -> Result<Resp, String> {
        let method = reqwest::Method::from_bytes(self.method.as_bytes()).unwrap();
        let mut rb = self.client.request(method, &self.url);
        if let Some(t) = &self.token {
            rb = rb.header("X-Auth-Token", t);
        }
        for (k, v) in &self.headers {
            rb = rb.header(k.as_str(), v.as_str());
        }
        if let Some(b) = self.body {
            rb = rb.body(b);
        }
        let r = rb.send().await.map_err(|e| {
            let m = format!("{e:?}");
            m.chars().take(500).collect::<String>()
        })?;
        let status = r.status().as_u16();
        let headers = r
            .headers()
            .iter()
            .map(|(k, v)| (k.as_str().to_string(), String::from_utf8_lossy(v.as_bytes()).to_string()))
            .collect();
        let body = r.bytes().await.map_err(|e| format!("reading body: {e:?}"))?.to_vec();
        Ok(Resp { status, headers, body })
    }
}

#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).to_string()
    }
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("response ({}) is not JSON ({e}): {:?}", self.status, self.text()))
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers.iter().filter(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str()).collect()
    }
    /// All comma-separated tokens of every occurrence of a list header.
    pub fn header_tokens(&self, name: &str) -> Vec<String> {
        self.header_all(name)
            .iter()
            .flat_map(|v| v.split(','))
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect()
    }
    pub fn content_type(&self) -> Option<&str> {
        self.header("content-type")
    }
}

/// Minimal HTTP/1.1 exchange over a fresh TCP connection.
pub fn raw_http(port: u16, req: &[u8]) -> Resp {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    // The server may answer (e.g. 413) and close before it read everything.
    let _ = s.write_all(req);
    let _ = s.flush();
    let mut buf = Vec::new();
    let mut tmp = [0u8; 65536];
    loop {
        match s.read(&mut tmp) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&tmp[..n]),
            Err(e) if buf.is_empty() => panic!("no response: {e}"),
            Err(_) => break,
        }
        if let Some(r) = try_parse_complete(&buf) {
            return r;
        }
    }
    try_parse_complete(&buf)
        .or_else(|| parse_lenient(&buf))
        .unwrap_or_else(|| panic!("unparseable response: {:?}", String::from_utf8_lossy(&buf)))
}

/// A response head: the status, the headers in order, and where the body starts.
type Head = (u16, Vec<(String, String)>, usize);

fn split_head(buf: &[u8]) -> Option<Head> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&buf[..end]).to_string();
    let mut lines = head.split("\r\n");
    let status_line = lines.next()?;
    let status: u16 = status_line.split_whitespace().nth(1)?.parse().ok()?;
    let headers =
        lines.filter_map(|l| l.split_once(':').map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))).collect();
    Some((status, headers, end + 4))
}

fn try_parse_complete(buf: &[u8]) -> Option<Resp> {
    let (status, headers, start) = split_head(buf)?;
    let r = Resp { status, headers, body: vec![] };
    if let Some(cl) = r.header("content-length") {
        let cl: usize = cl.parse().ok()?;
        if buf.len() >= start + cl {
            return Some(Resp { body: buf[start..start + cl].to_vec(), ..r });
        }
        return None;
    }
    if r.header("transfer-encoding").map(|t| t.eq_ignore_ascii_case("chunked")).unwrap_or(false) {
        let body = dechunk(&buf[start..])?;
        return Some(Resp { body, ..r });
    }
    if status == 204 || status == 304 {
        return Some(r);
    }
    None
}

fn parse_lenient(buf: &[u8]) -> Option<Resp> {
    let (status, headers, start) = split_head(buf)?;
    Some(Resp { status, headers, body: buf[start..].to_vec() })
}

fn dechunk(mut b: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let nl = b.windows(2).position(|w| w == b"\r\n")?;
        let size_str = String::from_utf8_lossy(&b[..nl]).to_string();
        let size = usize::from_str_radix(size_str.split(';').next()?.trim(), 16).ok()?;
        b = &b[nl + 2..];
        if size == 0 {
            return Some(out);
        }
        if b.len() < size + 2 {
            return None;
        }
        out.extend_from_slice(&b[..size]);
        b = &b[size + 2..];
    }
}

// ---------------------------------------------------------------------------
// Assertions
// ---------------------------------------------------------------------------

pub fn fault(name: &str, code: u16, message: &str) -> Value {
    json!({ name: { "code": code, "message": message } })
}

/// Asserts a Nova fault: status, `Content-Type`, and the exact body.
#[track_caller]
pub fn assert_fault(r: &Resp, code: u16, name: &str, message: &str) {
    assert_eq!(r.status, code, "status; body: {}", r.text());
    assert_eq!(r.json(), fault(name, code, message), "fault body");
    assert_eq!(r.content_type(), Some(FAULT_CT), "fault Content-Type");
}

/// Asserts status code and fault name, whatever the message (used where the
/// spec does not fix the text).
#[track_caller]
pub fn assert_fault_name(r: &Resp, code: u16, name: &str) {
    assert_eq!(r.status, code, "status; body: {}", r.text());
    let v = r.json();
    let obj = v.as_object().unwrap_or_else(|| panic!("fault is not an object: {v}"));
    assert_eq!(obj.len(), 1, "fault has exactly one key: {v}");
    let inner = &v[name];
    assert_eq!(inner["code"], json!(code), "fault {name}.code in {v}");
    assert!(inner["message"].is_string(), "fault {name}.message is a string in {v}");
    assert_eq!(inner.as_object().unwrap().len(), 2, "fault has only code and message: {v}");
    assert_eq!(r.content_type(), Some(FAULT_CT), "fault Content-Type");
}

/// Asserts a successful JSON response with an exact body.
#[track_caller]
pub fn assert_json(r: &Resp, code: u16, expected: &Value) {
    assert_eq!(r.status, code, "status; body: {}", r.text());
    assert_eq!(&r.json(), expected, "body");
    assert_eq!(r.content_type(), Some("application/json"), "Content-Type");
}

#[track_caller]
pub fn assert_not_5xx(r: &Resp) {
    assert!(r.status < 500, "server error {}: {}", r.status, r.text());
}

#[track_caller]
pub fn assert_no_content(r: &Resp) {
    assert_eq!(r.status, 204, "status; body: {}", r.text());
    assert!(r.body.is_empty(), "204 body must be empty: {:?}", r.text());
}

/// The bare WebOb 404 of an unrouted path, as rendered for `Accept: application/json`.
pub fn bare_404_json() -> Value {
    json!({
        "message": "The resource could not be found.<br /><br />\n\n\n",
        "code": "404 Not Found",
        "title": "Not Found"
    })
}

pub fn is_request_id(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() != 40 || !s.starts_with("req-") {
        return false;
    }
    let u = &s[4..];
    let groups: Vec<&str> = u.split('-').collect();
    groups.len() == 5
        && [8, 4, 4, 4, 12]
            .iter()
            .zip(&groups)
            .all(|(n, g)| g.len() == *n && g.bytes().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)))
}

/// Asserts both request-id headers are present, equal and well-formed; returns the id.
#[track_caller]
pub fn assert_request_ids(r: &Resp) -> String {
    let c = r.header_all("x-compute-request-id");
    let o = r.header_all("x-openstack-request-id");
    assert_eq!(c.len(), 1, "exactly one x-compute-request-id (status {}): {:?}", r.status, r.headers);
    assert_eq!(o.len(), 1, "exactly one x-openstack-request-id (status {}): {:?}", r.status, r.headers);
    assert_eq!(c[0], o[0], "request ids equal");
    assert!(is_request_id(c[0]), "request id format: {}", c[0]);
    c[0].to_string()
}

/// Asserts the four microversion response headers for version `v`.
#[track_caller]
pub fn assert_mv_headers(r: &Resp, v: &str) {
    assert_eq!(r.header_all("openstack-api-version"), vec![format!("compute {v}")], "OpenStack-API-Version");
    assert_eq!(r.header_all("x-openstack-nova-api-version"), vec![v.to_string()], "X-OpenStack-Nova-API-Version");
    let vary: Vec<String> = r.header_tokens("vary").iter().map(|s| s.to_ascii_lowercase()).collect();
    assert!(vary.contains(&"openstack-api-version".to_string()), "Vary has OpenStack-API-Version: {vary:?}");
    assert!(
        vary.contains(&"x-openstack-nova-api-version".to_string()),
        "Vary has X-OpenStack-Nova-API-Version: {vary:?}"
    );
}

#[track_caller]
pub fn assert_no_mv_headers(r: &Resp) {
    assert!(r.header("openstack-api-version").is_none(), "no OpenStack-API-Version: {:?}", r.headers);
    assert!(r.header("x-openstack-nova-api-version").is_none(), "no X-OpenStack-Nova-API-Version: {:?}", r.headers);
    let vary: Vec<String> = r.header_tokens("vary").iter().map(|s| s.to_ascii_lowercase()).collect();
    assert!(
        !vary.iter().any(|v| v == "openstack-api-version" || v == "x-openstack-nova-api-version"),
        "no microversion Vary values: {vary:?}"
    );
}

/// Nova's python repr of a str (only ASCII without quotes/backslashes is used in tests).
pub fn py_repr(s: &str) -> String {
    format!("'{s}'")
}

/// Links of an image as Nova builds them for a request to `host`; `alternate` names the image
/// API endpoint (`image_base`, the Glance endpoint in Nova).
pub fn image_links(image_base: &str, host: &str, version: &str, project: Option<&str>, id: &str) -> Value {
    let p = project.map(|p| format!("/{p}")).unwrap_or_default();
    json!([
        {"rel": "self", "href": format!("http://{host}/{version}{p}/images/{id}")},
        {"rel": "bookmark", "href": format!("http://{host}{p}/images/{id}")},
        {"rel": "alternate", "type": "application/vnd.openstack.image", "href": format!("{image_base}/images/{id}")},
    ])
}

pub fn meta_path(id: &str) -> String {
    format!("/v2.1/images/{id}/metadata")
}

pub fn key_path(id: &str, key: &str) -> String {
    format!("/v2.1/images/{id}/metadata/{key}")
}

pub fn image_path(id: &str) -> String {
    format!("/v2.1/images/{id}")
}
