//! What a running sandbox is: where its servers listen and where its secrets are, and the
//! variables and config section that reach it.

use super::*;

/// Everything needed to reach a running sandbox. Stored as `sandbox.json` in its directory.
/// Holds paths to secrets, never the secrets.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SandboxInfo {
    pub name: String,
    pub dir: PathBuf,
    pub scale: Scale,
    pub seed: u64,
    pub components: Vec<String>,
    pub created: String,
    pub postgres: PgInfo,
    pub s3: S3Info,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PgInfo {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password_file: PathBuf,
    /// A `.pgpass` file for `PGPASSFILE`.
    pub passfile: PathBuf,
    pub bindir: PathBuf,
    /// With `--pg-tls`: the server's self-signed certificate; clients use verify-full.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// With `--pg-client-certs`: the certificate and key clients present.
    #[serde(default)]
    pub client_cert: Option<(PathBuf, PathBuf)>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct S3Info {
    pub endpoint: String,
    pub region: String,
    pub access_key_file: PathBuf,
    pub secret_key_file: PathBuf,
    /// Pid of our S3 server; `None` when the sandbox uses an external endpoint.
    pub pid: Option<u32>,
    /// Appended to every bucket name (`stt-async-icp-<suffix>`), as newer installations do.
    pub bucket_suffix: Option<String>,
    /// Buckets as named on the server, by their profile name.
    pub buckets: Vec<(String, String)>,
    /// With `--tls`: the server's self-signed certificate, for `s3.ca_file`.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// How our server behaves where real servers differ.
    #[serde(default)]
    pub behaviour: s3server::Behaviour,
}

impl SandboxInfo {
    /// Where a test writes fault rules for this sandbox's S3 server (see [`s3server::faults`]).
    pub fn faults_file(&self) -> PathBuf {
        self.dir.join("faults.json")
    }

    pub fn pg_config(&self) -> Result<PgConfig> {
        let pw = read_secret_file(&self.postgres.password_file)?;
        let mut cfg = PgConfig::new(&self.postgres.host, self.postgres.port, &self.postgres.user, Some(pw));
        if let Some(ca) = &self.postgres.ca_file {
            cfg.sslmode = speechvault::pg::SslMode::VerifyFull;
            cfg.ca_file = Some(ca.clone());
        }
        if let Some((cert_file, key_file)) = &self.postgres.client_cert {
            cfg.client_cert =
                Some(speechvault::tls::ClientCert { cert_file: cert_file.clone(), key_file: key_file.clone() });
        }
        Ok(cfg)
    }

    pub fn s3_config(&self) -> Result<S3Config> {
        let ak = read_secret_file(&self.s3.access_key_file)?;
        let sk = read_secret_file(&self.s3.secret_key_file)?;
        let mut cfg = S3Config::new(&self.s3.endpoint, ak.expose(), sk);
        cfg.region = self.s3.region.clone();
        cfg.ca_file = self.s3.ca_file.clone();
        Ok(cfg)
    }

    pub fn object_store(&self) -> Result<ObjectStore> {
        Ok(ObjectStore::new(self.s3_config()?)?)
    }

    /// This sandbox as a speechvault installation.
    pub fn installation(&self) -> Result<speechvault::model::config::Installation> {
        Ok(speechvault::model::config::Installation {
            name: self.name.clone(),
            s3: self.s3_config()?,
            postgres: self.pg_config()?,
            buckets: self.s3.buckets.iter().cloned().collect(),
            bucket_suffix: self.s3.bucket_suffix.clone(),
            pg_connections: None,
        })
    }

    /// The name a profile bucket has on this sandbox's server.
    pub fn bucket(&self, profile_name: &str) -> String {
        match &self.s3.bucket_suffix {
            Some(s) => format!("{profile_name}-{s}"),
            None => profile_name.to_string(),
        }
    }

    /// Databases of the seeded components.
    pub fn databases(&self) -> Vec<String> {
        let profile = Profile::builtin();
        let mut dbs: Vec<String> = self
            .components
            .iter()
            .filter_map(|c| profile.components.get(c))
            .flat_map(|c| c.databases.clone())
            .collect();
        dbs.sort();
        dbs
    }

    /// `export` lines for the standard PostgreSQL and AWS variables. The PostgreSQL password
    /// goes through `PGPASSFILE`; the S3 secret key has no file-based standard variable and is
    /// printed, as `sandbox env` exists to hand out these throwaway credentials.
    pub fn env_exports(&self) -> Result<String> {
        let ak = read_secret_file(&self.s3.access_key_file)?;
        let sk = read_secret_file(&self.s3.secret_key_file)?;
        let q = |s: &str| format!("'{}'", s.replace('\'', "'\\''"));
        let mut extra: Vec<String> = Vec::new();
        if let Some(p) = &self.s3.ca_file {
            extra.push(format!("export AWS_CA_BUNDLE={}\n", q(&p.display().to_string())));
        }
        if let Some(p) = &self.postgres.ca_file {
            extra.push("export PGSSLMODE='verify-full'\n".to_string());
            extra.push(format!("export PGSSLROOTCERT={}\n", q(&p.display().to_string())));
        }
        if let Some((cert, key)) = &self.postgres.client_cert {
            extra.push(format!("export PGSSLCERT={}\n", q(&cert.display().to_string())));
            extra.push(format!("export PGSSLKEY={}\n", q(&key.display().to_string())));
        }
        Ok([
            ("PGHOST", self.postgres.host.clone()),
            ("PGPORT", self.postgres.port.to_string()),
            ("PGUSER", self.postgres.user.clone()),
            ("PGPASSFILE", self.postgres.passfile.display().to_string()),
            ("PGDATABASE", "postgres".to_string()),
            ("AWS_ENDPOINT_URL", self.s3.endpoint.clone()),
            ("AWS_REGION", self.s3.region.clone()),
            ("AWS_DEFAULT_REGION", self.s3.region.clone()),
            ("AWS_ACCESS_KEY_ID", ak.expose().to_string()),
            ("AWS_SECRET_ACCESS_KEY", sk.expose().to_string()),
        ]
        .iter()
        .map(|(k, v)| format!("export {k}={}\n", q(v)))
        .chain(extra)
        .collect())
    }

    /// A `[installations.<name>]` section for speechvault's config, with secrets by file.
    pub fn config_section(&self) -> String {
        let mut s = format!(
            "[installations.{name}]\n\
             s3.endpoint = {endpoint:?}\n\
             s3.region = {region:?}\n\
             s3.access_key_file = {ak:?}\n\
             s3.secret_key_file = {sk:?}\n\
             postgres.host = {host:?}\n\
             postgres.port = {port}\n\
             postgres.user = {user:?}\n\
             postgres.password_file = {pw:?}\n{pg_tls}",
            name = self.name,
            endpoint = self.s3.endpoint,
            region = self.s3.region,
            ak = self.s3.access_key_file.display().to_string(),
            sk = self.s3.secret_key_file.display().to_string(),
            host = self.postgres.host,
            port = self.postgres.port,
            user = self.postgres.user,
            pw = self.postgres.password_file.display().to_string(),
            pg_tls = match &self.postgres.ca_file {
                Some(ca) =>
                    format!("postgres.sslmode = \"verify-full\"\npostgres.ca_file = {:?}\n", ca.display().to_string()),
                None => String::new(),
            },
        );
        if let Some((cert, key)) = &self.postgres.client_cert {
            s.push_str(&format!(
                "postgres.cert_file = {:?}\npostgres.key_file = {:?}\n",
                cert.display().to_string(),
                key.display().to_string()
            ));
        }
        if let Some(ca) = &self.s3.ca_file {
            s.push_str(&format!("s3.ca_file = {:?}\n", ca.display().to_string()));
        }
        if let Some(suffix) = &self.s3.bucket_suffix {
            s.push_str(&format!("bucket_suffix = {suffix:?}\n"));
        }
        s
    }
}
