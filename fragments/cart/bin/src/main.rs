//! `tessera-cart`: the cart fragment as its own deployable. It links the fragment's crate, the shared
//! crates and the process host only; it serves the fragment's pages, server functions, bundle and events
//! under its prefix, describes itself at `/.well-known/tessera-fragments`, answers `/healthz` and
//! `/readyz`, and drains on SIGTERM.

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tessera_host::binary::main_of(&tessera_cart::server::Cart).await
}
