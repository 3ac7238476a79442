//! The catalog's pages. Every listing state lives in the URL; links and the GET filter form are plain
//! HTML, which the page runtime turns into in-page navigations (no reload; back/forward restore the
//! filters). Everything here renders on the server only, except the `#[island]`s: "Add to cart", the
//! product page's purchase box (variant picker, availability, add) and the product editor's form.

use leptos::either::Either;
use leptos::prelude::*;
use leptos::server_fn::ServerFn;
use shared_auth::SessionUser;
use tessera_contracts::page::{form_of, read, submit};
use tessera_contracts::ApiError;

use crate::model::{Card, Category, Detail, Listing, ListingQuery, ProductInput, VariantView};
use crate::server_fns::{availability_label, SaveProduct};
use crate::PREFIX;

fn signed_in_as(user: Option<SessionUser>) -> impl IntoView {
    match user {
        Some(SessionUser { name, .. }) => view! { <p class="signed-in" data-testid="fragment-user">"Signed in as " <strong>{name}</strong></p> }.into_any(),
        None => view! { <p class="signed-in" data-testid="fragment-user">"Browsing as a guest"</p> }.into_any(),
    }
}

fn availability_badge(available: Option<i64>) -> impl IntoView {
    let (class, label) = availability_label(available);
    view! { <p class=format!("availability availability-{class}") data-testid="availability">{label}</p> }
}

/// The listing at `/catalog` and `/catalog/c/<slug>`, for the filters the handler validated.
#[component]
pub fn ListingPage(query: ListingQuery, listing: Listing, user: Option<SessionUser>) -> impl IntoView {
    view! {
        <section class="catalog">
            <div class="fragment-heading">
                <h1>"Catalog"</h1>
                {signed_in_as(user)}
            </div>
            <Results listing=listing query=query/>
        </section>
    }
}

fn category_nav(categories: &[Category], current: &str) -> impl IntoView {
    let roots = categories.iter().filter(|c| c.parent.is_none()).map(|root| {
        let children = categories
            .iter()
            .filter(|c| c.parent.as_deref() == Some(root.slug.as_str()))
            .map(|child| {
                let current = (child.slug == current).then_some("page");
                let name = child.name.clone();
                view! { <li><a href=format!("{PREFIX}/c/{}", child.slug) aria-current=current>{name}</a></li> }
            })
            .collect_view();
        let current = (root.slug == current).then_some("page");
        let name = root.name.clone();
        view! {
            <li>
                <a href=format!("{PREFIX}/c/{}", root.slug) aria-current=current>{name}</a>
                <ul>{children}</ul>
            </li>
        }
    });
    view! {
        <nav class="categories" aria-label="Categories" data-testid="categories">
            <ul><li><a href=PREFIX.to_owned()>"Everything"</a></li>{roots.collect_view()}</ul>
        </nav>
    }
}

fn options(values: Vec<(String, String)>, selected: &str) -> impl IntoView {
    values
        .into_iter()
        .map(|(value, label)| {
            let is = value == selected;
            view! { <option value=value selected=is>{label}</option> }
        })
        .collect_view()
}

#[component]
fn Results(listing: Listing, query: ListingQuery) -> impl IntoView {
    let Listing { cards, total, page, pages, categories, brands, attributes } = listing;
    let mut category_options = vec![(String::new(), "All categories".to_owned())];
    category_options.extend(categories.iter().map(|c| (c.slug.clone(), if c.parent.is_some() { format!("– {}", c.name) } else { c.name.clone() })));
    let mut brand_options = vec![(String::new(), "All brands".to_owned())];
    brand_options.extend(brands.into_iter().map(|b| (b.clone(), b)));
    let mut attribute_options = vec![(String::new(), "Any colour or size".to_owned())];
    attribute_options.extend(attributes.into_iter().map(|a| (a.clone(), a.replace(':', ": "))));
    let sorts = [("", "Best match"), ("name", "Name"), ("price", "Price, low to high"), ("price_desc", "Price, high to low"), ("newest", "Newest")]
        .into_iter()
        .map(|(v, l)| (v.to_owned(), l.to_owned()))
        .collect();
    let in_stock = !query.stock.is_empty();
    let previous = (page > 1).then(|| view! { <a href=query.href(page - 1) rel="prev">"← Previous"</a> });
    let next = (page < pages).then(|| view! { <a href=query.href(page + 1) rel="next">"Next →"</a> });
    let cards = cards.into_iter().map(|card| view! { <ProductCard card=card/> }).collect_view();
    // Categories beside the results and the filters above them; on a phone both fold into a line each
    // (`<details>`, shown open on wide screens by the stylesheet), so the first products are on the
    // first screen.
    view! {
        <div class="listing">
            <details class="fold listing-side">
                <summary>"Categories"</summary>
                {category_nav(&categories, &query.cat)}
            </details>
            <div class="listing-main">
                <details class="fold">
                    <summary>"Search and filters"</summary>
                    <form method="get" action=PREFIX class="listing-filters" role="search" data-testid="listing-form">
                        <label class="field search-field">
                            <span>"Search"</span>
                            <input type="search" name="q" value=query.q.clone() placeholder="Name, brand or description" maxlength="200" data-testid="catalog-search"/>
                        </label>
                        <label class="field"><span>"Category"</span><select name="cat">{options(category_options, &query.cat)}</select></label>
                        <label class="field"><span>"Brand"</span><select name="brand" data-testid="brand-filter">{options(brand_options, &query.brand)}</select></label>
                        <label class="field"><span>"Colour or size"</span><select name="attr">{options(attribute_options, &query.attr)}</select></label>
                        <fieldset class="field price-range">
                            <legend>"Price"</legend>
                            <input type="number" name="min" min="0" step="0.01" value=query.min.clone() class="price-input" placeholder="from" aria-label="Lowest price"/>
                            <span aria-hidden="true">"–"</span>
                            <input type="number" name="max" min="0" step="0.01" value=query.max.clone() class="price-input" placeholder="to" aria-label="Highest price"/>
                        </fieldset>
                        <label class="field"><span>"Sort"</span><select name="sort">{options(sorts, &query.sort)}</select></label>
                        <label class="check"><input type="checkbox" name="stock" value="1" checked=in_stock data-testid="in-stock"/> "In stock only"</label>
                        <button type="submit">"Search"</button>
                    </form>
                </details>
                <p class="result-count" data-testid="result-count">{total} " products"</p>
                <ul class="products" data-testid="product-list">{cards}</ul>
                <p class="pager" data-testid="pager">{previous} " Page " {page} " of " {pages} " " {next}</p>
            </div>
        </div>
    }
}

#[component]
fn ProductCard(card: Card) -> impl IntoView {
    let href = format!("{PREFIX}/p/{}", card.id);
    let add = card.single_sku.clone().map(|sku| view! { <AddToCart sku=sku/> });
    view! {
        <li class="product" data-product=card.id.clone() data-sku=card.single_sku.clone().unwrap_or_default()>
            // The picture repeats the name's link: one tab stop and one name per product for assistive technology.
            <a href=href.clone() aria-hidden="true" tabindex="-1"><img src=card.image.clone() alt="" width="160" height="120" loading="lazy"/></a>
            <h2><a href=href>{card.name.clone()}</a></h2>
            <p class="brand">{card.brand.clone()}</p>
            <p class="price">{card.price.to_string()}</p>
            {availability_badge(card.available)}
            {add}
        </li>
    }
}

/// A product page: breadcrumbs, picture, price, the purchase box, description.
#[component]
pub fn ProductPage(detail: Detail) -> impl IntoView {
    let Detail { id, name, brand, description, price, image, trail, variants } = detail;
    let crumbs = trail
        .into_iter()
        .map(|c| {
            let name = c.name;
            view! { <li><a href=format!("{PREFIX}/c/{}", c.slug)>{name}</a></li> }
        })
        .collect_view();
    view! {
        <nav aria-label="Breadcrumbs" class="breadcrumbs" data-testid="breadcrumbs">
            <ol><li><a href=PREFIX.to_owned()>"Catalog"</a></li>{crumbs}<li aria-current="page">{name.clone()}</li></ol>
        </nav>
        <article class="product-page" data-product=id>
            <img src=image alt=name.clone() width="480" height="360"/>
            <div>
                <h1>{name}</h1>
                <p class="brand">{brand}</p>
                <p class="price" data-testid="price">{price.to_string()}</p>
                <Purchase variants=variants/>
                <p class="description">{description}</p>
            </div>
        </article>
    }
}

/// The variant picker (when there is more than one), the chosen SKU, its availability and "Add to cart".
#[island]
fn Purchase(variants: Vec<VariantView>) -> impl IntoView {
    let (selected, set_selected) = signal(variants.first().map(|v| v.sku.clone()).unwrap_or_default());
    let variants_for_status = variants.clone();
    let available = move || selected.with(|sku| variants_for_status.iter().find(|v| &v.sku == sku).and_then(|v| v.available));
    let picker = (variants.len() > 1).then(|| {
        let choices = variants.iter().map(|v| view! { <option value=v.sku.clone()>{v.label.clone()}</option> }).collect_view();
        view! {
            <label class="variant-picker">"Option "
                <select data-testid="variant-picker" on:change=move |ev| set_selected.set(event_target_value(&ev))>{choices}</select>
            </label>
        }
    });
    view! {
        {picker}
        <p class="sku">"SKU " <span data-testid="selected-sku">{move || selected.get()}</span></p>
        {move || availability_badge(available())}
        {add_button(move || selected.get_untracked())}
    }
}

/// "Add to cart" for a card's only SKU.
#[island]
fn AddToCart(sku: String) -> impl IntoView {
    add_button(move || sku.clone())
}

/// Adds one unit of the SKU `sku()` names at the click to the shopper's cart through the cart
/// fragment's API, and says how it went. One copy for both islands.
fn add_button(sku: impl Fn() -> String + 'static) -> impl IntoView {
    let (status, set_status) = signal(None::<String>);
    let (busy, set_busy) = signal(false);
    let on_click = move |_| {
        let sku = sku();
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

/// Create (`/catalog/new`) or edit (`/catalog/p/<id>/edit`) a product: catalog editors only (the
/// handler checks the role before rendering).
#[component]
pub fn EditorPage(existing: Option<Detail>) -> impl IntoView {
    let editing = existing.is_some();
    let input = existing
        .map(|d| ProductInput {
            category: d.trail.last().map(|c| c.slug.clone()).unwrap_or_default(),
            price: format!("{}.{:02}", d.price.minor / 100, d.price.minor % 100),
            sku: String::new(),
            image: if d.image.starts_with(&format!("{PREFIX}/img/")) { String::new() } else { d.image },
            id: d.id,
            name: d.name,
            brand: d.brand,
            description: d.description,
        })
        .unwrap_or_default();
    let sku_field = (!editing).then(|| {
        view! { <label>"SKU (first variant) " <input type="text" name="input[sku]" required maxlength="32" pattern="[A-Z0-9\\-]+"/></label> }
    });
    view! {
        <section class="catalog-editor">
            <h1>{if editing { "Edit product" } else { "New product" }}</h1>
            <ProductEditor>
                <input type="hidden" name="input[id]" value=input.id/>
                <label>"Name " <input type="text" name="input[name]" value=input.name required maxlength="200"/></label>
                <label>"Brand " <input type="text" name="input[brand]" value=input.brand maxlength="80"/></label>
                <label>"Category slug " <input type="text" name="input[category]" value=input.category maxlength="64"/></label>
                <label>"Price (EUR) " <input type="text" name="input[price]" value=input.price required inputmode="decimal"/></label>
                {sku_field}
                <label>"Image URL (empty: a generated picture) " <input type="text" name="input[image]" value=input.image maxlength="500"/></label>
                <label>"Description " <textarea name="input[description]" maxlength="5000">{input.description}</textarea></label>
                <button type="submit">"Save"</button>
            </ProductEditor>
        </section>
    }
}

/// The part of `save_product`'s answer (the product as saved) the editor links to.
#[derive(serde::Deserialize)]
struct Saved {
    id: String,
    name: String,
}

/// The editor's form (its fields are the server-rendered children), saved through `save_product`
/// without leaving the page; without JavaScript the browser posts it itself.
#[island]
fn ProductEditor(children: Children) -> impl IntoView {
    let (outcome, set_outcome) = signal(None::<Result<Saved, ApiError>>);
    let on_submit = move |event: leptos::ev::SubmitEvent| {
        let Some(form) = form_of(&event) else { return };
        leptos::task::spawn_local(async move {
            let saved = submit(&form).await.and_then(|body| read::<Saved>(&body));
            set_outcome.set(Some(saved));
        });
    };
    let message = move || {
        outcome.with(|outcome| match outcome {
            Some(Ok(saved)) => Some(Either::Left(
                view! { <p role="status" data-testid="editor-status">"Saved. " <a href=format!("{PREFIX}/p/{}", saved.id)>"View " {saved.name.clone()}</a></p> },
            )),
            Some(Err(error)) => Some(Either::Right(view! { <p role="status" class="error" data-testid="editor-status">{error.to_string()}</p> })),
            None => None,
        })
    };
    view! {
        <form method="post" action=SaveProduct::PATH class="stacked" data-testid="product-editor" on:submit=on_submit>{children()}</form>
        {message}
    }
}

mod browser {
    use tessera_contracts::cart::{AddItem, CartSummary};
    use tessera_contracts::page::{call, read};

    /// Calls the cart's `add_item` server function and returns a message for the shopper.
    pub async fn add_to_cart(sku: &str) -> String {
        match call(&AddItem { sku: sku.to_owned(), quantity: 1 }).await.and_then(|body| read::<CartSummary>(&body)) {
            Ok(summary) => {
                tessera_contracts::dom_events::announce_cart_count(summary.item_count);
                // The cart may have kept the item without holding it yet (inventory down): say so.
                summary.message.map_or_else(|| "Added to your cart".to_owned(), |message| format!("Added to your cart. {message}"))
            }
            Err(error) => error.to_string(),
        }
    }
}
