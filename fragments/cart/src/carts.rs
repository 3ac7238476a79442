//! Cart operations: finding the shopper's cart (merging a guest cart at sign-in), adding, changing and
//! removing lines with their holds, and the cart as the shopper sees it.

use tessera_contracts::cart::CartSummary;
use tessera_contracts::domain::{CartId, Quantity, ReservationId, Sku};
use tessera_contracts::inventory::Line;
use tessera_fragment::db::now_ms;
use tessera_fragment::lease::LeaseError;
use tessera_fragment::FragmentRuntime;

use crate::error::CartError;
use crate::holds::{self, Hold};
use crate::model::{money, CartView, LineView, HOLD_TTL_SECONDS, MAX_LINES};
use crate::store::{self, CartRow, CartStatus, Item, Shopper};

/// What a request did to the anonymous cart cookie.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CookieChange {
    None,
    /// A guest cart was created: set the cookie to this token.
    Set(String),
    /// The guest cart was merged into the user's: clear the cookie.
    Clear,
}

/// Whether a cart (the caller holds its lock) may change now.
async fn is_open(runtime: &FragmentRuntime, cart_id: &CartId) -> Result<bool, sqlx::Error> {
    Ok(store::cart_status(&runtime.db, cart_id).await? == CartStatus::Open)
}

/// The shopper's active cart, if any. A signed-in shopper who still has a guest cart gets it merged
/// into theirs first (the cookie is then cleared).
pub async fn resolve(runtime: &FragmentRuntime, shopper: &Shopper, cookie: &mut CookieChange) -> Result<Option<CartRow>, CartError> {
    let db = &runtime.db;
    let Some(user) = &shopper.user else {
        return match &shopper.token {
            Some(token) => Ok(store::guest_cart(db, token).await?),
            None => Ok(None),
        };
    };
    if let Some(token) = &shopper.token {
        let merged = match store::guest_cart(db, token).await? {
            Some(guest) => {
                let cart = store::ensure_user_cart(db, &user.id).await?;
                merge(runtime, &guest, &cart).await?
            }
            // Merged before, or gone: the cookie has nothing more to find.
            None => true,
        };
        if merged {
            *cookie = CookieChange::Clear;
        }
    }
    Ok(store::user_cart(db, &user.id).await?)
}

/// Moves a guest cart's lines into the user's cart. A SKU in both becomes one line of the summed
/// quantity (at most the maximum), held by one reservation replacing both. Returns false when it has to
/// wait (the user's cart is being checked out): the guest cart stays, to merge on a later request.
async fn merge(runtime: &FragmentRuntime, guest: &CartRow, cart: &CartRow) -> Result<bool, CartError> {
    if cart.is_locked() {
        return Ok(false);
    }
    let (first, second) = if guest.id < cart.id { (&guest.id, &cart.id) } else { (&cart.id, &guest.id) };
    let _first = holds::lock(runtime, first).await?;
    let _second = holds::lock(runtime, second).await?;
    // Again under the locks: an order may have been placed from the user's cart meanwhile.
    if !is_open(runtime, &cart.id).await? || !is_open(runtime, &guest.id).await? {
        return Ok(false);
    }
    let mut connection = runtime.db.acquire().await?;
    let guest_items = store::items(&mut connection, &guest.id).await?;
    let mine = store::items(&mut connection, &cart.id).await?;
    drop(connection);
    for item in guest_items {
        let name = item.price.as_ref().map(|price| price.name.clone()).unwrap_or_else(|| item.sku.to_string());
        match mine.iter().find(|existing| existing.sku == item.sku) {
            None => {
                store::move_item(&runtime.db, &guest.id, &cart.id, &item.sku).await?;
            }
            Some(existing) => {
                let quantity = existing.quantity.saturating_add(item.quantity);
                let replaces: Vec<ReservationId> = [&existing.reservation_id, &item.reservation_id].into_iter().flatten().cloned().collect();
                let lines = vec![Line { sku: item.sku.clone(), quantity }];
                let key = holds::new_key();
                let outcome = holds::reserve(runtime, &store::cart_owner(&cart.id), Some(key.clone()), lines, replaces, HOLD_TTL_SECONDS).await;
                let record = holds::record(&outcome, &name, existing.reservation_id.as_ref(), &key);
                let mut tx = runtime.db.begin().await?;
                store::put_item(&mut tx, &cart.id, &item.sku, quantity, existing.seen_price_minor, &record).await?;
                store::remove_item(&mut tx, &guest.id, &item.sku).await?;
                tx.commit().await?;
                if !matches!(outcome, Hold::Held(_)) {
                    // The guest line's own hold was not replaced: let it go.
                    if let Some(id) = &item.reservation_id {
                        holds::release(runtime, id).await;
                    }
                }
            }
        }
    }
    let mut connection = runtime.db.acquire().await?;
    store::set_cart_status(&mut connection, &guest.id, CartStatus::Open, CartStatus::Merged).await?;
    Ok(true)
}

/// Adds `quantity` of `sku` to the shopper's cart, holding the line's new total in inventory.
pub async fn add(runtime: &FragmentRuntime, shopper: &Shopper, sku: &str, quantity: i64, cookie: &mut CookieChange) -> Result<CartSummary, CartError> {
    let sku = Sku::parse(sku)?;
    let quantity = Quantity::parse(quantity)?;
    let db = &runtime.db;
    let price = store::price(db, &sku).await?.ok_or_else(|| CartError::NotFound(format!("{sku} is not sold here")))?;
    let cart = match resolve(runtime, shopper, cookie).await? {
        Some(cart) => cart,
        None => match (&shopper.user, &shopper.token) {
            (Some(user), _) => store::ensure_user_cart(db, &user.id).await?,
            // No active cart behind the cookie (merged, ordered, or never ours): a new cart with a token of
            // our own, never one the client chose.
            (None, _) => {
                let token = store::new_token();
                let cart = store::create_guest_cart(db, &token).await?;
                *cookie = CookieChange::Set(token);
                cart
            }
        },
    };
    let _guard = holds::lock(runtime, &cart.id).await?;
    if !is_open(runtime, &cart.id).await? {
        return Err(CartError::Locked);
    }
    let mut connection = db.acquire().await?;
    let items = store::items(&mut connection, &cart.id).await?;
    drop(connection);
    let existing = items.iter().find(|item| item.sku == sku);
    if existing.is_none() && items.len() >= MAX_LINES {
        return Err(CartError::Conflict(format!("a cart holds at most {MAX_LINES} different items")));
    }
    if let Some(other) = items.iter().filter_map(|item| item.price.as_ref()).find(|other| other.currency != price.currency) {
        return Err(CartError::Conflict(format!("your cart is priced in {}; {sku} is priced in {}", other.currency, price.currency)));
    }
    let too_many = || CartError::Conflict(format!("you can have at most {} of {} in your cart", Quantity::MAX, price.name));
    let total = Quantity::parse(existing.map_or(0, |item| item.quantity.get()) + quantity.get()).map_err(|_| too_many())?;
    let previous = existing.and_then(|item| item.reservation_id.clone());
    let in_cart = |message: String| match existing {
        Some(item) => format!("{message} You have {} in your cart.", item.quantity),
        None => message,
    };
    let (record, message) = if shopper.user.is_none() {
        let record = holds::guest_line(runtime, &sku, &price.name, total, previous.as_ref()).await.map_err(|error| match error {
            CartError::Conflict(message) => CartError::Conflict(in_cart(message)),
            other => other,
        })?;
        (record, None)
    } else {
        let lines = vec![Line { sku: sku.clone(), quantity: total }];
        let key = holds::new_key();
        let outcome =
            holds::reserve(runtime, &store::cart_owner(&cart.id), Some(key.clone()), lines, previous.iter().cloned().collect(), HOLD_TTL_SECONDS).await;
        let message = match &outcome {
            Hold::Short(short) => return Err(CartError::Conflict(in_cart(holds::short_note(&price.name, short)))),
            Hold::Refused(error) => return Err(CartError::Refused(error.clone())),
            Hold::Unavailable(reason) => {
                tracing::warn!(reason, "inventory unavailable; the line is kept and its hold retried");
                Some(holds::PENDING_NOTE.to_owned())
            }
            Hold::Held(_) => None,
        };
        (holds::record(&outcome, &price.name, previous.as_ref(), &key), message)
    };
    let mut connection = db.acquire().await?;
    store::put_item(&mut connection, &cart.id, &sku, total, Some(price.price_minor), &record).await?;
    drop(connection);
    let item_count = store::item_count(db, &cart.id).await?;
    Ok(CartSummary { item_count, message })
}

/// Sets a line's quantity (0 removes it), holding the new quantity in place of the old.
pub async fn set_quantity(runtime: &FragmentRuntime, shopper: &Shopper, sku: &str, quantity: i64, cookie: &mut CookieChange) -> Result<CartView, CartError> {
    let sku = Sku::parse(sku)?;
    let quantity = if quantity == 0 { None } else { Some(Quantity::parse(quantity)?) };
    let not_in_cart = || CartError::NotFound(format!("{sku} is not in your cart"));
    let cart = resolve(runtime, shopper, cookie).await?.ok_or_else(not_in_cart)?;
    {
        let _guard = holds::lock(runtime, &cart.id).await?;
        if !is_open(runtime, &cart.id).await? {
            return Err(CartError::Locked);
        }
        let mut connection = runtime.db.acquire().await?;
        let items = store::items(&mut connection, &cart.id).await?;
        let item = items.into_iter().find(|item| item.sku == sku).ok_or_else(not_in_cart)?;
        match quantity {
            None => {
                store::remove_item(&mut connection, &cart.id, &sku).await?;
                drop(connection);
                if let Some(id) = &item.reservation_id {
                    holds::release(runtime, id).await;
                }
            }
            Some(quantity) if shopper.user.is_none() => {
                drop(connection);
                let name = item.price.as_ref().map(|price| price.name.clone()).unwrap_or_else(|| item.sku.to_string());
                let record = holds::guest_line(runtime, &sku, &name, quantity, item.reservation_id.as_ref()).await.map_err(|error| match error {
                    CartError::Conflict(message) => CartError::Conflict(format!("{message} You have {} in your cart.", item.quantity)),
                    other => other,
                })?;
                let seen = item.price.as_ref().map(|price| price.price_minor).or(item.seen_price_minor);
                let mut connection = runtime.db.acquire().await?;
                store::put_item(&mut connection, &cart.id, &sku, quantity, seen, &record).await?;
            }
            Some(quantity) => {
                drop(connection);
                let name = item.price.as_ref().map(|price| price.name.clone()).unwrap_or_else(|| item.sku.to_string());
                let lines = vec![Line { sku: sku.clone(), quantity }];
                let key = holds::new_key();
                let outcome = holds::reserve(
                    runtime,
                    &store::cart_owner(&cart.id),
                    Some(key.clone()),
                    lines,
                    item.reservation_id.iter().cloned().collect(),
                    HOLD_TTL_SECONDS,
                )
                .await;
                match &outcome {
                    Hold::Short(short) => {
                        return Err(CartError::Conflict(format!("{} You have {} in your cart.", holds::short_note(&name, short), item.quantity)))
                    }
                    Hold::Refused(error) => return Err(CartError::Refused(error.clone())),
                    Hold::Held(_) | Hold::Unavailable(_) => {}
                }
                let record = holds::record(&outcome, &name, item.reservation_id.as_ref(), &key);
                let seen = item.price.as_ref().map(|price| price.price_minor).or(item.seen_price_minor);
                let mut connection = runtime.db.acquire().await?;
                store::put_item(&mut connection, &cart.id, &sku, quantity, seen, &record).await?;
            }
        }
    }
    view(runtime, shopper, Some(cart)).await
}

/// The cart page's data; holds are brought up to date first (extended while the shopper is active).
pub async fn view(runtime: &FragmentRuntime, shopper: &Shopper, cart: Option<CartRow>) -> Result<CartView, CartError> {
    let Some(cart) = cart else {
        return Ok(CartView {
            user: shopper.user.clone(),
            lines: Vec::new(),
            item_count: 0,
            subtotal: money(0, tessera_contracts::demo::CURRENCY),
            locked: false,
        });
    };
    if !cart.is_locked() {
        let _guard = holds::lock(runtime, &cart.id).await?;
        if let Err(error) = holds::refresh(runtime, &cart.id).await {
            tracing::warn!(%error, cart = %cart.id, "could not refresh the cart's holds");
        }
    }
    let mut connection = runtime.db.acquire().await?;
    let items = store::items(&mut connection, &cart.id).await?;
    let now = now_ms();
    let lines: Vec<LineView> = items.iter().map(|item| line_view(item, now)).collect();
    let currency = lines.first().map(|line| line.unit_price.currency.clone()).unwrap_or_else(|| tessera_contracts::demo::CURRENCY.to_owned());
    let subtotal = lines.iter().map(|line| line.line_total.minor).sum();
    Ok(CartView {
        user: shopper.user.clone(),
        item_count: items.iter().map(|item| item.quantity.get()).sum(),
        subtotal: money(subtotal, &currency),
        lines,
        locked: cart.is_locked(),
    })
}

fn line_view(item: &Item, now: i64) -> LineView {
    let (product_id, name, unit, currency, price_note) = match &item.price {
        Some(price) => {
            let note = item.seen_price_minor.filter(|seen| *seen != price.price_minor).map(|seen| {
                format!("The price changed from {} to {} since you added it.", money(seen, &price.currency), money(price.price_minor, &price.currency))
            });
            (price.product_id.clone(), price.name.clone(), price.price_minor, price.currency.clone(), note)
        }
        None => (
            String::new(),
            item.sku.to_string(),
            0,
            tessera_contracts::demo::CURRENCY.to_owned(),
            Some("This item is no longer sold; remove it to check out.".into()),
        ),
    };
    LineView {
        sku: item.sku.to_string(),
        product_id,
        name,
        quantity: item.quantity.get(),
        unit_price: money(unit, &currency),
        line_total: money(unit * item.quantity.get(), &currency),
        hold: item.hold,
        hold_text: holds::hold_text(item, now),
        held_until_ms: item.held_until_ms,
        price_note,
    }
}

/// The lines the shopper sees, on every surface (the cart page, the home page's widget, the badge): the
/// user's cart with a guest cart not merged yet folded in as the merge will fold it. Read-only, for GET
/// requests: nothing is merged or created here.
pub async fn visible_items(runtime: &FragmentRuntime, shopper: &Shopper) -> Result<Vec<Item>, sqlx::Error> {
    store::visible_items(&runtime.db, shopper.user.as_ref().map(|user| user.id.as_str()), shopper.token.as_deref()).await
}

/// The badge count: the sum of [`visible_items`].
pub async fn count(runtime: &FragmentRuntime, shopper: &Shopper) -> Result<i64, sqlx::Error> {
    Ok(visible_items(runtime, shopper).await?.iter().map(|item| item.quantity.get()).sum())
}

/// The shopper is active somewhere on the site (the shell asked for their badge): bring their cart's
/// holds up to date in the background, so a hold lasts while they browse, not only on the cart page.
/// Never merges or creates anything, and the badge does not wait for it.
pub fn touch(runtime: &FragmentRuntime, shopper: &Shopper) {
    let (runtime, shopper) = (runtime.clone(), shopper.clone());
    tokio::spawn(async move {
        let cart = match (&shopper.user, &shopper.token) {
            (Some(user), _) => store::user_cart(&runtime.db, &user.id).await,
            (None, Some(token)) => store::guest_cart(&runtime.db, token).await,
            (None, None) => return,
        };
        if let Ok(Some(cart)) = cart {
            if !cart.is_locked() {
                let Ok(_guard) = holds::lock(&runtime, &cart.id).await else {
                    return;
                };
                if let Err(error) = holds::refresh(&runtime, &cart.id).await {
                    tracing::warn!(%error, cart = %cart.id, "could not refresh the cart's holds");
                }
            }
        }
    });
}

/// Retries the holds of carts whose lines are pending (inventory was down).
pub async fn retry_pending(runtime: &FragmentRuntime) -> Result<(), sqlx::Error> {
    for cart_id in store::carts_needing_holds(&runtime.db, 20).await? {
        let _guard = match holds::lock(runtime, &cart_id).await {
            Ok(guard) => guard,
            // Being changed right now: its holds are refreshed there, or at the next pass.
            Err(LeaseError::Busy(_)) => continue,
            Err(LeaseError::Database(error)) => return Err(error),
        };
        holds::refresh(runtime, &cart_id).await?;
    }
    Ok(())
}
