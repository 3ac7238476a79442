//! `tessera-shell`: the shell as its own deployable. It contains no fragment: every fragment is an
//! upstream (`TESSERA_FRAGMENTS__<NAME>__UPSTREAMS`), registered from its own description, balanced over
//! its ready instances. It signs the one login, composes pages, serves the sandbox payment provider unless
//! `TESSERA_PAYMENT_URL` names another, answers `/healthz` and `/readyz`, and drains on SIGTERM.

use clap::{Parser, Subcommand};
use tessera_shell::settings::ShellSettings;

#[derive(Parser)]
#[command(name = "tessera-shell", version)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the shell (the default).
    Serve {
        /// Seed the demo accounts.
        #[arg(long)]
        demo: bool,
    },
    /// Manage the signing keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Add a new signing key: published at once, signing after the delay (the fragments' JWKS cache
    /// lifetime plus a margin), so every fragment knows it before its first token.
    Rotate {
        #[arg(long, default_value_t = 310)]
        delay_seconds: i64,
    },
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tessera_host::binary::init_tracing();
    let cli = Cli::parse();
    let mut settings = ShellSettings::load()?;
    match cli.command.unwrap_or(Command::Serve { demo: false }) {
        Command::Serve { demo } => settings.host.site.demo |= demo,
        Command::Keys { command: KeysCommand::Rotate { delay_seconds } } => {
            let entry = tessera_shell::site::rotate_keys(&settings.host, delay_seconds).await?;
            println!("{}", tessera_shell::keys::describe_rotation(&entry));
            return Ok(());
        }
    }
    tracing::info!(?settings, "starting the shell");
    let running = tessera_shell::site::serve(&settings, &[]).await?;
    tracing::info!(addr = %running.addr, "listening on http://{}", running.addr);
    running.handle.await??;
    Ok(())
}
