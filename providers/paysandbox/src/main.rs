//! `tessera-paysandbox`: the sandbox payment provider as its own process. The cart reaches it over HTTP
//! only (`TESSERA_PAYMENT_URL` on the cart's processes); it calls the cart back with signed webhooks.
//! The shell also serves it in process on the shopper's origin (`/sandbox-pay`) unless
//! `TESSERA_PAYMENT_URL` names a provider.

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tessera_host::binary::init_tracing();
    let settings = tessera_host::Settings::load()?;
    if std::env::args().skip(1).any(|argument| argument == "--help" || argument == "-h") {
        println!("tessera-paysandbox: the sandbox payment provider alone, on TESSERA_ADDR. Settings: TESSERA_* variables (docs/settings.md).");
        return Ok(());
    }
    tracing::info!(?settings, "starting the sandbox payment provider");
    let running = tessera_paysandbox::run_alone(&settings).await?;
    tracing::info!(addr = %running.addr, "listening on http://{}", running.addr);
    running.handle.await??;
    Ok(())
}
