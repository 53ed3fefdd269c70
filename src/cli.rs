//! The command line: `serve`, and the operator's `image create` / `image list`, which work
//! on the database directly.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::api::Settings;
use crate::app::{Application, AuthMode, ServeConfig, shutdown_signal};
use crate::auth::keystone::{KeystoneConfig, KeystoneTls, ServiceCredentials};
use crate::domain::import::{ImportMethod, ImportSettings, UriFilter};
use crate::domain::metadata::MetadataQuota;
use crate::domain::update::ImageQuotas;
use crate::domain::{Image, ImageStatus, Visibility, now};
use crate::server::{self, Limits};
use crate::store::data::{DataStore, StoreSpec};
use crate::store::{self, Caller, DatabaseUrl, DynStore, ListQuery, StoreOptions, Synchronous};

#[derive(Debug, Parser)]
#[command(name = "imagemeta", version, about = "OpenStack Compute image and image-metadata API in one binary")]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum MetadefsCommand {
    /// Load Glance's predefined namespaces (built in; or the `*.json` files of `--from DIR`),
    /// as `glance-manage db_load_metadefs` does: a namespace present already is left as it is.
    /// Every file is checked before any is loaded. Prints the namespaces loaded and skipped
    /// as JSON.
    Load {
        #[command(flatten)]
        store: StoreArgs,
        /// A directory of definition files to load instead of the built-in ones.
        #[arg(long, value_name = "DIR")]
        from: Option<PathBuf>,
    },
}

// Parsed once per process: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the Compute API and the image API.
    Serve(ServeArgs),
    /// Manage images directly in the database.
    #[command(subcommand)]
    Image(ImageCommand),
    /// Operate on a whole catalogue.
    #[command(subcommand)]
    Catalogue(CatalogueCommand),
    /// Operate on image data.
    #[command(subcommand)]
    Data(DataCommand),
    /// Manage the metadata definitions catalogue.
    #[command(subcommand)]
    Metadefs(MetadefsCommand),
    /// Take a consistent copy of a SQLite catalogue while servers write to it (SQLite's online
    /// backup): checked with integrity_check, then moved over FILE atomically. Prints what it
    /// copied as JSON. A PostgreSQL catalogue is backed up with pg_dump (see the README).
    Backup {
        /// The catalogue: `sqlite:PATH`.
        #[arg(long, env = "IMAGEMETA_DATABASE", default_value = "sqlite:imagemeta.db")]
        database: String,
        /// The backup file (replaced, once the new copy is complete and checked).
        #[arg(long, value_name = "FILE")]
        to: PathBuf,
    },
    /// Print the completions of this command line for SHELL.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write the man pages (imagemeta.1, and imagemeta-COMMAND.1 for each command) into DIR.
    Manpages {
        #[arg(value_name = "DIR")]
        dir: PathBuf,
    },
    /// Print a config file for `serve --config`: every setting, commented out, with its help,
    /// its environment variable and its default.
    SampleConfig,
}

#[derive(Debug, Subcommand)]
enum DataCommand {
    /// Move the data of every image in one image store to another (e.g. from the `file`
    /// store to S3 or Swift), checking each image's md5 on the way; the image's record then
    /// names the new store, and the old copy is removed. Servers may run meanwhile (a
    /// download under way from the old copy is cut).
    Move {
        #[command(flatten)]
        store: StoreArgs,
        #[command(flatten)]
        data: DataArgs,
        /// The store the data leaves.
        #[arg(long)]
        from: String,
        /// The store it goes to.
        #[arg(long)]
        to: String,
    },
}

#[derive(Debug, Subcommand)]
enum CatalogueCommand {
    /// Copy a whole catalogue into an empty one, e.g. from SQLite to PostgreSQL or back:
    /// images with their properties (in order), tags, members and timestamps, and the ids
    /// of deleted images. Stop the servers of the source first.
    Copy {
        /// The source database URL.
        #[arg(long)]
        from: String,
        /// The target database URL (an empty catalogue: created when it does not exist).
        #[arg(long)]
        to: String,
    },
}

#[derive(Debug, Args)]
struct StoreArgs {
    /// The database: `sqlite:PATH`.
    #[arg(long, env = "IMAGEMETA_DATABASE", default_value = "sqlite:imagemeta.db")]
    database: String,
    /// SQLite `synchronous`: `full` makes every acknowledged write survive power loss.
    #[arg(long, env = "IMAGEMETA_SYNCHRONOUS", value_enum, default_value = "full")]
    synchronous: Synchronous,
}

impl StoreArgs {
    async fn open(&self) -> anyhow::Result<DynStore> {
        let url = DatabaseUrl::parse(&self.database).map_err(anyhow::Error::msg)?;
        Ok(store::open(&url, StoreOptions { synchronous: self.synchronous, disk_reserve: 0 }).await?)
    }
}

/// Where image data lives.
#[derive(Debug, Args)]
struct DataArgs {
    /// Directory of image data files: the one image store, named `file`, unless
    /// `--image-store` names stores.
    #[arg(long, env = "IMAGEMETA_IMAGE_DATA_DIR", default_value = "imagemeta-images")]
    image_data_dir: PathBuf,
    /// An image store, `NAME=URL` (repeatable): `file:///PATH`, `s3://BUCKET?endpoint=URL&region=R`
    /// or `swift://CONTAINER?auth_url=URL`. Several make Glance's multi-store API available.
    #[arg(long = "image-store", env = "IMAGEMETA_IMAGE_STORES", value_delimiter = ',', value_parser = StoreSpec::parse)]
    image_stores: Vec<StoreSpec>,
    /// The store uploads go to without `X-Image-Meta-Store` (default: the first).
    #[arg(long, env = "IMAGEMETA_DEFAULT_IMAGE_STORE", requires = "image_stores")]
    default_image_store: Option<String>,
}

impl DataArgs {
    async fn open(&self) -> anyhow::Result<DataStore> {
        if self.image_stores.is_empty() {
            return DataStore::open(&self.image_data_dir)
                .with_context(|| format!("cannot open the image data directory {}", self.image_data_dir.display()));
        }
        DataStore::open_all(&self.image_stores, self.default_image_store.as_deref())
            .await
            .map_err(|e| anyhow::anyhow!("cannot open the image stores: {e}"))
    }
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// A TOML file of settings: each key is a flag's name with `_` for `-` (`compute_listen`,
    /// `metadata_items`, `image_store = [...]`, …). Flags win over the environment, which wins
    /// over the file, which wins over the defaults; a key that names no flag is an error.
    #[arg(long, env = "IMAGEMETA_CONFIG")]
    config: Option<PathBuf>,
    /// Address of the Compute API listener.
    #[arg(long, env = "IMAGEMETA_COMPUTE_LISTEN", default_value = "127.0.0.1:8774")]
    compute_listen: SocketAddr,
    /// Address of the image API (Glance v2) listener.
    #[arg(long, env = "IMAGEMETA_IMAGE_LISTEN", default_value = "127.0.0.1:9292")]
    image_listen: SocketAddr,
    /// Address of the admin listener: /healthz, /readyz, /metrics (Prometheus).
    #[arg(long, env = "IMAGEMETA_ADMIN_LISTEN", default_value = "127.0.0.1:9464")]
    admin_listen: SocketAddr,
    #[command(flatten)]
    store: StoreArgs,
    #[command(flatten)]
    data: DataArgs,
    /// Largest image upload, in bytes (Glance's `image_size_cap`).
    #[arg(long, env = "IMAGEMETA_IMAGE_SIZE_CAP", default_value_t = 1 << 40)]
    image_size_cap: u64,
    /// This node's image cache (Glance's `image_cache_dir`): local copies of the images it
    /// serves, filled by whole downloads and by `PUT /v2/cache/{id}`. Unset: no cache, and the
    /// cache API answers 404.
    #[arg(long, env = "IMAGEMETA_IMAGE_CACHE_DIR", value_name = "DIR")]
    image_cache_dir: Option<PathBuf>,
    /// The most bytes the image cache holds (Glance's `image_cache_max_size`); past it the
    /// least recently used copies go.
    #[arg(long, env = "IMAGEMETA_IMAGE_CACHE_MAX_SIZE", default_value_t = 10 << 30)]
    image_cache_max_size: u64,
    /// The image import methods on offer (Glance's `enabled_import_methods`): `glance-direct`,
    /// `web-download`, `copy-image`, `glance-download` (with `--auth keystone`); empty for none.
    #[arg(
        long,
        env = "IMAGEMETA_IMPORT_METHODS",
        value_delimiter = ',',
        default_value = "glance-direct,web-download,copy-image"
    )]
    import_methods: Vec<String>,
    /// URL schemes `web-download` may fetch (empty: any but the disallowed ones).
    #[arg(long, env = "IMAGEMETA_IMPORT_ALLOWED_SCHEMES", value_delimiter = ',', default_value = "http,https")]
    import_allowed_schemes: Vec<String>,
    /// URL schemes `web-download` refuses (when no scheme is allowed explicitly).
    #[arg(long, env = "IMAGEMETA_IMPORT_DISALLOWED_SCHEMES", value_delimiter = ',')]
    import_disallowed_schemes: Vec<String>,
    /// Hosts (names or addresses) `web-download` may fetch from (empty: any but the
    /// disallowed ones).
    #[arg(long, env = "IMAGEMETA_IMPORT_ALLOWED_HOSTS", value_delimiter = ',')]
    import_allowed_hosts: Vec<String>,
    /// Hosts `web-download` refuses (when no host is allowed explicitly), e.g. a metadata
    /// service's `169.254.169.254`.
    #[arg(long, env = "IMAGEMETA_IMPORT_DISALLOWED_HOSTS", value_delimiter = ',')]
    import_disallowed_hosts: Vec<String>,
    /// Ports a `web-download` URL may name (empty: any but the disallowed ones; a URL without
    /// a port always passes).
    #[arg(long, env = "IMAGEMETA_IMPORT_ALLOWED_PORTS", value_delimiter = ',', default_value = "80,443")]
    import_allowed_ports: Vec<String>,
    /// Ports a `web-download` URL may not name (when no port is allowed explicitly).
    #[arg(long, env = "IMAGEMETA_IMPORT_DISALLOWED_PORTS", value_delimiter = ',')]
    import_disallowed_ports: Vec<String>,
    /// Extra properties per image in the image API (`image_property_quota`); -1 unlimited.
    #[arg(long, env = "IMAGEMETA_IMAGE_PROPERTY_QUOTA", default_value_t = 128, allow_negative_numbers = true)]
    image_property_quota: i64,
    /// Tags per image (`image_tag_quota`); -1 unlimited.
    #[arg(long, env = "IMAGEMETA_IMAGE_TAG_QUOTA", default_value_t = 128, allow_negative_numbers = true)]
    image_tag_quota: i64,
    /// How tokens are validated.
    #[arg(long, env = "IMAGEMETA_AUTH", value_enum, default_value = "static")]
    auth: AuthMode,
    /// The tokens file of `--auth static` (JSON: token → user_id, project_id, roles).
    #[arg(long, env = "IMAGEMETA_TOKENS")]
    tokens: Option<PathBuf>,
    /// `--auth keystone`: the identity endpoint, e.g. `http://127.0.0.1:5000`.
    #[arg(long, env = "IMAGEMETA_KEYSTONE_URL")]
    keystone_url: Option<String>,
    /// The service user's name (password authentication).
    #[arg(long, env = "IMAGEMETA_KEYSTONE_USERNAME")]
    keystone_username: Option<String>,
    /// The service user's password.
    #[arg(long, env = "IMAGEMETA_KEYSTONE_PASSWORD", hide_env_values = true)]
    keystone_password: Option<String>,
    /// The service user's project.
    #[arg(long, env = "IMAGEMETA_KEYSTONE_PROJECT", default_value = "service")]
    keystone_project: String,
    #[arg(long, env = "IMAGEMETA_KEYSTONE_USER_DOMAIN", default_value = "Default")]
    keystone_user_domain: String,
    #[arg(long, env = "IMAGEMETA_KEYSTONE_PROJECT_DOMAIN", default_value = "Default")]
    keystone_project_domain: String,
    /// An application credential id (instead of a user name and password).
    #[arg(long, env = "IMAGEMETA_KEYSTONE_APP_CRED_ID")]
    keystone_app_cred_id: Option<String>,
    #[arg(long, env = "IMAGEMETA_KEYSTONE_APP_CRED_SECRET", hide_env_values = true)]
    keystone_app_cred_secret: Option<String>,
    /// PEM certificates trusted for an `https` Keystone, besides the system's roots (a
    /// private CA).
    #[arg(long, env = "IMAGEMETA_KEYSTONE_CAFILE")]
    keystone_cafile: Option<PathBuf>,
    /// Do not check the certificate of an `https` Keystone (the connection stays encrypted,
    /// but anyone on the path can pose as Keystone): for tests only.
    #[arg(long, env = "IMAGEMETA_KEYSTONE_INSECURE", conflicts_with = "keystone_cafile")]
    keystone_insecure: bool,
    /// The `admin` role counts only in Keystone's admin project (`is_admin_project`), as with
    /// a policy of `role:admin and is_admin_project:True`. Off: as in Nova's and Glance's
    /// default policies, it makes an admin in any project.
    #[arg(long, env = "IMAGEMETA_KEYSTONE_ADMIN_PROJECT_ONLY")]
    keystone_admin_project_only: bool,
    /// Seconds a token validation is cached (never past the token's expiry).
    #[arg(long, env = "IMAGEMETA_TOKEN_CACHE_TTL", default_value_t = 300)]
    token_cache_ttl: u64,
    /// Seconds a refused token stays refused without asking Keystone again.
    #[arg(long, env = "IMAGEMETA_TOKEN_NEGATIVE_TTL", default_value_t = 5)]
    token_negative_ttl: u64,
    /// Allow `--auth noauth` on a non-loopback address.
    #[arg(long, env = "IMAGEMETA_FORCE_NOAUTH")]
    force_noauth: bool,
    /// The `metadata_items` quota per image; -1 is unlimited.
    #[arg(long, env = "IMAGEMETA_METADATA_ITEMS", default_value_t = 128, allow_negative_numbers = true,
          value_parser = clap::value_parser!(i64).range(-1..))]
    metadata_items: i64,
    /// Largest accepted request body, in bytes.
    #[arg(long, env = "IMAGEMETA_MAX_REQUEST_BODY_SIZE", default_value_t = 114_688)]
    max_request_body_size: usize,
    /// The identity endpoint named in `WWW-Authenticate` on 401 responses (default: the
    /// Keystone URL, or `http://127.0.0.1:5000`).
    #[arg(long, env = "IMAGEMETA_WWW_AUTHENTICATE_URI")]
    www_authenticate_uri: Option<String>,
    /// The image API endpoint for `alternate` links (default: the request's host, port 9292).
    #[arg(long, env = "IMAGEMETA_IMAGE_URL")]
    image_url: Option<String>,
    /// Bytes kept free on the database's disk, so that deletes still run when it fills up.
    #[arg(long, env = "IMAGEMETA_DISK_RESERVE", default_value_t = 8 << 20)]
    disk_reserve: u64,
    /// Connections each listener holds at most (lowered to fit the open-files limit); one
    /// more is answered 503 and closed.
    #[arg(long, env = "IMAGEMETA_MAX_CONNECTIONS", default_value_t = 4096,
          value_parser = clap::value_parser!(u64).range(1..))]
    max_connections: u64,
    /// Seconds a client has to send a request head, from its first byte (or from connecting).
    #[arg(long, env = "IMAGEMETA_HEADER_TIMEOUT", default_value_t = 30.0, value_parser = seconds)]
    header_timeout: f64,
    /// Seconds a connection may stay idle between requests.
    #[arg(long, env = "IMAGEMETA_KEEPALIVE_TIMEOUT", default_value_t = 75.0, value_parser = seconds)]
    keepalive_timeout: f64,
    /// Seconds a request body may go without sending a byte (a stalled upload is cut and its
    /// image goes back to `queued`).
    #[arg(long, env = "IMAGEMETA_BODY_TIMEOUT", default_value_t = 60.0, value_parser = seconds)]
    body_timeout: f64,
    /// Seconds a response may wait for the client to read.
    #[arg(long, env = "IMAGEMETA_SEND_TIMEOUT", default_value_t = 60.0, value_parser = seconds)]
    send_timeout: f64,
    /// Seconds one request may take, its body included (image data excepted): 503 after.
    #[arg(long, env = "IMAGEMETA_REQUEST_TIMEOUT", default_value_t = 60.0, value_parser = seconds)]
    request_timeout: f64,
    /// Seconds the requests in flight get to finish when the server stops.
    #[arg(long, env = "IMAGEMETA_SHUTDOWN_TIMEOUT", default_value_t = 30.0, value_parser = seconds)]
    shutdown_timeout: f64,
    /// How log lines are written to standard error: `text` (for people) or `json` (one object
    /// per line, for a log pipeline). The level comes from `IMAGEMETA_LOG` (default `info`).
    #[arg(long, env = "IMAGEMETA_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Log each request once, when its answer has been sent: request id, client address,
    /// method, path, route, status, bytes, milliseconds, user and project (never a token).
    #[arg(long, env = "IMAGEMETA_ACCESS_LOG")]
    access_log: bool,
    /// Start on a new (empty) database even though the image data directory holds image data
    /// (which is then kept, not swept).
    #[arg(long, env = "IMAGEMETA_ALLOW_NEW_DATABASE")]
    allow_new_database: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// A duration in seconds: positive, at most a day.
fn seconds(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v > 0.0 && v <= 86_400.0 => Ok(v),
        _ => Err(format!("{s:?} is not a number of seconds between 0 and 86400")),
    }
}

#[derive(Debug, Subcommand)]
enum ImageCommand {
    /// Create an image (or `--count` images) and print it as JSON.
    Create(CreateArgs),
    /// Print every image as a JSON array.
    List {
        #[command(flatten)]
        store: StoreArgs,
    },
}

#[derive(Debug, Args)]
struct CreateArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// The image id (default: a new UUID).
    #[arg(long)]
    id: Option<String>,
    #[arg(long)]
    name: Option<String>,
    /// The owning project id.
    #[arg(long)]
    owner: Option<String>,
    /// public, private, shared or community.
    #[arg(long, default_value = "private", value_parser = parse_visibility)]
    visibility: Visibility,
    /// A Glance status: queued, saving, active, killed, deleted, deactivated, …
    #[arg(long, default_value = "active", value_parser = parse_status)]
    status: ImageStatus,
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(i64).range(0..))]
    min_disk: i64,
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(i64).range(0..))]
    min_ram: i64,
    /// Size in bytes.
    #[arg(long, value_parser = clap::value_parser!(i64).range(0..))]
    size: Option<i64>,
    #[arg(long)]
    protected: bool,
    #[arg(long)]
    os_hidden: bool,
    /// Creation time (RFC 3339); default now.
    #[arg(long, value_parser = parse_time)]
    created_at: Option<OffsetDateTime>,
    /// A property `key=value` (repeatable).
    #[arg(long = "property", value_parser = parse_property)]
    properties: Vec<(String, String)>,
    /// Create this many images (names `NAME-0`…), one second apart, one JSON object per line.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    count: Option<u64>,
}

/// The config file `args` (or `IMAGEMETA_CONFIG`) names.
fn config_path(args: &[std::ffi::OsString]) -> Option<PathBuf> {
    let mut it = args.iter().filter_map(|a| a.to_str());
    while let Some(arg) = it.next() {
        if arg == "--config" {
            return it.next().map(PathBuf::from);
        }
        if let Some(path) = arg.strip_prefix("--config=") {
            return Some(PathBuf::from(path));
        }
    }
    std::env::var_os("IMAGEMETA_CONFIG").map(PathBuf::from)
}

/// The settings of a config file, each as the values a flag would take.
fn read_config(path: &std::path::Path) -> Result<Vec<(String, Vec<String>)>, clap::Error> {
    let fail = |why: String| clap::Error::raw(clap::error::ErrorKind::Io, format!("{}: {why}\n", path.display()));
    let text = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| fail(e.to_string()))?;
    let scalar = |key: &str, v: &toml::Value| -> Result<String, clap::Error> {
        match v {
            toml::Value::String(s) => Ok(s.clone()),
            toml::Value::Integer(n) => Ok(n.to_string()),
            toml::Value::Float(f) => Ok(f.to_string()),
            toml::Value::Boolean(b) => Ok(b.to_string()),
            _ => Err(fail(format!("{key}: a string, number or boolean (or an array of them)"))),
        }
    };
    table
        .iter()
        .map(|(key, value)| {
            let values = match value {
                toml::Value::Array(items) => items.iter().map(|v| scalar(key, v)).collect::<Result<_, _>>()?,
                v => vec![scalar(key, v)?],
            };
            Ok((key.clone(), values))
        })
        .collect()
}

fn parse_visibility(s: &str) -> Result<Visibility, String> {
    Visibility::parse(s).ok_or_else(|| format!("unknown visibility {s:?}"))
}

fn parse_status(s: &str) -> Result<ImageStatus, String> {
    ImageStatus::parse(s).ok_or_else(|| format!("unknown status {s:?}"))
}

fn parse_time(s: &str) -> Result<OffsetDateTime, String> {
    OffsetDateTime::parse(s, &Rfc3339)
        .map_err(|e| format!("{s:?} is not an RFC 3339 time: {e}"))?
        .checked_to_offset(time::UtcOffset::UTC)
        .ok_or_else(|| format!("{s:?} is outside the years 0000 to 9999 in UTC"))
}

fn parse_property(s: &str) -> Result<(String, String), String> {
    let (k, v) = s.split_once('=').ok_or_else(|| format!("{s:?} is not key=value"))?;
    Ok((k.to_owned(), v.to_owned()))
}

impl Cli {
    /// The whole command line's definition (for its documentation).
    pub fn definition() -> clap::Command {
        <Cli as clap::CommandFactory>::command()
    }

    /// The command line of this process, with `serve`'s settings from its config file.
    pub fn load() -> Cli {
        Cli::load_from(std::env::args_os().collect()).unwrap_or_else(|e| e.exit())
    }

    /// Parses `args`. For `serve`, the config file (`--config`, or `IMAGEMETA_CONFIG`) gives
    /// the defaults, so that flags, then the environment, win over it.
    pub fn load_from(args: Vec<std::ffi::OsString>) -> Result<Cli, clap::Error> {
        use clap::{CommandFactory, FromArgMatches};
        let mut command = Cli::command();
        let serving = args.get(1).is_some_and(|a| a == "serve");
        if serving && let Some(path) = config_path(&args) {
            let settings = read_config(&path)?;
            let serve = command.find_subcommand("serve").expect("the serve subcommand");
            let mut known = Vec::new();
            let mut unknown = Vec::new();
            for (key, value) in &settings {
                let flag = key.replace('_', "-");
                match serve.get_arguments().find(|a| a.get_long() == Some(flag.as_str())) {
                    Some(arg) if key != "config" => known.push((arg.get_id().clone(), value.clone())),
                    _ => unknown.push(key.as_str()),
                }
            }
            if !unknown.is_empty() {
                return Err(clap::Error::raw(
                    clap::error::ErrorKind::UnknownArgument,
                    format!(
                        "{}: unknown settings: {} (a key is a `serve` flag's name, with _ for -)\n",
                        path.display(),
                        unknown.join(", ")
                    ),
                ));
            }
            command = command.mut_subcommand("serve", |mut serve| {
                for (id, values) in known {
                    // Leaked: clap keeps defaults as static strings, and this runs once.
                    let values: Vec<&'static str> =
                        values.into_iter().map(|v| &*Box::leak(v.into_boxed_str())).collect();
                    serve = serve.mut_arg(id, |arg| arg.default_values(values));
                }
                serve
            });
        }
        let matches = command.try_get_matches_from(args)?;
        Cli::from_arg_matches(&matches)
    }

    pub fn run(self) -> ExitCode {
        match &self.command {
            Command::Serve(args) => init_logging(args.log_format, args.access_log),
            _ => init_logging(LogFormat::Text, false),
        }
        let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
            Ok(rt) => rt,
            Err(e) => {
                eprintln!("imagemeta: cannot start the runtime: {e}");
                return ExitCode::FAILURE;
            }
        };
        let result = runtime.block_on(async {
            match self.command {
                Command::Serve(args) => serve(args).await,
                Command::Image(ImageCommand::Create(args)) => create(args).await,
                Command::Image(ImageCommand::List { store }) => list(store).await,
                Command::Catalogue(CatalogueCommand::Copy { from, to }) => copy_catalogue(&from, &to).await,
                Command::Data(DataCommand::Move { store, data, from, to }) => move_data(store, data, &from, &to).await,
                Command::Backup { database, to } => backup(&database, to).await,
                Command::Metadefs(MetadefsCommand::Load { store, from }) => load_metadefs(store, from).await,
                Command::Completions { shell } => {
                    use clap::CommandFactory;
                    clap_complete::generate(shell, &mut Cli::command(), "imagemeta", &mut std::io::stdout());
                    Ok(())
                }
                Command::Manpages { dir } => crate::docs::manpages(&dir),
                Command::SampleConfig => {
                    print!("{}", crate::docs::sample_config());
                    Ok(())
                }
            }
        });
        match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("imagemeta: {e:#}");
                ExitCode::FAILURE
            }
        }
    }
}

fn init_logging(format: LogFormat, access_log: bool) {
    use tracing_subscriber::EnvFilter;
    let mut filter = EnvFilter::try_from_env("IMAGEMETA_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    if access_log {
        // Asked for by its own flag: written whatever the level of the rest.
        filter = filter.add_directive("imagemeta::access=info".parse().expect("a valid directive"));
        crate::api::access::enable_access_log();
    }
    let result = match format {
        LogFormat::Text => {
            // Colours only for a terminal: a log file gets plain text (and no escape codes).
            let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
            tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi).with_writer(std::io::stderr).try_init()
        }
        LogFormat::Json => tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .try_init(),
    };
    if result.is_ok() && (access_log || format == LogFormat::Json) {
        crate::api::access::enable_request_spans();
    }
}

fn keystone_config(args: &ServeArgs) -> anyhow::Result<Option<KeystoneConfig>> {
    let Some(url) = args.keystone_url.clone() else {
        return Ok(None);
    };
    let credentials = match (&args.keystone_app_cred_id, &args.keystone_app_cred_secret) {
        (Some(id), Some(secret)) => {
            ServiceCredentials::ApplicationCredential { id: id.clone(), secret: secret.clone() }
        }
        _ => ServiceCredentials::Password {
            username: args
                .keystone_username
                .clone()
                .context("--keystone-username (or an application credential) is required")?,
            password: args.keystone_password.clone().context("--keystone-password is required")?,
            user_domain: args.keystone_user_domain.clone(),
            project: args.keystone_project.clone(),
            project_domain: args.keystone_project_domain.clone(),
        },
    };
    Ok(Some(KeystoneConfig {
        url,
        credentials,
        cache_ttl: Duration::from_secs(args.token_cache_ttl),
        negative_ttl: Duration::from_secs(args.token_negative_ttl),
        cache_size: 100_000,
        timeout: Duration::from_secs(10),
        tls: match (&args.keystone_cafile, args.keystone_insecure) {
            (_, true) => KeystoneTls::Insecure,
            (Some(path), false) => KeystoneTls::ExtraRoots(
                std::fs::read(path).with_context(|| format!("--keystone-cafile {}", path.display()))?,
            ),
            (None, false) => KeystoneTls::SystemRoots,
        },
        admin_project_only: args.keystone_admin_project_only,
    }))
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let keystone = if args.auth == AuthMode::Keystone { keystone_config(&args)? } else { None };
    let import = import_settings(&args)?;
    if import.offers(ImportMethod::GlanceDownload) && args.auth != AuthMode::Keystone {
        anyhow::bail!(
            "--import-methods: glance-download needs --auth keystone (it finds the other Glance in the caller's \
             service catalog)"
        );
    }
    let www_authenticate_uri = args
        .www_authenticate_uri
        .clone()
        .or_else(|| keystone.as_ref().map(|k| k.url.trim_end_matches('/').to_owned()))
        .unwrap_or_else(|| "http://127.0.0.1:5000".to_owned());
    let secs = Duration::from_secs_f64;
    let limits = Limits {
        max_connections: server::raise_fd_limit_and_cap(usize::try_from(args.max_connections).unwrap_or(usize::MAX)),
        header_timeout: secs(args.header_timeout),
        keepalive_timeout: secs(args.keepalive_timeout),
        body_timeout: secs(args.body_timeout),
        send_timeout: secs(args.send_timeout),
        shutdown_timeout: secs(args.shutdown_timeout),
    };
    let config = ServeConfig {
        compute_listen: args.compute_listen,
        image_listen: args.image_listen,
        admin_listen: args.admin_listen,
        image_data_dir: args.data.image_data_dir,
        image_cache: args.image_cache_dir.map(|dir| (dir, args.image_cache_max_size)),
        image_stores: args.data.image_stores,
        default_image_store: args.data.default_image_store,
        database: DatabaseUrl::parse(&args.store.database).map_err(anyhow::Error::msg)?,
        store: StoreOptions { synchronous: args.store.synchronous, disk_reserve: args.disk_reserve },
        auth: args.auth,
        tokens: args.tokens,
        keystone,
        force_noauth: args.force_noauth,
        allow_new_database: args.allow_new_database,
        limits,
        settings: Settings {
            metadata_quota: MetadataQuota::from_config(args.metadata_items),
            max_request_body_size: args.max_request_body_size,
            www_authenticate_uri,
            image_url: args.image_url.map(|u| u.trim_end_matches('/').to_owned()),
            image_port: args.image_listen.port(),
            image_quotas: ImageQuotas {
                properties: usize::try_from(args.image_property_quota).ok(),
                tags: usize::try_from(args.image_tag_quota).ok(),
            },
            image_size_cap: args.image_size_cap,
            request_timeout: secs(args.request_timeout),
            import,
        },
    };
    let app = Application::build(config).await?;
    let (compute, image, admin) = (app.compute_addr()?, app.image_addr()?, app.admin_addr()?);
    // The only lines on stdout: scripts and tests wait for them.
    println!("imagemeta: admin listening on http://{admin}");
    println!("imagemeta: compute API listening on http://{compute}");
    println!("imagemeta: image API listening on http://{image}");
    tracing::info!(%compute, %image, "listening");
    app.run_until(shutdown_signal()).await?;
    Ok(())
}

/// The import methods and the `web-download` URL filter of `args` (an empty item is none).
fn import_settings(args: &ServeArgs) -> anyhow::Result<ImportSettings> {
    let list = |v: &[String]| -> Vec<String> {
        v.iter().map(|s| s.trim().to_ascii_lowercase()).filter(|s| !s.is_empty()).collect()
    };
    let ports = |flag: &str, v: &[String]| -> anyhow::Result<Vec<u16>> {
        list(v)
            .iter()
            .map(|p| match p.parse::<u16>() {
                Ok(n) if n > 0 => Ok(n),
                _ => anyhow::bail!("--{flag}: {p:?} is not a port (1 to 65535)"),
            })
            .collect()
    };
    let methods = list(&args.import_methods)
        .iter()
        .map(|m| {
            ImportMethod::parse(m).with_context(|| {
                format!(
                    "--import-methods: unknown method {m:?} (imagemeta runs glance-direct, web-download, copy-image and glance-download)"
                )
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(ImportSettings {
        methods,
        filter: UriFilter {
            allowed_schemes: list(&args.import_allowed_schemes),
            disallowed_schemes: list(&args.import_disallowed_schemes),
            allowed_hosts: list(&args.import_allowed_hosts),
            disallowed_hosts: list(&args.import_disallowed_hosts),
            allowed_ports: ports("import-allowed-ports", &args.import_allowed_ports)?,
            disallowed_ports: ports("import-disallowed-ports", &args.import_disallowed_ports)?,
        },
    })
}

async fn create(args: CreateArgs) -> anyhow::Result<()> {
    let store = args.store.open().await?;
    let start = args.created_at.unwrap_or_else(now);
    let count = args.count.unwrap_or(1);
    // Seeding many images: batches of 10,000 per transaction.
    let mut n = 0;
    while n < count {
        let batch: Vec<Image> = (n..count.min(n + 10_000)).map(|i| seed_image(&args, start, i)).collect();
        n += batch.len() as u64;
        let images = store.insert_images(batch).await.with_context(|| "cannot create the images")?;
        let mut out = std::io::stdout().lock();
        for image in &images {
            writeln!(out, "{}", serde_json::to_string(&glance_shape(image))?)?;
        }
    }
    Ok(())
}

/// The `n`th image of an `image create` command.
fn seed_image(args: &CreateArgs, start: OffsetDateTime, n: u64) -> Image {
    let id = match (&args.id, args.count) {
        (Some(id), None) => id.clone(),
        _ => uuid::Uuid::new_v4().to_string(),
    };
    let created = start + time::Duration::seconds(n as i64);
    let mut image = Image::new(id, created);
    image.name = match (&args.name, args.count) {
        (Some(name), Some(_)) => Some(format!("{name}-{n}")),
        (name, _) => name.clone(),
    };
    image.owner = args.owner.clone();
    image.visibility = args.visibility;
    image.status = args.status;
    image.min_disk = args.min_disk;
    image.min_ram = args.min_ram;
    image.size = args.size;
    image.protected = args.protected;
    image.os_hidden = args.os_hidden;
    for (k, v) in &args.properties {
        image.properties.set(k.clone(), Some(v.clone()));
    }
    image
}

async fn copy_catalogue(from: &str, to: &str) -> anyhow::Result<()> {
    let open = |url: &str| {
        let url = url.to_owned();
        async move {
            let parsed = DatabaseUrl::parse(&url).map_err(anyhow::Error::msg)?;
            store::open(&parsed, StoreOptions::default()).await.with_context(|| format!("cannot open {parsed}"))
        }
    };
    let (source, target) = (open(from).await?, open(to).await?);
    let copied = crate::copy::catalogue(&source, &target, |c| {
        tracing::info!(images = c.images, deleted_ids = c.deleted_ids, "copying");
    })
    .await;
    source.close().await;
    target.close().await;
    let copied = copied?;
    println!("{}", json!({"images": copied.images, "deleted_ids": copied.deleted_ids}));
    Ok(())
}

async fn load_metadefs(store: StoreArgs, from: Option<PathBuf>) -> anyhow::Result<()> {
    let files = match from {
        Some(dir) => crate::metadefs::read_dir(&dir)?,
        None => crate::metadefs::BUNDLED.iter().map(|(n, t)| ((*n).to_owned(), (*t).to_owned())).collect(),
    };
    let store = store.open().await?;
    let loaded = crate::metadefs::load(&*store, &files).await;
    store.close().await;
    let loaded = loaded?;
    println!("{}", json!({"loaded": loaded.loaded, "skipped": loaded.skipped}));
    Ok(())
}

async fn backup(database: &str, to: PathBuf) -> anyhow::Result<()> {
    let path = match DatabaseUrl::parse(database).map_err(anyhow::Error::msg)? {
        DatabaseUrl::Sqlite(path) => path,
        DatabaseUrl::Postgres(_) => anyhow::bail!(
            "a PostgreSQL catalogue is backed up with PostgreSQL's own tools: \
             pg_dump --format=custom (a consistent snapshot while servers write), or base backups \
             with WAL archiving for point-in-time recovery; see the README"
        ),
    };
    let started = std::time::Instant::now();
    let copied = tokio::task::spawn_blocking(move || crate::backup::sqlite(&path, &to)).await??;
    println!(
        "{}",
        json!({
            "images": copied.images,
            "pages": copied.pages,
            "bytes": copied.bytes,
            "seconds": (started.elapsed().as_secs_f64() * 1000.0).round() / 1000.0,
        })
    );
    Ok(())
}

async fn move_data(store: StoreArgs, data: DataArgs, from: &str, to: &str) -> anyhow::Result<()> {
    let (catalogue, data) = (store.open().await?, data.open().await?);
    let moved = crate::copy::data(&catalogue, &data, from, to, |m| {
        tracing::info!(moved = m.moved, bytes = m.bytes, "moving");
    })
    .await;
    catalogue.close().await;
    let moved = moved?;
    println!("{}", json!({"moved": moved.moved, "bytes": moved.bytes, "skipped": moved.skipped}));
    Ok(())
}

async fn list(store: StoreArgs) -> anyhow::Result<()> {
    let store = store.open().await?;
    let mut all = Vec::new();
    let mut query = ListQuery { limit: 1000, detail: true, ..ListQuery::default() };
    loop {
        let page = store.list_images(Caller::Operator, &query).await?;
        let done = page.len() < query.limit;
        query.marker = page.last().map(|i| i.id.clone());
        all.extend(page.iter().map(glance_shape));
        if done {
            break;
        }
    }
    println!("{}", serde_json::to_string_pretty(&Value::Array(all))?);
    Ok(())
}

/// The image as the image API shows it (`GET /v2/images/{id}`): one view, not a copy.
fn glance_shape(image: &Image) -> Value {
    crate::api::image_v2::views::image(image, false)
}
