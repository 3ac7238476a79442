//! `tessera-inventory`: the inventory fragment as its own deployable. It links this crate and the shared crates
//! only, serves its pages, server functions, bundle and events under its prefix, describes itself at
//! `/.well-known/tessera-fragments`, answers `/healthz` and `/readyz`, and drains on SIGTERM.

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tessera_kit::host::main_of(&tessera_inventory::server::Inventory, None).await
}
