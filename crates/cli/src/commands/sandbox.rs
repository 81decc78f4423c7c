//! `speechvault sandbox ...`: local Speech installations for the demo, tests and benchmarks.

use std::io::Write as _;
use std::path::PathBuf;

use clap::Subcommand;
use speechvault_sandbox as sandbox;

use serde_json::json;
use speechvault::Error;

use crate::outcome::Outcome;
use crate::render::{Lines, line};

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start a Speech installation on 127.0.0.1 and seed it with deterministic data.
    ///
    /// Creates a private PostgreSQL cluster (password logins only) with the databases
    /// stt-customization, tts-customization and stt-async, and an S3 server with the buckets
    /// speech-service-base-models, stt-customization-icp and stt-async-icp, then reports what
    /// was seeded. On failure nothing is left behind.
    Up {
        /// Name to refer to it by (lower-case letters, digits, - and _).
        #[arg(long, default_value = "a")]
        name: String,
        /// Directory for its data (new or empty). Default: <sandbox home>/<name>; the sandbox
        /// home is $SPEECHVAULT_SANDBOX_HOME, else /var/tmp/speechvault-sandboxes for root or
        /// ~/.local/state/speechvault/sandboxes.
        #[arg(long)]
        dir: Option<PathBuf>,
        /// tiny (seconds), small (CI), medium (benchmarks: >2 GB, >25,000 objects).
        #[arg(long, default_value = "tiny")]
        scale: String,
        /// Seed for the generated data; the same seed gives the same data.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Components to install (comma-separated): sttCustomization, ttsCustomization,
        /// sttAsync, baseModels. Default: all.
        #[arg(long, value_delimiter = ',')]
        components: Vec<String>,
        /// PostgreSQL port (default: a free one).
        #[arg(long)]
        pg_port: Option<u16>,
        /// PostgreSQL superuser name.
        #[arg(long, default_value = "postgres")]
        pg_user: String,
        /// S3 port (default: a free one).
        #[arg(long)]
        s3_port: Option<u16>,
        /// Put the buckets on this S3 endpoint instead of starting a server; keys come from
        /// AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY.
        #[arg(long)]
        s3_endpoint: Option<String>,
        /// Append -SUFFIX to every bucket name, as newer (NooBaa) installations do.
        #[arg(long)]
        bucket_suffix: Option<String>,
        /// Start the servers without databases, buckets or data (a restore target).
        #[arg(long)]
        empty: bool,
        /// Serve S3 over https with a self-signed certificate (its PEM is the sandbox's CA
        /// file: `sandbox env --toml` names it).
        #[arg(long)]
        tls: bool,
        /// PostgreSQL accepts TLS connections only (self-signed; clients use verify-full).
        #[arg(long)]
        pg_tls: bool,
        /// PostgreSQL also requires client certificates (implies --pg-tls); the sandbox's
        /// config section names the certificate and key.
        #[arg(long)]
        pg_client_certs: bool,
        #[command(flatten)]
        behaviour: BehaviourArgs,
    },
    /// Stop a sandbox and delete all of its data (also a crashed or half-started one).
    Down { name: String },
    /// Show the sandboxes and whether their servers run.
    List,
    /// Print `export` lines (PG*, AWS_*) for a sandbox: eval "$(speechvault sandbox env a)".
    Env {
        name: String,
        /// Print a speechvault config section ([installations.NAME]) instead.
        #[arg(long)]
        toml: bool,
    },
    /// Add data to a running sandbox for benchmarks and scaling runs: many small objects
    /// (alternately JSON and audio, under bulk/SET/ in stt-async-icp) and/or one large object
    /// (in speech-service-base-models).
    Add {
        name: String,
        /// Small objects to add.
        #[arg(long, default_value_t = 0)]
        objects: u64,
        /// Largest small object (sizes spread from 1 byte up to this).
        #[arg(long, default_value = "8KiB", value_parser = speechvault::support::units::parse_bytes)]
        max_size: u64,
        /// Name of this set of objects (a second set with another name adds more).
        #[arg(long, default_value = "a")]
        set: String,
        /// Also add one object of this size (e.g. 5GiB), uploaded in parts.
        #[arg(long, value_parser = speechvault::support::units::parse_bytes)]
        large: Option<u64>,
        /// Seed for the generated data.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Uploads at a time.
        #[arg(long, default_value_t = 32)]
        parallel: usize,
    },
    /// Change a share of a running sandbox, as a day of use would: rewrite every (100/PERCENT)th
    /// object of every bucket (new content, same key, size, type and metadata) and update about
    /// PERCENT% of the rows of the seeded tables.
    Churn {
        name: String,
        #[arg(long, default_value_t = 1)]
        percent: u32,
        /// Seed for the new content (another seed changes the same objects again).
        #[arg(long, default_value_t = 2)]
        seed: u64,
        #[arg(long, default_value_t = 16)]
        parallel: usize,
    },
    /// Read every object of a sandbox and discard it, PARALLEL GETs at a time: the read
    /// ceiling the benchmark compares backups with.
    Read {
        name: String,
        #[arg(long, default_value_t = 32)]
        parallel: usize,
    },
    /// Run the sandbox's S3 server in the foreground (started by `up`).
    #[command(hide = true)]
    ServeS3 {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        port: u16,
        #[command(flatten)]
        behaviour: BehaviourArgs,
    },
}

/// How our S3 server behaves where real servers differ.
#[derive(Debug, clap::Args)]
pub struct BehaviourArgs {
    /// Behave like this server: garage (default), minio (`+` for spaces in listings, content
    /// types guessed from extensions), aws (`+` in listings, binary/octet-stream) or rgw
    /// (`%2F` for slashes in listed keys, no ETag from CompleteMultipartUpload).
    #[arg(long, value_name = "SERVER")]
    like: Option<String>,
    /// Listing key encoding with encoding-type=url: percent (%20), plus (+ for a space) or
    /// percent-slash (also %2F for a slash in keys).
    #[arg(long, value_name = "percent|plus|percent-slash")]
    listing_encoding: Option<String>,
    /// Content type of objects stored without one: none, by-extension, or a type.
    #[arg(long, value_name = "TYPE")]
    default_content_type: Option<String>,
    /// Serve GET and HEAD whatever If-Match says (some servers do).
    #[arg(long)]
    ignore_if_match: bool,
    /// Answer ranged GETs with the whole object (some servers do).
    #[arg(long)]
    ignore_range: bool,
    /// Accept tags and keep none (as Garage does).
    #[arg(long)]
    drop_tags: bool,
    /// Answer CompleteMultipartUpload without the object's ETag (as Ceph RGW does).
    #[arg(long)]
    no_complete_etag: bool,
}

impl BehaviourArgs {
    fn resolve(self) -> Result<sandbox::s3server::Behaviour, Error> {
        use sandbox::s3server::{Behaviour, ListingEncoding};
        let mut b = match self.like.as_deref() {
            None => Behaviour::default(),
            Some(name) => Behaviour::preset(name)
                .ok_or_else(|| Error::bad_input(format!("--like {name}: use garage, minio, aws or rgw")))?,
        };
        match self.listing_encoding.as_deref() {
            None => {}
            Some("percent") => b.listing_encoding = ListingEncoding::Percent,
            Some("plus") => b.listing_encoding = ListingEncoding::Plus,
            Some("percent-slash") => b.listing_encoding = ListingEncoding::PercentSlash,
            Some(other) => {
                return Err(Error::bad_input(format!(
                    "--listing-encoding {other}: use percent, plus or percent-slash"
                )));
            }
        }
        if let Some(t) = self.default_content_type {
            b.default_content_type = t.parse().map_err(Error::bad_input)?;
        }
        b.ignore_if_match |= self.ignore_if_match;
        b.ignore_range |= self.ignore_range;
        b.drop_tags |= self.drop_tags;
        b.no_complete_etag |= self.no_complete_etag;
        Ok(b)
    }
}

pub async fn run(cmd: Command, json: bool) -> Result<Outcome, Error> {
    Ok(Outcome::Sandbox(match cmd {
        Command::Up {
            name,
            dir,
            scale,
            seed,
            components,
            pg_port,
            pg_user,
            s3_port,
            s3_endpoint,
            bucket_suffix,
            empty,
            tls,
            pg_tls,
            pg_client_certs,
            behaviour,
        } => {
            let exe = std::env::current_exe()?;
            let mut opts = sandbox::UpOptions::new(name, exe);
            opts.dir = dir;
            opts.scale = scale.parse()?;
            opts.seed = seed;
            opts.components = components;
            opts.pg_port = pg_port;
            opts.pg_user = pg_user;
            opts.s3_port = s3_port;
            opts.bucket_suffix = bucket_suffix;
            opts.seed_data = !empty;
            opts.tls = tls;
            opts.pg_tls = pg_tls;
            opts.pg_client_certs = pg_client_certs;
            opts.s3_behaviour = behaviour.resolve()?;
            if let Some(endpoint) = s3_endpoint {
                let access_key = std::env::var("AWS_ACCESS_KEY_ID").map_err(|_| {
                    Error::bad_input(
                        "--s3-endpoint needs AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the environment",
                    )
                })?;
                let secret_key = std::env::var("AWS_SECRET_ACCESS_KEY")
                    .map_err(|_| Error::bad_input("--s3-endpoint needs AWS_SECRET_ACCESS_KEY in the environment"))?;
                opts.external_s3 = Some(sandbox::ExternalS3 {
                    endpoint,
                    region: std::env::var("AWS_REGION").unwrap_or_else(|_| "us-east-1".into()),
                    access_key,
                    secret_key: speechvault::support::secret::Secret::new(secret_key),
                });
            }
            if !json {
                if opts.seed_data {
                    let _ = writeln!(
                        std::io::stderr(),
                        "starting sandbox {} ({} scale, seed {})...",
                        opts.name,
                        opts.scale,
                        opts.seed
                    );
                } else {
                    let _ = writeln!(std::io::stderr(), "starting empty sandbox {}...", opts.name);
                }
            }
            let started = std::time::Instant::now();
            let (info, report) = sandbox::up(&opts).await?;
            SandboxOutcome::Up { info: Box::new(info), report, seconds: started.elapsed().as_secs_f64() }
        }
        Command::Down { name } => {
            sandbox::down(&name).await?;
            SandboxOutcome::Down { name }
        }
        Command::List => SandboxOutcome::List { entries: sandbox::list()? },
        Command::Env { name, toml } => {
            let info = sandbox::load(&name)?;
            if json {
                SandboxOutcome::Env { info: Box::new(info) }
            } else if toml {
                return Ok(Outcome::Text(info.config_section()));
            } else {
                return Ok(Outcome::Text(info.env_exports()?));
            }
        }
        Command::Add { name, objects, max_size, set, large, seed, parallel } => {
            let info = sandbox::load(&name)?;
            let started = std::time::Instant::now();
            let max_size = usize::try_from(max_size).map_err(|_| Error::bad_input("--max-size is too large"))?;
            let bytes = sandbox::bulk::add_objects(&info, seed, &set, objects, max_size, parallel).await?;
            let large = match large {
                Some(size) => Some(sandbox::bulk::add_large_object(&info, seed, size).await?),
                None => None,
            };
            SandboxOutcome::Add { name, objects, bytes, large, seconds: started.elapsed().as_secs_f64() }
        }
        Command::Churn { name, percent, seed, parallel } => {
            let info = sandbox::load(&name)?;
            let churn = sandbox::bulk::churn(&info, seed, percent, parallel).await?;
            SandboxOutcome::Churn { name, churn }
        }
        Command::Read { name, parallel } => {
            let info = sandbox::load(&name)?;
            let read = sandbox::bulk::read_all(&info, parallel).await?;
            SandboxOutcome::Read { name, read }
        }
        Command::ServeS3 { dir, port, behaviour } => {
            sandbox::serve_s3(&dir, port, behaviour.resolve()?).await?;
            return Ok(Outcome::Nothing);
        }
    }))
}

/// What a sandbox command did.
pub enum SandboxOutcome {
    Up { info: Box<sandbox::SandboxInfo>, report: sandbox::seed::SeedReport, seconds: f64 },
    Down { name: String },
    List { entries: Vec<sandbox::ListEntry> },
    Env { info: Box<sandbox::SandboxInfo> },
    Add { name: String, objects: u64, bytes: u64, large: Option<String>, seconds: f64 },
    Churn { name: String, churn: sandbox::bulk::ChurnReport },
    Read { name: String, read: sandbox::bulk::ReadReport },
}

impl SandboxOutcome {
    pub fn json(&self) -> Result<serde_json::Value, Error> {
        Ok(match self {
            Self::Up { info, report, .. } => json!({ "sandbox": info, "seeded": report }),
            Self::Down { name } => json!({ "removed": name }),
            Self::List { entries } => json!({ "sandboxes": entries }),
            Self::Env { info } => json!({ "sandbox": info }),
            Self::Add { name, objects, bytes, large, seconds } => {
                json!({ "sandbox": name, "objects": objects, "bytes": bytes, "large": large, "seconds": seconds })
            }
            Self::Churn { name, churn } => json!({ "sandbox": name, "churn": churn }),
            Self::Read { name, read } => json!({ "sandbox": name, "read": read }),
        })
    }

    pub fn text(&self, lines: &mut Lines) {
        match self {
            Self::Up { info, report, seconds } => {
                line!(lines, "sandbox {} is up in {seconds:.1}s ({})", info.name, info.dir.display());
                line!(lines, "  PostgreSQL  127.0.0.1:{} user {}", info.postgres.port, info.postgres.user);
                line!(lines, "  S3          {}", info.s3.endpoint);
                line!(lines, "seeded (seed {}, {} scale):", report.seed, report.scale);
                for (db, tables) in &report.databases {
                    let rows: i64 = tables.values().sum();
                    line!(lines, "  database {db}: {} tables, {rows} rows", tables.len());
                }
                for (b, r) in &report.buckets {
                    line!(lines, "  bucket {b}: {} objects, {} bytes", r.objects, r.bytes);
                }
                for i in &report.instances {
                    line!(lines, "  service instance {} ({})", i.id, i.note);
                }
                if let Some(first) = report.edge_case_keys.first() {
                    line!(
                        lines,
                        "  {} keys a filesystem copy cannot hold, e.g. {first:?}",
                        report.edge_case_keys.len()
                    );
                }
                line!(lines, "next: eval \"$(speechvault sandbox env {})\"", info.name);
            }
            Self::Down { name } => line!(lines, "sandbox {name} stopped and removed"),
            Self::List { entries } => {
                if entries.is_empty() {
                    line!(lines, "no sandboxes (home {})", sandbox::home().display());
                    return;
                }
                line!(lines, "{:<16} {:<9} {:<8} {:<28} {:<8} DIR", "NAME", "STATE", "PG PORT", "S3 ENDPOINT", "SCALE");
                for e in entries {
                    line!(
                        lines,
                        "{:<16} {:<9} {:<8} {:<28} {:<8} {}",
                        e.name,
                        e.state,
                        e.postgres_port.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
                        e.s3_endpoint.clone().unwrap_or_else(|| "-".into()),
                        e.scale.map(|s| s.to_string()).unwrap_or_else(|| "-".into()),
                        e.dir.display()
                    );
                }
            }
            Self::Env { .. } => {}
            Self::Add { name, objects, bytes, large, seconds } => {
                line!(lines, "added {objects} objects ({bytes} bytes) to {name} in {seconds:.1}s");
                if let Some(k) = large {
                    line!(lines, "added {k}");
                }
            }
            Self::Churn { name, churn: r } => line!(
                lines,
                "rewrote {} objects ({} bytes) and updated {} rows in {name}",
                r.objects_rewritten,
                r.bytes_rewritten,
                r.rows_updated
            ),
            Self::Read { name, read: r } => line!(
                lines,
                "read {} objects ({} bytes) from {name} in {:.1}s: {:.1} MB/s",
                r.objects,
                r.bytes,
                r.seconds,
                r.bytes as f64 / 1e6 / r.seconds.max(1e-9)
            ),
        }
    }
}
