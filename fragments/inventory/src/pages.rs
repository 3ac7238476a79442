//! The admin pages: stock table, SKU page (ledger, chart, forms), reservations. Rendered on the server;
//! filters and pages are plain links and GET forms, so every view has an address. The `#[island]`s are the
//! buttons and forms that change stock: each calls its server function, then asks the page runtime to
//! render the page's `data-refresh` regions again and writes the outcome into the page's one status line,
//! so the tables, chart and counters are always the server's own rendering.

use leptos::prelude::*;
use leptos::server_fn::ServerFn;
use tessera_contracts::domain::format_time;
use tessera_contracts::inventory::ReservationStatus;
use tessera_contracts::page::{announce, call, form_of, read, refresh, submit};

use crate::model::{LedgerEntry, ReservationList, ReservationRow, SkuView, StockQuery, StockRow, StockTable, LOW_STOCK};
use crate::server_fns::{reservation_page, sku_detail, stock_page, AdjustStock, FulfilOrder, RecordMovement};
use crate::PREFIX;

fn query_string(query: &StockQuery, page: i64) -> String {
    let mut parts = Vec::new();
    if !query.q.is_empty() {
        parts.push(format!("q={}", query.q.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '-').collect::<String>()));
    }
    if query.low {
        parts.push("low=true".into());
    }
    if !query.sort.is_empty() {
        parts.push(format!("sort={}", query.sort));
    }
    if query.desc {
        parts.push("desc=true".into());
    }
    parts.push(format!("page={page}"));
    format!("{PREFIX}?{}", parts.join("&"))
}

/// The stock table.
#[component]
pub fn StockList(query: StockQuery) -> impl IntoView {
    let fetch_query = query.clone();
    let stock = Resource::new(|| (), move |_| stock_page(fetch_query.clone()));
    let (q, low) = (query.q.clone(), query.low);
    view! {
        <section class="inventory">
            <h1>"Inventory"</h1>
            <nav class="subnav" aria-label="Inventory"><a href=PREFIX>"Stock"</a> " · " <a href=format!("{PREFIX}/reservations")>"Reservations"</a></nav>
            <form method="get" action=PREFIX class="filters" role="search">
                <label>"SKU " <input type="search" name="q" value=q placeholder="e.g. MUG" data-testid="stock-search"/></label>
                <label><input type="checkbox" name="low" value="true" checked=low/> " Low stock only"</label>
                <button type="submit">"Filter"</button>
            </form>
            <details class="new-sku">
                <summary>"Stock a new SKU"</summary>
                <MovementForm form="new-sku".to_owned()>
                    <input type="hidden" name="movement" value="receive"/>
                    <input type="hidden" name="new_sku" value="true"/>
                    <label>"SKU " <input type="text" name="sku" required maxlength="32" pattern="[A-Z0-9\\-]+"/></label>
                    <label>"Units " <input type="number" name="quantity" min="1" required/></label>
                    <label>"Location " <input type="text" name="location" value="main"/></label>
                    <button type="submit">"Receive"</button>
                </MovementForm>
            </details>
            <p class="status" role="status" data-testid="form-status" data-page-status=""></p>
            <div data-refresh="stock">
                <Suspense fallback=|| view! { <p>"Loading stock…"</p> }>
                    {move || stock.get().map(|result| match result {
                        Ok(page) => stock_table(page, query.clone()).into_any(),
                        Err(error) => view! { <p class="error">{error.to_string()}</p> }.into_any(),
                    })}
                </Suspense>
            </div>
        </section>
    }
}

fn stock_table(page: StockTable, query: StockQuery) -> impl IntoView {
    let StockTable { user_name, rows, total, page, pages } = page;
    let sort_link = |column: &'static str, label: &'static str| {
        let desc = query.sort == column && !query.desc;
        let href = query_string(&StockQuery { sort: column.into(), desc, ..query.clone() }, 1);
        view! { <a href=href>{label}</a> }
    };
    let headers = view! {
        <tr>
            <th>{sort_link("sku", "SKU")}</th>
            <th>"Location"</th>
            <th>{sort_link("on_hand", "On hand")}</th>
            <th>{sort_link("reserved", "Reserved")}</th>
            <th>"Unavailable"</th>
            <th>"Safety"</th>
            <th>{sort_link("incoming", "Incoming")}</th>
            <th>{sort_link("available", "Available")}</th>
            <th>"Actions"</th>
        </tr>
    };
    let rows = rows.into_iter().map(stock_row).collect_view();
    let previous = (page > 1).then(|| view! { <a rel="prev" href=query_string(&query, page - 1)>"← Previous"</a> });
    let next = (page < pages).then(|| view! { <a rel="next" href=query_string(&query, page + 1)>"Next →"</a> });
    view! {
        <p class="signed-in" data-testid="fragment-user">"Signed in as " <strong>{user_name}</strong></p>
        <table class="stock" data-testid="stock-table">
            <thead>{headers}</thead>
            <tbody>{rows}</tbody>
        </table>
        <p class="pager" data-testid="pager">
            {previous} " Page " {page} " of " {pages} " (" {total} " SKUs) " {next}
        </p>
    }
}

fn stock_row(row: StockRow) -> impl IntoView {
    let href = format!("{PREFIX}/sku/{}", row.sku);
    let low = row.available < LOW_STOCK;
    let sku = row.sku.to_string();
    view! {
        <tr data-sku=sku.clone() class:low=low>
            <td><a href=href>{sku.clone()}</a></td>
            <td>{row.location}</td>
            <td class="on-hand" data-testid="on-hand">{row.on_hand}</td>
            <td>{row.soft_reserved + row.hard_reserved}</td>
            <td>{row.unavailable}</td>
            <td>{row.safety_stock}</td>
            <td>{row.incoming}</td>
            <td data-testid="available">{row.available}</td>
            <td><AdjustButtons sku=sku.clone()/></td>
        </tr>
    }
}

/// "Receive 1" and "Remove 1" for a row of the stock table.
#[island]
fn AdjustButtons(sku: String) -> impl IntoView {
    let adjust = move |delta: i64| {
        let sku = sku.clone();
        leptos::task::spawn_local(async move {
            match call(&AdjustStock { sku, delta }).await {
                Ok(_) => {
                    refresh().await;
                    announce("");
                }
                Err(error) => announce(&error.to_string()),
            }
        });
    };
    let (receive, remove) = (adjust.clone(), adjust);
    view! {
        <button type="button" on:click=move |_| receive(1)>"Receive 1"</button>
        <button type="button" on:click=move |_| remove(-1)>"Remove 1"</button>
    }
}

/// The part of `record_movement`'s answer (a stock row) the page says back.
#[derive(serde::Deserialize)]
struct Recorded {
    sku: String,
    on_hand: i64,
    available: i64,
}

/// A form posting to `record_movement` (its fields are the server-rendered children; without JavaScript
/// the browser posts it itself); saved, the page's regions are rendered again and the status line says
/// where the SKU now stands.
#[island]
fn MovementForm(form: String, children: Children) -> impl IntoView {
    let new_sku = form == "new-sku";
    let on_submit = move |event: leptos::ev::SubmitEvent| {
        let Some(element) = form_of(&event) else { return };
        leptos::task::spawn_local(async move {
            match submit(&element).await.and_then(|body| read::<Recorded>(&body)) {
                Ok(row) => {
                    refresh().await;
                    if new_sku {
                        announce(&format!("{} stocked: {} on hand.", row.sku, row.on_hand));
                    } else {
                        announce(&format!("Saved: {} on hand, {} available.", row.on_hand, row.available));
                    }
                }
                Err(error) => announce(&error.to_string()),
            }
        });
    };
    view! {
        <form method="post" action=RecordMovement::PATH data-form=form on:submit=on_submit>{children()}</form>
    }
}

/// The part of `fulfil_order`'s answer (a reservation row) the page says back.
#[derive(serde::Deserialize)]
struct Fulfilled {
    order_id: Option<String>,
}

/// "Fulfil" for a paid order's reservation.
#[island]
fn FulfilButton(reservation_id: String) -> impl IntoView {
    let fulfil = move |_| {
        let id = reservation_id.clone();
        leptos::task::spawn_local(async move {
            match call(&FulfilOrder { reservation_id: id }).await.and_then(|body| read::<Fulfilled>(&body)) {
                Ok(row) => {
                    refresh().await;
                    announce(&format!("Order {} fulfilled.", row.order_id.unwrap_or_default()));
                }
                Err(error) => announce(&error.to_string()),
            }
        });
    };
    view! { <button type="button" on:click=fulfil>"Fulfil"</button> }
}

/// The levels a chart draws: before the oldest movement shown, then after each one (oldest first), as
/// (on hand, available). Available is never negative on the page, so the level before a movement that
/// left it at 0 is a lower bound.
fn chart_levels(ledger: &[LedgerEntry]) -> Vec<(i64, i64)> {
    let oldest_first: Vec<&LedgerEntry> = ledger.iter().rev().collect();
    let Some(first) = oldest_first.first() else {
        return Vec::new();
    };
    let available_delta = first.on_hand_delta - first.soft_delta - first.hard_delta - first.unavailable_delta - first.safety_delta;
    let before = ((first.on_hand_after - first.on_hand_delta).max(0), (first.available_after - available_delta).max(0));
    std::iter::once(before).chain(oldest_first.iter().map(|entry| (entry.on_hand_after, entry.available_after))).collect()
}

/// An SVG step chart of on hand and available: the level before the oldest movement shown and after each
/// one, so a single movement already shows where stock came from and went, with the scale and the
/// current levels written beside it.
fn chart(ledger: &[LedgerEntry]) -> impl IntoView {
    const WIDTH: f64 = 600.0;
    const HEIGHT: f64 = 160.0;
    // Room for the scale on the left and the current levels on the right.
    const LEFT: f64 = 36.0;
    const RIGHT: f64 = 120.0;
    const TOP: f64 = 12.0;
    const BOTTOM: f64 = 24.0;
    let levels = chart_levels(ledger);
    let movements = levels.len().saturating_sub(1);
    let top = levels.iter().map(|&(on_hand, available)| on_hand.max(available)).max().unwrap_or(0).max(1);
    // Movement `i` (1-based) at x(i); x(0) is the start and x(movements + 1) now, so the level before the
    // first movement and the level after the last both show as a stretch of line.
    let x = |i: usize| LEFT + i as f64 * (WIDTH - LEFT - RIGHT) / (movements + 1) as f64;
    let y = |value: i64| TOP + (HEIGHT - TOP - BOTTOM) * (1.0 - value as f64 / top as f64);
    // Steps: a level holds until the next movement, then changes at once.
    let steps = |value: fn(&(i64, i64)) -> i64| {
        let mut points = Vec::new();
        for (i, level) in levels.iter().enumerate() {
            points.push(format!("{:.1},{:.1}", x(i), y(value(level))));
            points.push(format!("{:.1},{:.1}", x(i + 1), y(value(level))));
        }
        points.join(" ")
    };
    let on_hand = steps(|level| level.0);
    let available = steps(|level| level.1);
    let &(now_on_hand, now_available) = levels.last().unwrap_or(&(0, 0));
    let label = format!(
        "On hand (solid) and available (dashed) before and after each of the last {movements} movements; now {now_on_hand} on hand, {now_available} available"
    );
    let markers = ledger
        .iter()
        .rev()
        .enumerate()
        .map(|(i, entry)| {
            let title = format!("{} {:+}: {} on hand, {} available", entry.kind, entry.on_hand_delta, entry.on_hand_after, entry.available_after);
            view! { <circle cx=format!("{:.1}", x(i + 1)) cy=format!("{:.1}", y(entry.on_hand_after)) r="3.5" class="movement"><title>{title}</title></circle> }
        })
        .collect_view();
    let (end, right) = (x(movements + 1), WIDTH - RIGHT + 8.0);
    view! {
        <figure class="chart">
            <svg viewBox=format!("0 0 {WIDTH} {HEIGHT}") width="600" height="160" role="img" aria-label=label.clone() data-testid="stock-chart">
                <line x1=LEFT y1=y(top) x2=end y2=y(top) class="grid"/>
                <line x1=LEFT y1=y(0) x2=end y2=y(0) class="axis"/>
                <text x=LEFT - 6.0 y=y(top) + 4.0 text-anchor="end" class="scale">{top}</text>
                <text x=LEFT - 6.0 y=y(0) + 4.0 text-anchor="end" class="scale">"0"</text>
                <text x=LEFT y=HEIGHT - 6.0 class="scale">"before"</text>
                <text x=end y=HEIGHT - 6.0 text-anchor="end" class="scale">"now"</text>
                <polyline points=on_hand fill="none" stroke="currentColor" stroke-width="2" class="on-hand-line"/>
                <polyline points=available fill="none" stroke="currentColor" stroke-width="2" stroke-dasharray="6 4" class="available-line"/>
                {markers}
                <text x=right y=y(now_on_hand) + 4.0 class="level">{format!("{now_on_hand} on hand")}</text>
                <text x=right y=y(now_available) + 16.0 class="level">{format!("{now_available} available")}</text>
            </svg>
            <figcaption>{label}</figcaption>
        </figure>
    }
}

fn counters(rows: Vec<StockRow>) -> impl IntoView {
    let rows = rows
        .into_iter()
        .map(|row| {
            view! {
                <tr data-location=row.location.clone()>
                    <td>{row.location.clone()}</td>
                    <td data-testid="on-hand">{row.on_hand}</td>
                    <td>{row.soft_reserved}</td>
                    <td>{row.hard_reserved}</td>
                    <td>{row.unavailable}</td>
                    <td>{row.safety_stock}</td>
                    <td data-testid="incoming">{row.incoming}</td>
                    <td data-testid="available">{row.available}</td>
                </tr>
            }
        })
        .collect_view();
    view! {
        <table class="counters" data-testid="counters">
            <thead><tr><th>"Location"</th><th>"On hand"</th><th>"Soft"</th><th>"Hard"</th><th>"Unavailable"</th><th>"Safety"</th><th>"Incoming"</th><th>"Available"</th></tr></thead>
            <tbody>{rows}</tbody>
        </table>
    }
}

fn ledger_table(ledger: Vec<LedgerEntry>) -> impl IntoView {
    let rows = ledger
        .into_iter()
        .map(|entry| {
            let signed = |delta: i64| {
                if delta == 0 {
                    String::new()
                } else {
                    format!("{delta:+}")
                }
            };
            let cause = [entry.order_id.map(|o| format!("order {o}")), entry.reason].into_iter().flatten().collect::<Vec<_>>().join(" · ");
            view! {
                <tr data-kind=entry.kind.clone()>
                    <td>{entry.seq}</td>
                    <td>{format_time(entry.at_ms)}</td>
                    <td>{entry.kind.clone()}</td>
                    <td>{entry.location}</td>
                    <td>{signed(entry.on_hand_delta)}</td>
                    <td>{signed(entry.soft_delta)}</td>
                    <td>{signed(entry.hard_delta)}</td>
                    <td>{signed(entry.unavailable_delta)}</td>
                    <td>{signed(entry.incoming_delta + entry.safety_delta)}</td>
                    <td>{entry.on_hand_after}</td>
                    <td>{entry.available_after}</td>
                    <td>{entry.actor}</td>
                    <td>{cause}</td>
                </tr>
            }
        })
        .collect_view();
    view! {
        <table class="ledger" data-testid="ledger">
            <thead><tr><th>"#"</th><th>"When"</th><th>"Type"</th><th>"Location"</th><th>"On hand"</th><th>"Soft"</th><th>"Hard"</th>
                <th>"Unavail."</th><th>"Incoming/safety"</th><th>"On hand after"</th><th>"Available after"</th><th>"By"</th><th>"Cause"</th></tr></thead>
            <tbody>{rows}</tbody>
        </table>
    }
}

fn reservations_table(rows: Vec<ReservationRow>) -> impl IntoView {
    let rows = rows
        .into_iter()
        .map(|row| {
            let status = if row.lapsed { "expired (not yet swept)".to_owned() } else { row.status.as_str().to_owned() };
            let lines = row.lines.iter().map(|l| format!("{} × {}", l.quantity, l.sku)).collect::<Vec<_>>().join(", ");
            let can_fulfil = row.status == ReservationStatus::Hard;
            let id = row.id.to_string();
            let button = can_fulfil.then(|| view! { <FulfilButton reservation_id=id.clone()/> });
            let expires = if row.status == ReservationStatus::Soft { format_time(row.expires_at_ms) } else { String::new() };
            view! {
                <tr data-reservation=id.clone() data-status=row.status.as_str()>
                    <td title=id.clone()>{id.chars().take(8).collect::<String>()}</td>
                    <td>{status}</td>
                    <td>{row.owner}</td>
                    <td>{row.order_id.map(String::from).unwrap_or_default()}</td>
                    <td>{lines}</td>
                    <td>{format_time(row.created_at_ms)}</td>
                    <td>{expires}</td>
                    <td>{button}</td>
                </tr>
            }
        })
        .collect_view();
    view! {
        <table class="reservations" data-testid="reservations">
            <thead><tr><th>"Id"</th><th>"Status"</th><th>"For"</th><th>"Order"</th><th>"Lines"</th><th>"Created"</th><th>"Expires"</th><th>"Actions"</th></tr></thead>
            <tbody>{rows}</tbody>
        </table>
    }
}

/// The forms of the SKU page, all posting to `record_movement`.
fn movement_forms(sku: String) -> impl IntoView {
    let hidden = |movement: &'static str| {
        let sku = sku.clone();
        view! {
            <input type="hidden" name="sku" value=sku/>
            <input type="hidden" name="movement" value=movement/>
        }
    };
    let (receive, order, shrinkage, returned, adjust) = (hidden("receive"), hidden("order"), hidden("shrinkage"), hidden("return"), hidden("adjust"));
    view! {
        <div class="movement-forms">
            <MovementForm form="receive".to_owned()>
                <h3>"Receive stock"</h3>
                {receive}
                <label>"Units " <input type="number" name="quantity" min="1" required/></label>
                <label>"Location " <input type="text" name="location" value="main"/></label>
                <label>"Note " <input type="text" name="reason" maxlength="200"/></label>
                <button type="submit">"Receive"</button>
            </MovementForm>
            <MovementForm form="order".to_owned()>
                <h3>"Purchase order (incoming)"</h3>
                {order}
                <label>"Units " <input type="number" name="quantity" min="1" required/></label>
                <label>"PO reference " <input type="text" name="reason" maxlength="200"/></label>
                <button type="submit">"Record order"</button>
            </MovementForm>
            <MovementForm form="shrinkage".to_owned()>
                <h3>"Shrinkage"</h3>
                {shrinkage}
                <label>"Units " <input type="number" name="quantity" min="1" required/></label>
                <label>"Reason " <input type="text" name="reason" maxlength="200" required/></label>
                <label><input type="checkbox" name="damaged" value="true"/> " From damaged stock"</label>
                <button type="submit">"Write off"</button>
            </MovementForm>
            <MovementForm form="return".to_owned()>
                <h3>"Customer return"</h3>
                {returned}
                <label>"Units " <input type="number" name="quantity" min="1" required/></label>
                <label>"Order / note " <input type="text" name="reason" maxlength="200"/></label>
                <label><input type="checkbox" name="damaged" value="true"/> " Damaged (hold, do not restock)"</label>
                <button type="submit">"Process return"</button>
            </MovementForm>
            <MovementForm form="adjust".to_owned()>
                <h3>"Adjust"</h3>
                {adjust}
                <label>"Counter "
                    <select name="counter">
                        <option value="on_hand">"On hand (count correction)"</option>
                        <option value="unavailable">"Unavailable (quality hold)"</option>
                        <option value="safety_stock">"Safety stock"</option>
                    </select>
                </label>
                <label>"Change (±) " <input type="number" name="quantity" required/></label>
                <label>"Reason " <input type="text" name="reason" maxlength="200" required/></label>
                <button type="submit">"Adjust"</button>
            </MovementForm>
        </div>
    }
}

/// One SKU: counters, chart, forms, reservations, ledger. The forms stay put while the counters and
/// chart (region `counters`) and the reservations and ledger (region `activity`) follow each change.
#[component]
pub fn SkuPage(sku: String) -> impl IntoView {
    let fetch_sku = sku.clone();
    let detail = Resource::new(|| (), move |_| sku_detail(fetch_sku.clone()));
    view! {
        <section class="inventory sku-page">
            <nav class="subnav" aria-label="Inventory"><a href=PREFIX>"← Stock"</a> " · " <a href=format!("{PREFIX}/reservations")>"Reservations"</a></nav>
            <h1>{sku.clone()}</h1>
            <p class="status" role="status" data-testid="form-status" data-page-status=""></p>
            <Suspense fallback=|| view! { <p>"Loading…"</p> }>
                {move || detail.get().map(|result| match result {
                    Ok(SkuView { sku, locations, ledger, reservations }) => view! {
                        <div data-refresh="counters">
                            {counters(locations)}
                            {chart(&ledger)}
                        </div>
                        {movement_forms(sku.to_string())}
                        <div data-refresh="activity">
                            <h2>"Reservations"</h2>
                            {reservations_table(reservations)}
                            <h2>"Ledger"</h2>
                            {ledger_table(ledger)}
                        </div>
                    }.into_any(),
                    Err(error) => view! { <p class="error">{error.to_string()}</p> }.into_any(),
                })}
            </Suspense>
        </section>
    }
}

/// Reservations by state, with "Fulfil" for paid orders.
#[component]
pub fn ReservationsPage(filter: String, page: i64) -> impl IntoView {
    let fetch_filter = filter.clone();
    let list = Resource::new(|| (), move |_| reservation_page(fetch_filter.clone(), page));
    let filters = ["active", "lapsed", "hard", "fulfilled", "released", "expired", "cancelled", "all"]
        .into_iter()
        .map(|name| {
            let current = filter == name || (filter.is_empty() && name == "active");
            view! { <a href=format!("{PREFIX}/reservations?filter={name}") aria-current=current.then_some("page")>{name}</a> " " }
        })
        .collect_view();
    view! {
        <section class="inventory">
            <nav class="subnav" aria-label="Inventory"><a href=PREFIX>"← Stock"</a></nav>
            <h1>"Reservations"</h1>
            <p class="filters">{filters}</p>
            <p class="status" role="status" data-page-status=""></p>
            <div data-refresh="reservations">
                <Suspense fallback=|| view! { <p>"Loading…"</p> }>
                    {move || list.get().map(|result| match result {
                        Ok(ReservationList { rows, total, page, pages }) => {
                            let base = format!("{PREFIX}/reservations?filter={}", filter);
                            let previous = (page > 1).then(|| view! { <a rel="prev" href=format!("{base}&page={}", page - 1)>"← Previous"</a> });
                            let next = (page < pages).then(|| view! { <a rel="next" href=format!("{base}&page={}", page + 1)>"Next →"</a> });
                            view! {
                                {reservations_table(rows)}
                                <p class="pager">{previous} " Page " {page} " of " {pages} " (" {total} ") " {next}</p>
                            }.into_any()
                        }
                        Err(error) => view! { <p class="error">{error.to_string()}</p> }.into_any(),
                    })}
                </Suspense>
            </div>
        </section>
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_links_keep_the_filters_and_drop_odd_characters() {
        let query = StockQuery { q: "mug<script>".into(), low: true, sort: "available".into(), desc: true, page: 3 };
        assert_eq!(query_string(&query, 4), "/admin/inventory?q=mugscript&low=true&sort=available&desc=true&page=4");
        assert_eq!(query_string(&StockQuery::default(), 1), "/admin/inventory?page=1");
    }

    fn movement(on_hand_delta: i64, soft_delta: i64, on_hand_after: i64, available_after: i64) -> LedgerEntry {
        LedgerEntry {
            seq: 0,
            location: "main".into(),
            kind: "receive".into(),
            quantity: on_hand_delta,
            on_hand_delta,
            soft_delta,
            hard_delta: 0,
            unavailable_delta: 0,
            safety_delta: 0,
            incoming_delta: 0,
            on_hand_after,
            available_after,
            actor: "staff".into(),
            reason: None,
            reservation_id: None,
            order_id: None,
            at_ms: 0,
        }
    }

    #[test]
    fn one_movement_charts_the_level_before_and_after_it() {
        // A first receipt of 12 onto nothing: from 0 to 12.
        assert_eq!(chart_levels(&[movement(12, 0, 12, 12)]), vec![(0, 0), (12, 12)]);
        // Newest first, as the ledger comes: a hold of 3 after a receipt of 5 onto 10.
        assert_eq!(chart_levels(&[movement(0, 3, 15, 12), movement(5, 0, 15, 15)]), vec![(10, 10), (15, 15), (15, 12)]);
        assert!(chart_levels(&[]).is_empty());
    }
}
