use anyhow::Context;
use clap::{Parser, Subcommand};
use tessera_site::{Mode, ShellSettings};

/// Tessera: a storefront of independently built Leptos fragments behind one login.
#[derive(Parser)]
#[command(name = "tessera", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the site (shell and in-process fragments), or one fragment alone.
    Serve {
        /// Serve only this fragment (catalog, cart or inventory).
        #[arg(long)]
        fragment: Option<String>,
        /// Seed the demo accounts and catalogue.
        #[arg(long)]
        demo: bool,
    },
    /// Manage signing keys: the shell's token keys, and keys for a service's events and calls.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Database administration.
    Db {
        #[command(subcommand)]
        command: DbCommand,
    },
    /// Inventory tools.
    Inventory {
        #[command(subcommand)]
        command: InventoryCommand,
    },
}

#[derive(Subcommand)]
enum InventoryCommand {
    /// Check the inventory's invariants on its database: no counter below zero, reservations and holds
    /// within on-hand, the ledger replays to every counter, counters match the active reservations, each
    /// reservation ended once. Exits with status 1 if any is broken.
    Verify,
}

#[derive(Subcommand)]
enum DbCommand {
    /// Create (or update, with new passwords) one PostgreSQL login role per service that owns that
    /// service's schema and nothing else, and print each service's `TESSERA_POSTGRES_URLS__<SERVICE>`.
    /// Schema names follow `TESSERA_SCHEMA_PREFIX`.
    Provision {
        /// A URL whose role may create roles and schemas (for example the server's superuser).
        #[arg(long)]
        admin_url: String,
        /// Write `<dir>/<service>.env` (owner-only) instead of printing the URLs.
        #[arg(long)]
        write: Option<std::path::PathBuf>,
        /// Let the roles stream their outbox (`TESSERA_OUTBOX_RELAY=cdc`): grants REPLICATION and CREATE
        /// on the database, which widens what a role can read (see `tessera_host::provision`).
        #[arg(long)]
        replication: bool,
        /// Only these services (repeatable; default: every service of the site).
        #[arg(long = "service")]
        services: Vec<String>,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Add a new signing key. It is published in the JWKS at once and signs only after the delay, so
    /// every fragment's cached key set has it first; the old key stays published until its tokens expire.
    Rotate {
        /// Seconds until the new key signs (default: the fragments' JWKS cache lifetime plus a margin).
        #[arg(long, default_value_t = 310)]
        delay_seconds: i64,
    },
    /// Print a new Ed25519 key for a service's events and calls, as the setting that gives it to that
    /// service's processes (`TESSERA_SERVICE_KEYS__<SERVICE>=…`; put it first in the list to rotate).
    New {
        /// The service it is for (catalog, cart, inventory, …).
        service: String,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tessera_host::binary::init_tracing();
    let cli = Cli::parse();
    let mut settings = ShellSettings::load().context("reading the configuration")?;
    let (fragment, demo) = match cli.command {
        Command::Serve { fragment, demo } => (fragment, demo),
        Command::Keys { command: KeysCommand::New { service } } => {
            let name = tessera_contracts::domain::ServiceName::parse(&service).map_err(|_| anyhow::anyhow!("{service:?} is not a service name"))?;
            println!("{}", tessera_fragment::secrets::new_service_key_setting(&name)?);
            return Ok(());
        }
        Command::Keys { command: KeysCommand::Rotate { delay_seconds } } => {
            let entry = tessera_shell::site::rotate_keys(&settings.host, delay_seconds).await?;
            println!("{}", tessera_shell::keys::describe_rotation(&entry));
            return Ok(());
        }
        Command::Db { command: DbCommand::Provision { admin_url, write, replication, services } } => {
            let known = tessera_site::app::services();
            if let Some(unknown) = services.iter().find(|service| !known.contains(service)) {
                anyhow::bail!("there is no service called {unknown:?} ({})", known.join(", "));
            }
            let services = if services.is_empty() { known } else { services };
            let names: Vec<&str> = services.iter().map(String::as_str).collect();
            let made = tessera_host::provision::provision(&admin_url, &settings.host.store, &names, replication).await?;
            match write {
                Some(dir) => {
                    for path in tessera_host::provision::write_env_files(&dir, &made)? {
                        println!("wrote {}", path.display());
                    }
                }
                None => print!("{}", tessera_host::provision::settings_lines(&made)),
            }
            return Ok(());
        }
        Command::Inventory { command: InventoryCommand::Verify } => {
            let report = tessera_site::app::verify_inventory(&settings.host).await?;
            println!(
                "checked {} stock rows, {} ledger rows, {} reservations: {} violations",
                report.stock_rows,
                report.ledger_rows,
                report.reservations,
                report.violations.len()
            );
            for violation in &report.violations {
                println!("  - {violation}");
            }
            if !report.violations.is_empty() {
                std::process::exit(1);
            }
            return Ok(());
        }
    };
    settings.host.site.demo |= demo;
    let mode = fragment.map(Mode::Fragment).unwrap_or(Mode::Site);
    tracing::info!(?settings, ?mode, "starting");
    let running = tessera_site::spawn(&settings, &mode).await?;
    tracing::info!(addr = %running.addr, "listening on http://{}", running.addr);
    running.handle.await.context("server task")?.context("serving")?;
    Ok(())
}
