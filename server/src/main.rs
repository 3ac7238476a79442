use anyhow::Context;
use clap::{Parser, Subcommand};
use tessera_server::{Mode, Settings};

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
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TESSERA_LOG")
                .unwrap_or_else(|_| "info,sqlx=warn,tower_http=warn".into()),
        )
        .init();
    let cli = Cli::parse();
    let Command::Serve { fragment, demo } = cli.command;
    let mut settings = Settings::load().context("reading the configuration")?;
    settings.demo |= demo;
    let mode = fragment.map(Mode::Fragment).unwrap_or(Mode::Site);
    tracing::info!(?settings, ?mode, "starting");
    let running = tessera_server::spawn(&settings, &mode).await?;
    tracing::info!(addr = %running.addr, "listening on http://{}", running.addr);
    running.handle.await.context("server task")?.context("serving")?;
    Ok(())
}
