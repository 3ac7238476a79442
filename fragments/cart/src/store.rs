//! The cart's tables `carts` and `cart_items`, and its projections of other services' events (`prices`
//! from the catalog, `stock` from inventory): every statement on them is here, and the other modules
//! call these functions. (The order tables are `orders`'.) Every query is scoped by a cart id the caller
//! resolved from the verified user or the anonymous cookie, never by one taken from a request.

use sqlx::{AnyConnection, AnyPool};
use tessera_contracts::domain::{CartId, Quantity, ReservationId, Sku};
use tessera_contracts::events::{ProductChanged, StockChanged};
use tessera_fragment::db::now_ms;

use crate::model::HoldState;

/// Who is shopping: the signed-in user, or the holder of an anonymous cart cookie (or both, just after
/// signing in, until the anonymous cart is merged).
#[derive(Debug, Clone, Default)]
pub struct Shopper {
    pub user: Option<shared_auth::SessionUser>,
    /// The anonymous cart cookie's value, if it has a plausible shape.
    pub token: Option<String>,
}

impl Shopper {
    /// The shopper of a request with these headers and verified user.
    pub fn from_headers(user: Option<shared_auth::SessionUser>, headers: &axum::http::HeaderMap) -> Shopper {
        let token = headers
            .get_all(axum::http::header::COOKIE)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(name, _)| *name == crate::model::CART_COOKIE)
            .map(|(_, value)| value.to_owned())
            .filter(|value| value.len() == 32 && value.chars().all(|c| c.is_ascii_hexdigit()));
        Shopper { user, token }
    }

    /// The reference inventory shows staff for this shopper's order holds.
    pub fn owner(&self) -> String {
        match (&self.user, &self.token) {
            (Some(user), _) => user_owner(&user.id),
            (None, Some(token)) => format!("guest {}", &token[..8]),
            (None, None) => "guest".into(),
        }
    }
}

/// The reference inventory shows staff for a user's order hold.
pub fn user_owner(user_id: &str) -> String {
    format!("user {user_id}")
}

/// The reference inventory shows staff for a cart line's hold. It depends only on the cart, so a retried
/// attempt sends exactly the request it sent before.
pub fn cart_owner(cart_id: &CartId) -> String {
    format!("cart {cart_id}")
}

/// A new anonymous cart token (128 random bits, hex).
pub fn new_token() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// What the database keeps of an anonymous token: its SHA-256, so a leaked table does not leak carts.
pub fn token_hash(token: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    digest.as_ref().iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Where a cart is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CartStatus {
    /// The shopper may change it.
    Open,
    /// An order is being placed from it: it cannot change until that ends (ordered, or open again).
    CheckingOut,
    /// Its order was placed; the shopper's next line starts a new cart.
    Ordered,
    /// A guest cart whose lines moved into the user's cart at sign-in.
    Merged,
}

impl CartStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            CartStatus::Open => "open",
            CartStatus::CheckingOut => "checking_out",
            CartStatus::Ordered => "ordered",
            CartStatus::Merged => "merged",
        }
    }
    pub fn parse(text: &str) -> Option<CartStatus> {
        [CartStatus::Open, CartStatus::CheckingOut, CartStatus::Ordered, CartStatus::Merged].into_iter().find(|status| status.as_str() == text)
    }
}

tessera_fragment::text_column!(CartStatus);

/// A cart's id and status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CartRow {
    pub id: CartId,
    pub status: CartStatus,
    /// Whose it is: a signed-in user's (`true`) or a guest's.
    pub of_user: bool,
}

impl CartRow {
    pub fn is_locked(&self) -> bool {
        self.status == CartStatus::CheckingOut
    }
}

/// A cart's columns as [`CartRow`] reads them.
const CART_COLUMNS: &str = "id, status, user_id";

fn cart_of((id, status, user_id): (CartId, CartStatus, Option<String>)) -> CartRow {
    CartRow { id, status, of_user: user_id.is_some() }
}

/// A cart by id, whatever its status.
pub async fn cart(connection: &mut AnyConnection, cart_id: &CartId) -> Result<Option<CartRow>, sqlx::Error> {
    let row = sqlx::query_as(&format!("SELECT {CART_COLUMNS} FROM carts WHERE id = $1")).bind(cart_id).fetch_optional(&mut *connection).await?;
    Ok(row.map(cart_of))
}

/// The status of a cart that exists.
pub async fn cart_status(db: &AnyPool, cart_id: &CartId) -> Result<CartStatus, sqlx::Error> {
    let (status,): (CartStatus,) = sqlx::query_as("SELECT status FROM carts WHERE id = $1").bind(cart_id).fetch_one(db).await?;
    Ok(status)
}

/// The signed-in user's active cart (open or being checked out).
pub async fn user_cart(db: &AnyPool, user_id: &str) -> Result<Option<CartRow>, sqlx::Error> {
    let row = sqlx::query_as(&format!("SELECT {CART_COLUMNS} FROM carts WHERE user_id = $1 AND status IN ($2, $3)"))
        .bind(user_id)
        .bind(CartStatus::Open)
        .bind(CartStatus::CheckingOut)
        .fetch_optional(db)
        .await?;
    Ok(row.map(cart_of))
}

/// How long a guest's cart cookie lives (set once, when the cart is made): a guest cart older than this
/// can never be reached again.
pub const GUEST_COOKIE_SECONDS: i64 = 30 * 24 * 3600;

/// Deletes guest carts no cookie can reach any more (made more than [`GUEST_COOKIE_SECONDS`] before
/// `now_ms`), with their lines; their holds ran out long ago (a hold lives 15 minutes past the last visit).
/// A cart with an order is never deleted. Returns how many carts went.
pub async fn prune_guest_carts(db: &AnyPool, now_ms: i64) -> Result<u64, sqlx::Error> {
    let cutoff = now_ms - GUEST_COOKIE_SECONDS * 1000;
    // The one read of another module's table: whether an order (`orders`') points at the cart, in the
    // same statement as the delete, so an order placed meanwhile keeps its cart.
    let abandoned = "SELECT id FROM carts WHERE user_id IS NULL AND created_at_ms < $1 AND status IN ($2, $3) \
                     AND NOT EXISTS (SELECT 1 FROM orders WHERE orders.cart_id = carts.id)";
    let (items, carts) = (format!("DELETE FROM cart_items WHERE cart_id IN ({abandoned})"), format!("DELETE FROM carts WHERE id IN ({abandoned})"));
    let mut tx = db.begin().await?;
    sqlx::query(&items).bind(cutoff).bind(CartStatus::Open).bind(CartStatus::Merged).execute(&mut *tx).await?;
    let deleted = sqlx::query(&carts).bind(cutoff).bind(CartStatus::Open).bind(CartStatus::Merged).execute(&mut *tx).await?;
    tx.commit().await?;
    Ok(deleted.rows_affected())
}

/// The anonymous cart a cookie token points at, if it is still active.
pub async fn guest_cart(db: &AnyPool, token: &str) -> Result<Option<CartRow>, sqlx::Error> {
    let row = sqlx::query_as(&format!("SELECT {CART_COLUMNS} FROM carts WHERE token_hash = $1 AND status IN ($2, $3)"))
        .bind(token_hash(token))
        .bind(CartStatus::Open)
        .bind(CartStatus::CheckingOut)
        .fetch_optional(db)
        .await?;
    Ok(row.map(cart_of))
}

/// The user's active cart, created if there is none (two racing creations end with the same cart).
pub async fn ensure_user_cart(db: &AnyPool, user_id: &str) -> Result<CartRow, sqlx::Error> {
    if let Some(cart) = user_cart(db, user_id).await? {
        return Ok(cart);
    }
    let now = now_ms();
    sqlx::query(
        "INSERT INTO carts (id, user_id, token_hash, status, created_at_ms, updated_at_ms) VALUES ($1, $2, NULL, $3, $4, $4) \
         ON CONFLICT DO NOTHING",
    )
    .bind(CartId::random())
    .bind(user_id)
    .bind(CartStatus::Open)
    .bind(now)
    .execute(db)
    .await?;
    user_cart(db, user_id).await?.ok_or_else(|| sqlx::Error::RowNotFound)
}

/// A new anonymous cart for `token`.
pub async fn create_guest_cart(db: &AnyPool, token: &str) -> Result<CartRow, sqlx::Error> {
    let id = CartId::random();
    let now = now_ms();
    sqlx::query("INSERT INTO carts (id, user_id, token_hash, status, created_at_ms, updated_at_ms) VALUES ($1, NULL, $2, $3, $4, $4)")
        .bind(&id)
        .bind(token_hash(token))
        .bind(CartStatus::Open)
        .bind(now)
        .execute(db)
        .await?;
    Ok(CartRow { id, status: CartStatus::Open, of_user: false })
}

/// Moves a cart from one status to another; whether this call did it.
pub async fn set_cart_status(connection: &mut AnyConnection, cart_id: &CartId, from: CartStatus, to: CartStatus) -> Result<bool, sqlx::Error> {
    let updated = sqlx::query("UPDATE carts SET status = $1, updated_at_ms = $2 WHERE id = $3 AND status = $4")
        .bind(to)
        .bind(now_ms())
        .bind(cart_id)
        .bind(from)
        .execute(&mut *connection)
        .await?;
    Ok(updated.rows_affected() == 1)
}

/// What the catalog says a SKU is and costs.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Price {
    pub product_id: String,
    pub name: String,
    pub price_minor: i64,
    pub currency: String,
}

pub async fn price(db: &AnyPool, sku: &Sku) -> Result<Option<Price>, sqlx::Error> {
    sqlx::query_as("SELECT product_id, name, price_minor, currency FROM prices WHERE sku = $1").bind(sku).fetch_optional(db).await
}

/// Applies `catalog.product_changed` to the price projection, unless a newer event already did.
pub async fn apply_product_changed(connection: &mut AnyConnection, event: &ProductChanged, sequence: i64) -> Result<(), sqlx::Error> {
    for sku in &event.skus {
        sqlx::query(
            "INSERT INTO prices (sku, product_id, name, price_minor, currency, sequence) VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (sku) DO UPDATE SET product_id = excluded.product_id, name = excluded.name, \
             price_minor = excluded.price_minor, currency = excluded.currency, sequence = excluded.sequence \
             WHERE prices.sequence < excluded.sequence",
        )
        .bind(sku)
        .bind(&event.product_id)
        .bind(&event.name)
        .bind(event.price_minor)
        .bind(&event.currency)
        .bind(sequence)
        .execute(&mut *connection)
        .await?;
    }
    Ok(())
}

/// One item of a cart with its current catalog price (if the catalog still sells it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    pub sku: Sku,
    pub quantity: Quantity,
    pub seen_price_minor: Option<i64>,
    pub reservation_id: Option<ReservationId>,
    pub held_until_ms: Option<i64>,
    pub hold: HoldState,
    pub hold_note: Option<String>,
    /// The key of an attempt whose answer never came, to send again.
    pub hold_key: Option<String>,
    pub price: Option<Price>,
}

/// The columns of [`StoredItem`], for a query over `cart_items i LEFT JOIN prices p`.
const ITEM_COLUMNS: &str = "i.sku, i.quantity, i.seen_price_minor, i.reservation_id, i.held_until_ms, i.hold_state, i.hold_note, i.hold_key, \
                            p.product_id, p.name, p.price_minor, p.currency";

/// A line as [`ITEM_COLUMNS`] read it: the price's columns are empty when the catalog no longer sells
/// the SKU.
#[derive(sqlx::FromRow)]
struct StoredItem {
    sku: Sku,
    quantity: Quantity,
    seen_price_minor: Option<i64>,
    reservation_id: Option<ReservationId>,
    held_until_ms: Option<i64>,
    hold_state: HoldState,
    hold_note: Option<String>,
    hold_key: Option<String>,
    product_id: Option<String>,
    name: Option<String>,
    price_minor: Option<i64>,
    currency: Option<String>,
}

impl From<StoredItem> for Item {
    fn from(row: StoredItem) -> Item {
        let price = match (row.product_id, row.name, row.price_minor, row.currency) {
            (Some(product_id), Some(name), Some(price_minor), Some(currency)) => Some(Price { product_id, name, price_minor, currency }),
            _ => None,
        };
        Item {
            sku: row.sku,
            quantity: row.quantity,
            seen_price_minor: row.seen_price_minor,
            reservation_id: row.reservation_id,
            held_until_ms: row.held_until_ms,
            hold: row.hold_state,
            hold_note: row.hold_note,
            hold_key: row.hold_key,
            price,
        }
    }
}

pub async fn items(connection: &mut AnyConnection, cart_id: &CartId) -> Result<Vec<Item>, sqlx::Error> {
    let rows: Vec<StoredItem> = sqlx::query_as(&format!(
        "SELECT {ITEM_COLUMNS} FROM cart_items i LEFT JOIN prices p ON p.sku = i.sku WHERE i.cart_id = $1 ORDER BY i.added_at_ms, i.sku"
    ))
    .bind(cart_id)
    .fetch_all(&mut *connection)
    .await?;
    Ok(rows.into_iter().map(Item::from).collect())
}

/// The lines of the signed-in user's active cart and of the guest cart the cookie points at, read in one
/// statement, so a merge moving lines from one to the other in between cannot hide them (the badge once
/// read 0 on a cart page showing a line). The caller folds them as a merge would ([`fold_lines`]).
pub async fn visible_items(db: &AnyPool, user_id: Option<&str>, token: Option<&str>) -> Result<Vec<Item>, sqlx::Error> {
    if user_id.is_none() && token.is_none() {
        return Ok(Vec::new());
    }
    let rows: Vec<StoredItem> = sqlx::query_as(&format!(
        "SELECT {ITEM_COLUMNS} FROM cart_items i JOIN carts c ON c.id = i.cart_id LEFT JOIN prices p ON p.sku = i.sku \
         WHERE c.status IN ($3, $4) AND (c.user_id = $1 OR c.token_hash = $2) \
         ORDER BY (c.user_id IS NULL), i.added_at_ms, i.sku"
    ))
    .bind(user_id)
    .bind(token.map(token_hash))
    .bind(CartStatus::Open)
    .bind(CartStatus::CheckingOut)
    .fetch_all(db)
    .await?;
    Ok(fold_lines(rows.into_iter().map(Item::from).collect()))
}

/// Lines of one SKU become one, of the summed quantity (at most [`Quantity::MAX`]): what the cart will
/// show once a guest cart is merged into the user's. The first line of a SKU keeps its place.
pub fn fold_lines(items: Vec<Item>) -> Vec<Item> {
    let mut folded: Vec<Item> = Vec::with_capacity(items.len());
    for item in items {
        match folded.iter_mut().find(|line| line.sku == item.sku) {
            Some(line) => line.quantity = line.quantity.saturating_add(item.quantity),
            None => folded.push(item),
        }
    }
    folded
}

/// The sum of quantities in a cart.
pub async fn item_count(db: &AnyPool, cart_id: &CartId) -> Result<i64, sqlx::Error> {
    let (count,): (i64,) =
        sqlx::query_as("SELECT CAST(COALESCE(SUM(quantity), 0) AS BIGINT) FROM cart_items WHERE cart_id = $1").bind(cart_id).fetch_one(db).await?;
    Ok(count)
}

/// How an item's stock is held after a change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HoldRecord {
    pub reservation_id: Option<ReservationId>,
    pub held_until_ms: Option<i64>,
    pub hold: HoldState,
    pub note: Option<String>,
    /// Kept while the hold is pending after an attempt that may have succeeded unseen.
    pub key: Option<String>,
}

/// Writes an item (new or changed) with its hold; the shopper has now seen `seen_price_minor`.
pub async fn put_item(
    connection: &mut AnyConnection,
    cart_id: &CartId,
    sku: &Sku,
    quantity: Quantity,
    seen_price_minor: Option<i64>,
    hold: &HoldRecord,
) -> Result<(), sqlx::Error> {
    let now = now_ms();
    sqlx::query(
        "INSERT INTO cart_items (cart_id, sku, quantity, seen_price_minor, reservation_id, held_until_ms, hold_state, hold_note, hold_key, added_at_ms, updated_at_ms) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $10, $9, $9) \
         ON CONFLICT (cart_id, sku) DO UPDATE SET quantity = excluded.quantity, seen_price_minor = excluded.seen_price_minor, \
         reservation_id = excluded.reservation_id, held_until_ms = excluded.held_until_ms, hold_state = excluded.hold_state, \
         hold_note = excluded.hold_note, hold_key = excluded.hold_key, updated_at_ms = excluded.updated_at_ms",
    )
    .bind(cart_id)
    .bind(sku)
    .bind(quantity)
    .bind(seen_price_minor)
    .bind(&hold.reservation_id)
    .bind(hold.held_until_ms)
    .bind(hold.hold)
    .bind(&hold.note)
    .bind(now)
    .bind(&hold.key)
    .execute(&mut *connection)
    .await?;
    Ok(())
}

/// Updates only the hold of an existing item.
pub async fn set_hold(connection: &mut AnyConnection, cart_id: &CartId, sku: &Sku, hold: &HoldRecord) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE cart_items SET reservation_id = $1, held_until_ms = $2, hold_state = $3, hold_note = $4, updated_at_ms = $5, hold_key = $8 \
         WHERE cart_id = $6 AND sku = $7",
    )
    .bind(&hold.reservation_id)
    .bind(hold.held_until_ms)
    .bind(hold.hold)
    .bind(&hold.note)
    .bind(now_ms())
    .bind(cart_id)
    .bind(sku)
    .bind(&hold.key)
    .execute(&mut *connection)
    .await?;
    Ok(())
}

pub async fn remove_item(connection: &mut AnyConnection, cart_id: &CartId, sku: &Sku) -> Result<bool, sqlx::Error> {
    let deleted = sqlx::query("DELETE FROM cart_items WHERE cart_id = $1 AND sku = $2").bind(cart_id).bind(sku).execute(&mut *connection).await?;
    Ok(deleted.rows_affected() == 1)
}

/// Moves a line from one cart to another (a guest's line into the user's cart, at sign-in).
pub async fn move_item(db: &AnyPool, from_cart: &CartId, to_cart: &CartId, sku: &Sku) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE cart_items SET cart_id = $1 WHERE cart_id = $2 AND sku = $3").bind(to_cart).bind(from_cart).bind(sku).execute(db).await?;
    Ok(())
}

/// Marks every line of a cart as waiting for its hold, with `note` for the shopper (inventory may have
/// taken their stock into a checkout whose answer never came: the retry holds them again).
pub async fn mark_holds_pending(connection: &mut AnyConnection, cart_id: &CartId, note: &str) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE cart_items SET hold_state = $1, hold_note = $2 WHERE cart_id = $3")
        .bind(HoldState::Pending)
        .bind(note)
        .bind(cart_id)
        .execute(&mut *connection)
        .await?;
    Ok(())
}

/// Carts with items whose hold should be retried (inventory was down, or stock may be back).
pub async fn carts_needing_holds(db: &AnyPool, limit: i64) -> Result<Vec<CartId>, sqlx::Error> {
    let rows: Vec<(CartId,)> = sqlx::query_as(
        "SELECT DISTINCT i.cart_id FROM cart_items i JOIN carts c ON c.id = i.cart_id \
         WHERE i.hold_state = $2 AND c.status = $3 AND c.user_id IS NOT NULL LIMIT $1",
    )
    .bind(limit)
    .bind(HoldState::Pending)
    .bind(CartStatus::Open)
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(|(id,)| id).collect())
}

/// `inventory.stock_changed`: the projection of what each SKU has available (a later sequence wins).
pub async fn apply_stock_changed(connection: &mut AnyConnection, event: &StockChanged, sequence: i64) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO stock (sku, available, sequence, updated_at_ms) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (sku) DO UPDATE SET available = excluded.available, sequence = excluded.sequence, updated_at_ms = excluded.updated_at_ms \
         WHERE stock.sequence < excluded.sequence",
    )
    .bind(&event.sku)
    .bind(event.available)
    .bind(sequence)
    .bind(now_ms())
    .execute(&mut *connection)
    .await?;
    Ok(())
}

/// What inventory last announced as available of `sku`; `None` when it has said nothing of it yet.
pub async fn available(db: &AnyPool, sku: &Sku) -> Result<Option<i64>, sqlx::Error> {
    let row: Option<(i64,)> = sqlx::query_as("SELECT available FROM stock WHERE sku = $1").bind(sku).fetch_optional(db).await?;
    Ok(row.map(|(available,)| available))
}

/// Seeds the price projection with the demo catalog, as `catalog.product_changed` would (sequence 0,
/// so any real event wins).
pub async fn seed_prices(db: &AnyPool, extra: usize) -> Result<(), sqlx::Error> {
    let mut tx = db.begin().await?;
    for product in tessera_contracts::demo::catalog(extra) {
        let event = ProductChanged {
            product_id: product.id.clone(),
            name: product.name.clone(),
            price_minor: product.price_minor,
            currency: tessera_contracts::demo::CURRENCY.to_owned(),
            skus: product.variants.iter().map(|variant| variant.sku.clone()).collect(),
        };
        sqlx::query("DELETE FROM prices WHERE sequence = 0 AND product_id = $1").bind(&event.product_id).execute(&mut *tx).await?;
        apply_product_changed(&mut tx, &event, 0).await?;
    }
    tx.commit().await
}
