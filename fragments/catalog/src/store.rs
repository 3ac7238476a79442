//! The catalog's SQL: products, variants, categories and the search index, and the listing, detail
//! and featured reads the pages and server functions make. (The availability projection is
//! `availability`'s.) One query text serves both backends; search is FTS5 on SQLite and a tsvector on
//! PostgreSQL.

use sqlx::{AnyConnection, AnyPool};
use tessera_contracts::domain::{Money, Sku};
use tessera_contracts::events::ProductChanged;
use tessera_contracts::ApiError;
use {tessera_fragment::db::now_ms, tessera_fragment::outbox::Outbox};

use crate::model::{Card, Category, Detail, Filters, Listing, Sort, ValidProduct, VariantView, PER_PAGE};

/// Whether the pool talks to PostgreSQL (search differs: tsvector there, FTS5 on SQLite).
pub fn is_postgres(db: &AnyPool) -> bool {
    db.connect_options().database_url.scheme().starts_with("postgres")
}

/// The image of a product: its URL, or the generated SVG.
pub fn image(id: &str, url: Option<String>) -> String {
    url.unwrap_or_else(|| format!("{}/img/{id}.svg", crate::PREFIX))
}

const CARD_COLUMNS: &str = "p.id, p.name, p.brand, p.price_minor, p.currency, p.image_url, \
    (SELECT CAST(SUM(a.available) AS BIGINT) FROM variants v JOIN availability a ON a.sku = v.sku WHERE v.product_id = p.id), \
    (SELECT MIN(v.sku) FROM variants v WHERE v.product_id = p.id), \
    (SELECT COUNT(*) FROM variants v WHERE v.product_id = p.id)";

type CardRow = (String, String, String, i64, String, Option<String>, Option<i64>, Option<String>, i64);

fn card((id, name, brand, minor, currency, url, available, sku, variants): CardRow) -> Card {
    Card { image: image(&id, url), id, name, brand, price: Money { minor, currency }, available, single_sku: sku.filter(|_| variants == 1) }
}

pub async fn categories(db: &AnyPool) -> Result<Vec<Category>, sqlx::Error> {
    let rows: Vec<(String, String, Option<String>)> =
        sqlx::query_as("SELECT slug, name, parent_slug FROM categories ORDER BY position, name").fetch_all(db).await?;
    Ok(rows.into_iter().map(|(slug, name, parent)| Category { slug, name, parent }).collect())
}

/// Binds `$1`–`$8` of the listing's filter conditions.
fn bind_filters<'q, O>(
    query: sqlx::query::QueryAs<'q, sqlx::Any, O, sqlx::any::AnyArguments<'q>>,
    search: &str,
    filters: &Filters,
) -> sqlx::query::QueryAs<'q, sqlx::Any, O, sqlx::any::AnyArguments<'q>> {
    let (attr_name, attr_value) = filters.attr.clone().unwrap_or_default();
    query
        .bind(search.to_owned())
        .bind(filters.cat.clone())
        .bind(filters.brand.clone())
        .bind(filters.min_minor.unwrap_or(-1))
        .bind(filters.max_minor.unwrap_or(-1))
        .bind(attr_name)
        .bind(attr_value)
        .bind(i64::from(filters.in_stock))
}

/// The listing: the search narrows (and ranks), the filters narrow, the sort orders, the page slices.
pub async fn listing(db: &AnyPool, filters: &Filters) -> Result<Listing, sqlx::Error> {
    let postgres = is_postgres(db);
    let searching = !filters.words.is_empty();
    // Words are letters and digits only, so quoting them makes any input a valid search.
    let (search_join, rank) = match (searching, postgres) {
        (false, _) => (String::new(), "0"),
        (true, false) => (
            "JOIN (SELECT id, bm25(product_search, 10.0, 5.0, 1.0) AS rank FROM product_search WHERE product_search MATCH $1) s ON s.id = p.id".to_owned(),
            "s.rank",
        ),
        (true, true) => ("JOIN (SELECT to_tsquery('english', $1) AS query) s ON p.search @@ s.query".to_owned(), "-ts_rank(p.search, s.query)"),
    };
    let search = if postgres {
        filters.words.iter().map(|w| format!("{w}:*")).collect::<Vec<_>>().join(" & ")
    } else {
        filters.words.iter().map(|w| format!("\"{w}\"*")).collect::<Vec<_>>().join(" ")
    };
    let conditions = "($2 = '' OR p.category_slug = $2 OR p.category_slug IN (SELECT slug FROM categories WHERE parent_slug = $2)) \
         AND ($3 = '' OR p.brand = $3) AND ($4 < 0 OR p.price_minor >= $4) AND ($5 < 0 OR p.price_minor <= $5) \
         AND ($6 = '' OR EXISTS (SELECT 1 FROM variants v JOIN variant_attributes a ON a.sku = v.sku \
              WHERE v.product_id = p.id AND a.name = $6 AND a.value = $7)) \
         AND ($8 = 0 OR EXISTS (SELECT 1 FROM variants v JOIN availability av ON av.sku = v.sku WHERE v.product_id = p.id AND av.available > 0))";
    let search_param = if searching { search } else { String::new() };
    // Without a search, `$1` is unused; keep it in the text so both backends see the same parameters.
    let unused = if searching { "" } else { "AND $1 = $1 " };
    let from = format!("FROM products p {search_join} WHERE {conditions} {unused}");
    let count_sql = format!("SELECT COUNT(*) {from}");
    let (total,): (i64,) = bind_filters(sqlx::query_as(&count_sql), &search_param, filters).fetch_one(db).await?;
    let pages = ((total + PER_PAGE - 1) / PER_PAGE).max(1);
    let page = filters.page.min(pages);
    let order = match filters.sort {
        Sort::Relevance if searching => format!("{rank}, p.name"),
        Sort::Relevance | Sort::Name => "p.name, p.id".to_owned(),
        Sort::Price => "p.price_minor, p.name".to_owned(),
        Sort::PriceDesc => "p.price_minor DESC, p.name".to_owned(),
        Sort::Newest => "p.created_at DESC, p.id".to_owned(),
    };
    // Two steps: the page's ids (filter, order, slice: cheap), then the cards of just those ids, so the
    // per-card subqueries never run for rows an OFFSET skips or a sort discards.
    let ids_sql = format!("SELECT p.id {from} ORDER BY {order} LIMIT $9 OFFSET $10");
    let ids: Vec<(String,)> = bind_filters(sqlx::query_as(&ids_sql), &search_param, filters).bind(PER_PAGE).bind((page - 1) * PER_PAGE).fetch_all(db).await?;
    let cards = cards_of(db, ids.into_iter().map(|(id,)| id).collect()).await?;
    let facets: Vec<(String, String)> = sqlx::query_as("SELECT kind, value FROM facets ORDER BY kind, value").fetch_all(db).await?;
    let of = |kind: &str| facets.iter().filter(|(k, _)| k == kind).map(|(_, v)| v.clone()).collect::<Vec<_>>();
    Ok(Listing { cards, total, page, pages, categories: categories(db).await?, brands: of("brand"), attributes: of("attribute") })
}

/// The cards of `ids`, in that order.
async fn cards_of(db: &AnyPool, ids: Vec<String>) -> Result<Vec<Card>, sqlx::Error> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let placeholders: Vec<String> = (1..=ids.len()).map(|n| format!("${n}")).collect();
    let sql = format!("SELECT {CARD_COLUMNS} FROM products p WHERE p.id IN ({})", placeholders.join(", "));
    let mut query = sqlx::query_as::<_, CardRow>(&sql);
    for id in &ids {
        query = query.bind(id.clone());
    }
    let mut cards: Vec<Card> = query.fetch_all(db).await?.into_iter().map(card).collect();
    cards.sort_by_key(|card| ids.iter().position(|id| *id == card.id));
    Ok(cards)
}

/// Products for the home page: featured first, then the newest.
pub async fn featured(db: &AnyPool, limit: i64) -> Result<Vec<Card>, sqlx::Error> {
    let rows: Vec<CardRow> = sqlx::query_as(&format!("SELECT {CARD_COLUMNS} FROM products p ORDER BY p.featured DESC, p.created_at DESC, p.id LIMIT $1"))
        .bind(limit)
        .fetch_all(db)
        .await?;
    Ok(rows.into_iter().map(card).collect())
}

pub async fn detail(db: &AnyPool, id: &str) -> Result<Option<Detail>, sqlx::Error> {
    if id.is_empty() || id.len() > 80 {
        return Ok(None);
    }
    type DetailRow = (String, String, String, String, i64, String, Option<String>, Option<String>);
    let row: Option<DetailRow> =
        sqlx::query_as("SELECT id, name, brand, description, price_minor, currency, image_url, category_slug FROM products WHERE id = $1")
            .bind(id)
            .fetch_optional(db)
            .await?;
    let Some((id, name, brand, description, minor, currency, url, category)) = row else {
        return Ok(None);
    };
    let variants: Vec<(String, String, Option<i64>)> = sqlx::query_as(
        "SELECT v.sku, v.label, a.available FROM variants v LEFT JOIN availability a ON a.sku = v.sku WHERE v.product_id = $1 ORDER BY v.position, v.sku",
    )
    .bind(&id)
    .fetch_all(db)
    .await?;
    let all = categories(db).await?;
    let mut trail = Vec::new();
    let mut next = category;
    while let Some(slug) = next.take() {
        if let Some(found) = all.iter().find(|c| c.slug == slug) {
            next = found.parent.clone();
            trail.insert(0, found.clone());
        }
        if trail.len() > 8 {
            break;
        }
    }
    Ok(Some(Detail {
        image: image(&id, url),
        id,
        name,
        brand,
        description,
        price: Money { minor, currency },
        trail,
        variants: variants.into_iter().map(|(sku, label, available)| VariantView { sku, label, available }).collect(),
    }))
}

/// Keeps the SQLite search index in step with a product (PostgreSQL's is a generated column).
async fn index(connection: &mut AnyConnection, postgres: bool, id: &str) -> Result<(), sqlx::Error> {
    if postgres {
        return Ok(());
    }
    sqlx::query("DELETE FROM product_search WHERE id = $1").bind(id).execute(&mut *connection).await?;
    sqlx::query("INSERT INTO product_search (id, name, brand, description) SELECT id, name, brand, description FROM products WHERE id = $1")
        .bind(id)
        .execute(&mut *connection)
        .await?;
    Ok(())
}

/// A variant to insert: SKU, label, attributes (name, value).
pub type NewVariant = (String, String, Vec<(String, String)>);

/// A demo or editor product with its variants, in the caller's transaction (no event).
pub struct NewProduct<'a> {
    pub id: &'a str,
    pub name: &'a str,
    pub brand: &'a str,
    pub category: Option<&'a str>,
    pub description: &'a str,
    pub price_minor: i64,
    pub currency: &'a str,
    pub created_at: i64,
    pub variants: Vec<NewVariant>,
}

pub async fn insert(connection: &mut AnyConnection, postgres: bool, product: &NewProduct<'_>) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO products (id, name, brand, category_slug, description, price_minor, currency, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8)",
    )
    .bind(product.id)
    .bind(product.name)
    .bind(product.brand)
    .bind(product.category)
    .bind(product.description)
    .bind(product.price_minor)
    .bind(product.currency)
    .bind(product.created_at)
    .execute(&mut *connection)
    .await?;
    for (position, (sku, label, attributes)) in product.variants.iter().enumerate() {
        sqlx::query("INSERT INTO variants (sku, product_id, label, position) VALUES ($1, $2, $3, $4)")
            .bind(sku)
            .bind(product.id)
            .bind(label)
            .bind(position as i64)
            .execute(&mut *connection)
            .await?;
        for (name, value) in attributes {
            sqlx::query("INSERT INTO variant_attributes (sku, name, value) VALUES ($1, $2, $3)")
                .bind(sku)
                .bind(name)
                .bind(value)
                .execute(&mut *connection)
                .await?;
            add_facet(connection, "attribute", &format!("{name}:{value}")).await?;
        }
    }
    add_facet(connection, "brand", product.brand).await?;
    index(connection, postgres, product.id).await
}

/// Offers `value` in the filter form from now on.
async fn add_facet(connection: &mut AnyConnection, kind: &str, value: &str) -> Result<(), sqlx::Error> {
    if value.is_empty() {
        return Ok(());
    }
    sqlx::query("INSERT INTO facets (kind, value) VALUES ($1, $2) ON CONFLICT (kind, value) DO NOTHING")
        .bind(kind)
        .bind(value)
        .execute(&mut *connection)
        .await?;
    Ok(())
}

/// Why a save failed: the editor's mistake, or the database (retried when transient).
enum SaveError {
    Api(ApiError),
    Db(sqlx::Error),
}

impl From<sqlx::Error> for SaveError {
    fn from(error: sqlx::Error) -> SaveError {
        SaveError::Db(error)
    }
}

impl tessera_fragment::db::AsDbError for SaveError {
    fn db_error(&self) -> Option<&sqlx::Error> {
        match self {
            SaveError::Db(error) => Some(error),
            SaveError::Api(_) => None,
        }
    }
}

/// Saves an editor's product and announces it, in one transaction (retried on a write conflict).
pub async fn save(db: &AnyPool, outbox: &Outbox, product: &ValidProduct) -> Result<(), ApiError> {
    match tessera_fragment::db::retrying(|| try_save(db, outbox, product)).await {
        Ok(()) => {
            outbox.committed();
            Ok(())
        }
        Err(SaveError::Api(error)) => Err(error),
        Err(SaveError::Db(error)) => Err(tessera_fragment::internal(error)),
    }
}

async fn try_save(db: &AnyPool, outbox: &Outbox, product: &ValidProduct) -> Result<(), SaveError> {
    let postgres = is_postgres(db);
    let mut tx = db.begin().await?;
    let category = match product.category.as_str() {
        "" => None,
        slug => {
            let found: Option<(String,)> = sqlx::query_as("SELECT slug FROM categories WHERE slug = $1").bind(slug).fetch_optional(&mut *tx).await?;
            Some(found.ok_or_else(|| SaveError::Api(ApiError::BadRequest(format!("there is no category {slug:?}"))))?.0)
        }
    };
    let now = now_ms();
    match &product.sku {
        Some(sku) => {
            let taken: Option<(String,)> = sqlx::query_as("SELECT id FROM products WHERE id = $1 UNION ALL SELECT sku FROM variants WHERE sku = $2")
                .bind(&product.id)
                .bind(sku.as_str())
                .fetch_optional(&mut *tx)
                .await?;
            if taken.is_some() {
                return Err(SaveError::Api(ApiError::Conflict(format!("a product named like {:?} or the SKU {sku} exists already", product.name))));
            }
            let new = NewProduct {
                id: &product.id,
                name: &product.name,
                brand: &product.brand,
                category: category.as_deref(),
                description: &product.description,
                price_minor: product.price_minor,
                currency: tessera_contracts::demo::CURRENCY,
                created_at: now,
                variants: vec![(sku.to_string(), String::new(), Vec::new())],
            };
            insert(&mut tx, postgres, &new).await?;
            sqlx::query("UPDATE products SET image_url = $1 WHERE id = $2").bind(product.image.as_deref()).bind(&product.id).execute(&mut *tx).await?;
        }
        None => {
            let updated = sqlx::query(
                "UPDATE products SET name = $1, brand = $2, category_slug = $3, description = $4, price_minor = $5, updated_at = $6, \
                 image_url = $8 WHERE id = $7",
            )
            .bind(&product.name)
            .bind(&product.brand)
            .bind(category.as_deref())
            .bind(&product.description)
            .bind(product.price_minor)
            .bind(now)
            .bind(&product.id)
            .bind(product.image.as_deref())
            .execute(&mut *tx)
            .await?;
            if updated.rows_affected() == 0 {
                return Err(SaveError::Api(ApiError::NotFound(format!("there is no product {:?}", product.id))));
            }
            add_facet(&mut tx, "brand", &product.brand).await?;
            index(&mut tx, postgres, &product.id).await?;
        }
    }
    let skus: Vec<(Sku,)> = sqlx::query_as("SELECT sku FROM variants WHERE product_id = $1 ORDER BY sku").bind(&product.id).fetch_all(&mut *tx).await?;
    let (currency,): (String,) = sqlx::query_as("SELECT currency FROM products WHERE id = $1").bind(&product.id).fetch_one(&mut *tx).await?;
    let event = ProductChanged {
        product_id: product.id.clone(),
        name: product.name.clone(),
        price_minor: product.price_minor,
        currency,
        skus: skus.into_iter().map(|(s,)| s).collect(),
    };
    outbox.enqueue(&mut tx, &event).await?;
    tx.commit().await?;
    Ok(())
}
