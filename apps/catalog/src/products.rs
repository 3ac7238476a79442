//! Products: the list page, its server functions and queries, and the cross-fragment "Add to cart".

use leptos::prelude::*;
use serde::{Deserialize, Serialize};
use shared_auth::SessionUser;
use tessera_contracts::domain::Money;
use tessera_contracts::ApiError;

/// A product as the catalog shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Product {
    pub sku: String,
    pub name: String,
    pub description: String,
    pub price: Money,
    /// Units available, as last heard from inventory (`None`: nothing heard yet).
    pub available: Option<i64>,
}

/// What the product list says about stock.
pub fn availability_label(available: Option<i64>) -> (&'static str, &'static str) {
    match available {
        None => ("unknown", "Availability unknown"),
        Some(0) => ("out", "Out of stock"),
        Some(n) if n < tessera_contracts::events::LOW_STOCK_BELOW => ("low", "Only a few left"),
        Some(_) => ("in", "In stock"),
    }
}

/// Every product, by name.
#[server(prefix = "/catalog/api", endpoint = "list_products")]
pub async fn list_products() -> Result<Vec<Product>, ApiError> {
    let runtime = tessera_kit::use_runtime()?;
    queries::all_products(&runtime.db).await.map_err(tessera_kit::internal)
}

/// The signed-in user as this fragment sees it (verified here from the shared cookie).
#[server(prefix = "/catalog/api", endpoint = "whoami")]
pub async fn whoami() -> Result<Option<SessionUser>, ApiError> {
    Ok(shared_auth::extract::current_user().await)
}

#[cfg(feature = "ssr")]
pub mod queries {
    use sqlx::AnyPool;

    use super::Product;
    use tessera_contracts::domain::Money;

    type ProductRow = (String, String, String, i64, String, Option<i64>);

    fn product((sku, name, description, minor, currency, available): ProductRow) -> Product {
        Product { sku, name, description, price: Money { minor, currency }, available }
    }

    /// Products with their availability from the local projection (never a call to inventory).
    const SELECT: &str = "SELECT p.sku, p.name, p.description, p.price_minor, p.currency, a.available \
                          FROM products p LEFT JOIN availability a ON a.sku = p.sku";

    pub async fn all_products(db: &AnyPool) -> Result<Vec<Product>, sqlx::Error> {
        let rows: Vec<ProductRow> = sqlx::query_as(&format!("{SELECT} ORDER BY p.name, p.sku")).fetch_all(db).await?;
        Ok(rows.into_iter().map(product).collect())
    }

    pub async fn featured_products(db: &AnyPool, limit: i64) -> Result<Vec<Product>, sqlx::Error> {
        let rows: Vec<ProductRow> = sqlx::query_as(&format!("{SELECT} ORDER BY p.created_at, p.sku LIMIT $1"))
        .bind(limit)
        .fetch_all(db)
        .await?;
        Ok(rows.into_iter().map(product).collect())
    }

    pub async fn insert_product(db: &AnyPool, product: &Product, created_at: i64) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO products (sku, name, description, price_minor, currency, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&product.sku)
        .bind(&product.name)
        .bind(&product.description)
        .bind(product.price.minor)
        .bind(&product.price.currency)
        .bind(created_at)
        .execute(db)
        .await?;
        Ok(())
    }
}

/// The product list with a live filter.
#[component]
pub fn ProductsPage() -> impl IntoView {
    let products = Resource::new(|| (), |_| list_products());
    let me = Resource::new(|| (), |_| whoami());
    let (filter, set_filter) = signal(String::new());

    view! {
        <section class="catalog">
            <div class="fragment-heading">
                <h1>"Catalog"</h1>
                <Suspense fallback=|| ()>
                    {move || me.get().map(|me| view! { <SignedInAs user=me.ok().flatten()/> })}
                </Suspense>
            </div>
            <label class="filter">
                "Filter "
                <input
                    type="search"
                    name="filter"
                    placeholder="name or SKU"
                    data-testid="catalog-filter"
                    prop:value=filter
                    on:input=move |ev| set_filter.set(event_target_value(&ev))
                />
            </label>
            <Suspense fallback=|| view! { <p>"Loading products…"</p> }>
                {move || products.get().map(|result| match result {
                    Ok(list) => view! { <ProductList products=list filter=filter/> }.into_any(),
                    Err(error) => view! { <p class="error">{error.to_string()}</p> }.into_any(),
                })}
            </Suspense>
        </section>
    }
}

#[component]
fn SignedInAs(user: Option<SessionUser>) -> impl IntoView {
    match user {
        Some(user) => view! { <p class="signed-in" data-testid="fragment-user">"Signed in as " <strong>{user.name}</strong></p> }.into_any(),
        None => view! { <p class="signed-in" data-testid="fragment-user">"Browsing as a guest"</p> }.into_any(),
    }
}

#[component]
fn ProductList(products: Vec<Product>, filter: ReadSignal<String>) -> impl IntoView {
    let shown = move |product: &Product| {
        let needle = filter.get().trim().to_lowercase();
        needle.is_empty() || product.name.to_lowercase().contains(&needle) || product.sku.to_lowercase().contains(&needle)
    };
    let items = products
        .into_iter()
        .map(|product| {
            let visible = {
                let product = product.clone();
                move || shown(&product)
            };
            let sku = product.sku.clone();
            view! {
                <li class="product" data-sku=product.sku.clone() class:hidden=move || !visible()>
                    <h2>{product.name.clone()}</h2>
                    <p class="sku">{product.sku.clone()}</p>
                    <p>{product.description.clone()}</p>
                    <p class="price">{product.price.to_string()}</p>
                    {
                        let (class, label) = availability_label(product.available);
                        view! { <p class=format!("availability availability-{class}") data-testid="availability">{label}</p> }
                    }
                    <AddToCart sku=sku/>
                </li>
            }
        })
        .collect_view();
    view! { <ul class="products" data-testid="product-list">{items}</ul> }
}

/// Adds one unit to the signed-in user's cart through the cart fragment's API.
#[component]
fn AddToCart(sku: String) -> impl IntoView {
    let (status, set_status) = signal(None::<String>);
    let (busy, set_busy) = signal(false);
    let on_click = move |_| {
        let sku = sku.clone();
        set_busy.set(true);
        leptos::task::spawn_local(async move {
            set_status.set(Some(browser::add_to_cart(&sku).await));
            set_busy.set(false);
        });
    };
    view! {
        <button type="button" class="add-to-cart" on:click=on_click disabled=busy>"Add to cart"</button>
        <span class="status" role="status">{move || status.get()}</span>
    }
}

mod browser {
    /// POSTs to the cart's `add_item` server function and returns a message for the shopper.
    #[cfg(feature = "hydrate")]
    pub async fn add_to_cart(sku: &str) -> String {
        use tessera_contracts::cart::{CartSummary, ADD_ITEM_PATH};
        use tessera_contracts::ApiError;

        let body = format!("sku={}&quantity=1", js_sys::encode_uri_component(sku));
        let request = gloo_net::http::Request::post(ADD_ITEM_PATH)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body);
        let response = match request {
            Ok(request) => request.send().await,
            Err(error) => return format!("Could not add: {error}"),
        };
        match response {
            Ok(response) if response.ok() => match response.json::<CartSummary>().await {
                Ok(summary) => {
                    tessera_contracts::dom_events::announce_cart_count(summary.item_count);
                    "Added to your cart".to_owned()
                }
                Err(_) => "Added to your cart".to_owned(),
            },
            Ok(response) if response.status() == 401 => "Sign in to add items to your cart".to_owned(),
            Ok(response) => match response.json::<ApiError>().await {
                Ok(error) => error.to_string(),
                Err(_) => format!("The cart answered {}", response.status()),
            },
            Err(_) => "The cart is not reachable right now".to_owned(),
        }
    }

    /// Never called on the server: the button only works after hydration.
    #[cfg(not(feature = "hydrate"))]
    pub async fn add_to_cart(_sku: &str) -> String {
        String::new()
    }
}
