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
    /// Manage the shell's signing keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
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
enum KeysCommand {
    /// Add a new signing key. It is published in the JWKS at once and signs only after the delay, so
    /// every fragment's cached key set has it first; the old key stays published until its tokens expire.
    Rotate {
        /// Seconds until the new key signs (default: the fragments' JWKS cache lifetime plus a margin).
        #[arg(long, default_value_t = 310)]
        delay_seconds: i64,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tessera_host::binary::init_tracing();
    let cli = Cli::parse();
    let mut settings = ShellSettings::load().context("reading the configuration")?;
    let (fragment, demo) = match cli.command {
        Command::Serve { fragment, demo } => (fragment, demo),
        Command::Keys { command: KeysCommand::Rotate { delay_seconds } } => {
            let entry = tessera_shell::site::rotate_keys(&settings.host, delay_seconds).await?;
            println!("{}", tessera_shell::keys::describe_rotation(&entry));
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
