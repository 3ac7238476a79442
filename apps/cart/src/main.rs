//! `tessera-cart`: the cart fragment as its own deployable. It links this crate and the shared crates
//! only, serves its pages, server functions, bundle and events under its prefix, describes itself at
//! `/.well-known/tessera-fragments`, answers `/healthz` and `/readyz`, and drains on SIGTERM.

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tessera_kit::host::main_of(
        &tessera_cart::server::Cart,
        Some(|host| {
            Box::pin(async move {
                // Without a configured provider, the cart alone brings the sandbox (for a cart run with no shell).
                if host.settings.payment_url.is_none() {
                    Ok(Some(tessera_paysandbox::attach(host).await?))
                } else {
                    Ok(None)
                }
            })
        }),
    )
    .await
}
