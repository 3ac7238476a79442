//! `tessera db provision`: one PostgreSQL login role per service, owner of that service's schema and of
//! nothing else, so a compromised fragment's connection is refused every other schema ("permission
//! denied for schema …") — the shell's users and signing keys included.
//!
//! Run once per deployment (and again to issue new passwords) with a role that may create roles, for
//! example the server's superuser. For each service it creates or updates the role `<prefix><service>`
//! (login, no superuser, no role or database creation) with a fresh random password, creates the
//! schema owned by it, or hands an existing schema and everything in it (tables, views, sequences,
//! functions, the streaming relay's publication) to it, and removes every other role's access to that
//! schema. The result is one URL per service (`TESSERA_POSTGRES_URLS__<SERVICE>`), printed or written
//! owner-only; `TESSERA_POSTGRES_URL` stays the simple single-role setting of a single-team install.
//!
//! `--replication` lets the roles stream their own outbox (`TESSERA_OUTBOX_RELAY=cdc`): the
//! `REPLICATION` attribute and `CREATE` on the database (a publication needs it). That is a real
//! widening — a replication connection can decode every table's changes with an output plugin other
//! than `pgoutput` — so it is asked for, never the default.

use std::path::{Path, PathBuf};

use sqlx::any::AnyPoolOptions;
use sqlx::{AnyPool, Executor};
use tessera_fragment::db::StoreSettings;
use tessera_fragment::fs::{create_private_dir, create_private_file};

/// What `provision` made for one service.
pub struct Provisioned {
    pub service: String,
    pub role: String,
    /// The admin URL with this role and its password: what the service connects with.
    pub url: String,
}

impl std::fmt::Debug for Provisioned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provisioned").field("service", &self.service).field("role", &self.role).finish_non_exhaustive()
    }
}

impl Provisioned {
    /// The setting that gives the service its URL.
    pub fn variable(&self) -> String {
        format!("TESSERA_POSTGRES_URLS__{}", self.service.to_uppercase())
    }
}

/// Why provisioning stopped (what was done before stays done; running it again finishes it).
#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    #[error("the admin URL is not a valid PostgreSQL URL: {0}")]
    Url(#[from] url::ParseError),
    #[error("{0:?} cannot name a role or schema (lower-case letters, digits and _ only)")]
    Name(String),
    #[error("cannot connect with the admin URL: {0}")]
    Connect(sqlx::Error),
    #[error("provisioning {service}: {source}")]
    Statement { service: String, source: sqlx::Error },
    #[error("the system has no randomness for a password")]
    NoRandomness,
    #[error("writing {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
}

/// Creates or updates the role of each of `services` on the server at `admin_url`, with the schema
/// names of `store` (its prefix). See the module docs.
pub async fn provision(admin_url: &str, store: &StoreSettings, services: &[&str], replication: bool) -> Result<Vec<Provisioned>, ProvisionError> {
    sqlx::any::install_default_drivers();
    let base = url::Url::parse(admin_url)?;
    let admin = AnyPoolOptions::new().max_connections(1).connect(admin_url).await.map_err(ProvisionError::Connect)?;
    let mut made = Vec::new();
    for service in services {
        let schema = store.schema_of(service);
        if schema.is_empty() || !schema.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_') {
            return Err(ProvisionError::Name(schema));
        }
        let password = password()?;
        provision_one(&admin, &schema, &password, replication).await.map_err(|source| ProvisionError::Statement { service: (*service).to_owned(), source })?;
        let mut url = base.clone();
        url.set_username(&schema).map_err(|()| ProvisionError::Url(url::ParseError::EmptyHost))?;
        url.set_password(Some(&password)).map_err(|()| ProvisionError::Url(url::ParseError::EmptyHost))?;
        made.push(Provisioned { service: (*service).to_owned(), role: schema, url: url.into() });
    }
    admin.close().await;
    Ok(made)
}

/// 32 random bytes as hex: nothing a URL or a quoted SQL literal has to escape.
fn password() -> Result<String, ProvisionError> {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 32];
    ring::rand::SystemRandom::new().fill(&mut bytes).map_err(|_| ProvisionError::NoRandomness)?;
    Ok(bytes.iter().map(|byte| format!("{byte:02x}")).collect())
}

/// The role named like the schema owns the schema and everything in it, and nobody else may use it.
/// `role` was checked to be a plain identifier and `password` is hex, so both may be spliced in.
async fn provision_one(admin: &AnyPool, role: &str, password: &str, replication: bool) -> Result<(), sqlx::Error> {
    let schema = role;
    let attributes = format!("LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS {}", if replication { "REPLICATION" } else { "NOREPLICATION" });
    let (role_exists,): (bool,) = sqlx::query_as("SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)").bind(role).fetch_one(admin).await?;
    let verb = if role_exists { "ALTER" } else { "CREATE" };
    admin.execute(format!("{verb} ROLE {role} {attributes} PASSWORD '{password}'").as_str()).await?;
    let (schema_exists,): (bool,) = sqlx::query_as("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)").bind(schema).fetch_one(admin).await?;
    if schema_exists {
        admin.execute(format!("ALTER SCHEMA {schema} OWNER TO {role}").as_str()).await?;
        hand_over_contents(admin, schema, role).await?;
    } else {
        admin.execute(format!("CREATE SCHEMA {schema} AUTHORIZATION {role}").as_str()).await?;
    }
    admin.execute(format!("REVOKE ALL ON SCHEMA {schema} FROM PUBLIC").as_str()).await?;
    let (database,): (String,) = sqlx::query_as("SELECT current_database()::text").fetch_one(admin).await?;
    let database = quote_identifier(&database);
    let database_create =
        if replication { format!("GRANT CREATE ON DATABASE {database} TO {role}") } else { format!("REVOKE CREATE ON DATABASE {database} FROM {role}") };
    admin.execute(database_create.as_str()).await?;
    Ok(())
}

/// Gives `role` what an earlier single-role install made in `schema`: tables (with the sequences they
/// own), views, other sequences, functions, and the streaming relay's publication of the schema.
async fn hand_over_contents(admin: &AnyPool, schema: &str, role: &str) -> Result<(), sqlx::Error> {
    let not_owned = "n.nspname = $1 AND pg_get_userbyid(c.relowner) <> $2";
    let relations: Vec<(String, String)> = sqlx::query_as(&format!(
        "SELECT c.relname::text, c.relkind::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE {not_owned} AND c.relkind IN ('r', 'p', 'v', 'm', 'f') ORDER BY c.relname"
    ))
    .bind(schema)
    .bind(role)
    .fetch_all(admin)
    .await?;
    for (name, kind) in relations {
        let what = match kind.as_str() {
            "v" => "VIEW",
            "m" => "MATERIALIZED VIEW",
            "f" => "FOREIGN TABLE",
            _ => "TABLE",
        };
        admin.execute(format!("ALTER {what} {schema}.{} OWNER TO {role}", quote_identifier(&name)).as_str()).await?;
    }
    // Sequences a table owns moved with it; the others move on their own.
    let sequences: Vec<(String,)> = sqlx::query_as(&format!(
        "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE {not_owned} AND c.relkind = 'S' \
         AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = c.oid AND d.deptype IN ('a', 'i'))"
    ))
    .bind(schema)
    .bind(role)
    .fetch_all(admin)
    .await?;
    for (name,) in sequences {
        admin.execute(format!("ALTER SEQUENCE {schema}.{} OWNER TO {role}", quote_identifier(&name)).as_str()).await?;
    }
    let functions: Vec<(String,)> = sqlx::query_as(
        "SELECT p.oid::regprocedure::text FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = $1 AND pg_get_userbyid(p.proowner) <> $2",
    )
    .bind(schema)
    .bind(role)
    .fetch_all(admin)
    .await?;
    for (signature,) in functions {
        // `regprocedure` text is already a quoted, schema-qualified signature.
        admin.execute(format!("ALTER FUNCTION {signature} OWNER TO {role}").as_str()).await?;
    }
    let publication = crate::cdc::publication_of(schema);
    let (publication_exists,): (bool,) =
        sqlx::query_as("SELECT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = $1)").bind(&publication).fetch_one(admin).await?;
    if publication_exists {
        admin.execute(format!("ALTER PUBLICATION {publication} OWNER TO {role}").as_str()).await?;
    }
    Ok(())
}

/// `name` as a double-quoted SQL identifier.
fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The lines an operator hands each service: `TESSERA_POSTGRES_URLS__<SERVICE>=<url>`.
pub fn settings_lines(made: &[Provisioned]) -> String {
    made.iter().map(|one| format!("{}={}\n", one.variable(), one.url)).collect()
}

/// Writes each service's line to `<dir>/<service>.env`, owner-only (replacing an older file); returns
/// the paths.
pub fn write_env_files(dir: &Path, made: &[Provisioned]) -> Result<Vec<PathBuf>, ProvisionError> {
    let failed = |path: &Path| {
        let path = path.to_owned();
        move |source| ProvisionError::Write { path, source }
    };
    create_private_dir(dir).map_err(failed(dir))?;
    let mut written = Vec::new();
    for one in made {
        let path = dir.join(format!("{}.env", one.service));
        match std::fs::remove_file(&path) {
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => return Err(failed(&path)(error)),
            _ => {}
        }
        let mut file = create_private_file(&path).map_err(failed(&path))?;
        std::io::Write::write_all(&mut file, format!("{}={}\n", one.variable(), one.url).as_bytes()).map_err(failed(&path))?;
        written.push(path);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_service_gets_its_own_setting_line_and_file_for_its_owner_only() {
        let made = vec![
            Provisioned { service: "catalog".into(), role: "tessera_catalog".into(), url: "postgres://tessera_catalog:pw1@db/shop".into() },
            Provisioned { service: "paysandbox".into(), role: "tessera_paysandbox".into(), url: "postgres://tessera_paysandbox:pw2@db/shop".into() },
        ];
        assert_eq!(
            settings_lines(&made),
            "TESSERA_POSTGRES_URLS__CATALOG=postgres://tessera_catalog:pw1@db/shop\nTESSERA_POSTGRES_URLS__PAYSANDBOX=postgres://tessera_paysandbox:pw2@db/shop\n"
        );
        assert!(!format!("{made:?}").contains("pw1"), "never printed by Debug");
        let dir = tempfile::tempdir().unwrap();
        let written = write_env_files(&dir.path().join("provisioned"), &made).unwrap();
        assert_eq!(std::fs::read_to_string(&written[0]).unwrap(), "TESSERA_POSTGRES_URLS__CATALOG=postgres://tessera_catalog:pw1@db/shop\n");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&written[1]).unwrap().permissions().mode() & 0o777, 0o600);
        }
        // Written again (new passwords): replaced, not refused.
        assert!(write_env_files(&dir.path().join("provisioned"), &made).is_ok());
    }
}
