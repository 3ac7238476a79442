//! The cart's server functions (`/cart/api/*`): thin wrappers that find the shopper from the request
//! (verified login and/or guest cookie) and call the domain modules. They are the edge where the domain's
//! [`CartError`](crate::error::CartError) becomes the wire's `ApiError` (its `From`, by `?`).

use leptos::prelude::*;
use tessera_contracts::cart::CartSummary;
use tessera_contracts::ApiError;

use crate::model::{CartView, CheckoutForm, OrderSummary, OrderView, PlacedOrder};

#[cfg(feature = "ssr")]
mod context {
    use axum::http::header::SET_COOKIE;
    use axum::http::HeaderValue;
    use tessera_contracts::ApiError;
    use tessera_fragment::FragmentRuntime;

    use crate::carts::CookieChange;
    use crate::error::CartError;
    use crate::model::CART_COOKIE;
    use crate::store::Shopper;

    /// The runtime and the shopper of the current server function call.
    pub async fn shopper() -> Result<(FragmentRuntime, Shopper), ApiError> {
        let runtime = tessera_fragment::use_runtime()?;
        let user = shared_auth::extract::current_user().await;
        let headers = leptos::prelude::use_context::<axum::http::request::Parts>().map(|parts| parts.headers).unwrap_or_default();
        Ok((runtime, Shopper::from_headers(user, &headers)))
    }

    /// Runs a cart operation to completion in its own task: it calls inventory and the payment provider,
    /// so stopping half-way because the client went away (or the shell's timeout fired) could leave stock
    /// held for a line that was never written.
    pub async fn to_completion<T: Send + 'static>(operation: impl std::future::Future<Output = Result<T, CartError>> + Send + 'static) -> Result<T, ApiError> {
        // All of it is the request's data time (database, calls to inventory and payments).
        match tessera_fragment::timing::data(tokio::spawn(operation)).await {
            Ok(result) => Ok(result?),
            Err(error) => {
                tracing::error!(%error, "a cart operation panicked");
                Err(ApiError::Internal)
            }
        }
    }

    /// Runs a cart operation of the current shopper that may change the guest cart cookie (it finds,
    /// merges or makes the cart), to completion, and sends the cookie's change with the response.
    pub async fn in_cart<T, Fut>(operation: impl FnOnce(FragmentRuntime, crate::store::Shopper) -> Fut) -> Result<T, ApiError>
    where
        T: Send + 'static,
        Fut: std::future::Future<Output = (Result<T, CartError>, CookieChange)> + Send + 'static,
    {
        let (runtime, shopper) = shopper().await?;
        let operation = operation(runtime.clone(), shopper);
        let (result, cookie) = to_completion(async move { Ok(operation.await) }).await?;
        apply(&runtime, cookie);
        Ok(result?)
    }

    /// Sends the guest cart cookie change with the response (a guest cart is kept for 30 days).
    pub fn apply(runtime: &FragmentRuntime, cookie: CookieChange) {
        let secure = if runtime.secure_cookies { "; Secure" } else { "" };
        let value = match cookie {
            CookieChange::None => return,
            CookieChange::Set(token) => {
                format!("{CART_COOKIE}={token}; Path=/; HttpOnly; SameSite=Lax; Max-Age={}{secure}", crate::store::GUEST_COOKIE_SECONDS)
            }
            CookieChange::Clear => {
                format!("{CART_COOKIE}=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0{secure}")
            }
        };
        if let (Some(response), Ok(value)) = (leptos::prelude::use_context::<leptos_axum::ResponseOptions>(), HeaderValue::from_str(&value)) {
            response.append_header(SET_COOKIE, value);
        }
    }
}

/// The visitor's cart (a guest cart by cookie, or the signed-in user's with a guest cart merged in).
#[server(prefix = "/cart/api", endpoint = "my_cart")]
pub async fn my_cart() -> Result<CartView, ApiError> {
    context::in_cart(view_task).await
}

/// Finds (and merges) the shopper's cart and brings its holds up to date, to completion: both may call
/// inventory.
#[cfg(feature = "ssr")]
async fn view_task(
    runtime: tessera_fragment::FragmentRuntime,
    shopper: crate::store::Shopper,
) -> (Result<CartView, crate::error::CartError>, crate::carts::CookieChange) {
    let mut cookie = crate::carts::CookieChange::None;
    let result = match crate::carts::resolve(&runtime, &shopper, &mut cookie).await {
        Ok(cart) => crate::carts::view(&runtime, &shopper, cart).await,
        Err(error) => Err(error),
    };
    (result, cookie)
}

/// Adds `quantity` of `sku` to the visitor's cart (the typed API the catalog calls), holding the stock.
#[server(prefix = "/cart/api", endpoint = "add_item")]
pub async fn add_item(sku: String, quantity: i64) -> Result<CartSummary, ApiError> {
    context::in_cart(move |runtime, shopper| async move {
        let mut cookie = crate::carts::CookieChange::None;
        (crate::carts::add(&runtime, &shopper, &sku, quantity, &mut cookie).await, cookie)
    })
    .await
}

// The contract's `AddItem` (what another fragment's island sends) is exactly this function's arguments:
// a field added, removed or renamed on either side fails to compile.
const _: fn(tessera_contracts::cart::AddItem) -> AddItem = |item| AddItem { sku: item.sku, quantity: item.quantity };
const _: fn(AddItem) -> tessera_contracts::cart::AddItem = |item| tessera_contracts::cart::AddItem { sku: item.sku, quantity: item.quantity };

/// Sets the quantity of a line; 0 removes it. Returns the updated cart.
#[server(prefix = "/cart/api", endpoint = "set_quantity")]
pub async fn set_quantity(sku: String, quantity: i64) -> Result<CartView, ApiError> {
    context::in_cart(move |runtime, shopper| async move {
        let mut cookie = crate::carts::CookieChange::None;
        (crate::carts::set_quantity(&runtime, &shopper, &sku, quantity, &mut cookie).await, cookie)
    })
    .await
}

/// The checkout page's data: the cart and a fresh idempotency key (signed-in shoppers only).
#[server(prefix = "/cart/api", endpoint = "checkout")]
pub async fn checkout_view() -> Result<CheckoutForm, ApiError> {
    let cart = context::in_cart(|runtime, shopper| async move {
        if shopper.user.is_none() {
            return (Err(crate::error::CartError::SignInFirst), crate::carts::CookieChange::None);
        }
        view_task(runtime, shopper).await
    })
    .await?;
    Ok(CheckoutForm { cart, key: uuid::Uuid::new_v4().to_string() })
}

/// Places the order. The same `key` again (a double click, a retried request) answers with the same order.
#[server(prefix = "/cart/api", endpoint = "place_order")]
pub async fn place_order(
    key: String,
    name: String,
    street: String,
    city: String,
    postcode: String,
    country: String,
    shipping: String,
) -> Result<PlacedOrder, ApiError> {
    use crate::model::{Address, ShippingMethod};
    let (runtime, shopper) = context::shopper().await?;
    if shopper.user.is_none() {
        return Err(ApiError::Unauthorized);
    }
    // Checked here, at the edge: the same checks run in the browser (`model`), which speaks `ApiError`.
    let address = Address::parse(&name, &street, &city, &postcode, &country)?;
    let shipping = ShippingMethod::parse(&shipping)?;
    context::to_completion(async move { crate::orders::place(&runtime, &shopper, &key, &address, shipping).await }).await
}

/// The signed-in shopper's orders, newest first.
#[server(prefix = "/cart/api", endpoint = "my_orders")]
pub async fn my_orders() -> Result<Vec<OrderSummary>, ApiError> {
    let user = shared_auth::extract::require_user().await?;
    let runtime = tessera_fragment::use_runtime()?;
    Ok(tessera_fragment::timing::data(crate::orders::list(&runtime.db, &user.id)).await.map_err(crate::error::CartError::from)?)
}

/// One of the shopper's orders (404 for anyone else's).
#[server(prefix = "/cart/api", endpoint = "order")]
pub async fn order_detail(id: String) -> Result<OrderView, ApiError> {
    let user = shared_auth::extract::require_user().await?;
    let runtime = tessera_fragment::use_runtime()?;
    Ok(tessera_fragment::timing::data(order_view(&runtime, &user.id, &id)).await?)
}

/// One of the user's orders as its page shows it.
#[cfg(feature = "ssr")]
async fn order_view(runtime: &tessera_fragment::FragmentRuntime, user_id: &str, id: &str) -> Result<OrderView, crate::error::CartError> {
    let order = crate::orders::own_order(&runtime.db, user_id, id).await?;
    Ok(crate::orders::view(&runtime.db, order).await?)
}

/// The payment page of an order awaiting payment.
#[server(prefix = "/cart/api", endpoint = "pay_order")]
pub async fn pay_order(id: String) -> Result<PlacedOrder, ApiError> {
    let user = shared_auth::extract::require_user().await?;
    let runtime = tessera_fragment::use_runtime()?;
    Ok(tessera_fragment::timing::data(crate::orders::pay(&runtime, &user.id, &id)).await?)
}

/// Cancels one of the shopper's unpaid orders, or asks the warehouse to cancel a paid one (it is refunded
/// once inventory confirms; the order's page shows the answer).
#[server(prefix = "/cart/api", endpoint = "cancel_order")]
pub async fn cancel_order(id: String) -> Result<OrderView, ApiError> {
    let user = shared_auth::extract::require_user().await?;
    let runtime = tessera_fragment::use_runtime()?;
    let (task_runtime, user_id, order_id) = (runtime.clone(), user.id.clone(), id.clone());
    context::to_completion(async move { crate::orders::cancel(&task_runtime, &user_id, &order_id).await }).await?;
    Ok(tessera_fragment::timing::data(order_view(&runtime, &user.id, &id)).await?)
}
