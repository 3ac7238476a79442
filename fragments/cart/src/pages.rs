//! The cart's pages: cart, checkout, order history and order detail, each at its own address under
//! `/cart`. Rendered on the server; the `#[island]`s are what the browser runs: the cart's lines (quantity
//! buttons), the checkout form, and on an order page the cancel button and the watcher that keeps an
//! order awaiting payment or a cancellation up to date. After a change an island asks the page runtime
//! to render the page's `data-refresh` regions again, so what the page shows is what the server says.

use leptos::prelude::*;
use leptos::server_fn::ServerFn;
use tessera_contracts::page::{announce, call, form_of, read, refresh, submit};

use crate::model::{CartView, CheckoutForm, HoldState, LineView, OrderStatus, OrderView, PlacedOrder, ShippingMethod};
use crate::server_fns::{checkout_view, my_cart, my_orders, order_detail, CancelOrder, PlaceOrder, SetQuantity};
use crate::PREFIX;

fn subnav() -> impl IntoView {
    view! {
        <nav class="subnav" aria-label="Cart and orders">
            <a href=PREFIX>"Cart"</a> " · " <a href=format!("{PREFIX}/orders")>"Your orders"</a>
        </nav>
    }
}

/// Where the shopper is on the way from the cart to a confirmed order: steps before `current` are done.
///
/// Static markup, set as the list's inner HTML: the steps never change after rendering, and one more
/// typed view in three pages cost the bundle 11 kB of view code (each page's view type grows by it).
fn steps(current: usize) -> impl IntoView {
    let items: String = ["Cart", "Delivery", "Payment", "Confirmed"]
        .into_iter()
        .enumerate()
        .map(|(n, label)| match n.cmp(&current) {
            std::cmp::Ordering::Less => format!("<li class=\"done\">{label}</li>"),
            std::cmp::Ordering::Equal => format!("<li class=\"current\" aria-current=\"step\">{label}</li>"),
            std::cmp::Ordering::Greater => format!("<li class=\"to-do\">{label}</li>"),
        })
        .collect();
    view! { <ol class="steps" aria-label="Checkout steps" data-testid="steps" inner_html=items></ol> }
}

/// `/cart`: the lines with their holds, quantity buttons and the way to checkout. The lines are the
/// server's rendering (region `cart`); a quantity button changes the line and asks for them again.
#[component]
pub fn CartPage() -> impl IntoView {
    let cart = Resource::new(|| (), |_| my_cart());
    view! {
        <section class="cart">
            {subnav()}
            {steps(0)}
            <h1>"Your cart"</h1>
            <div data-refresh="cart">
                <Suspense fallback=|| view! { <p>"Loading your cart…"</p> }>
                    {move || cart.get().map(|result| match result {
                        Ok(view) => cart_lines(view).into_any(),
                        Err(error) => view! { <p class="error">{error.to_string()}</p> }.into_any(),
                    })}
                </Suspense>
            </div>
            <p class="error" role="status" data-testid="cart-message" data-page-status=""></p>
        </section>
    }
}

fn who(view: &CartView) -> impl IntoView {
    match &view.user {
        Some(user) => view! { <p class="signed-in" data-testid="fragment-user">"Signed in as " <strong>{user.name.clone()}</strong></p> }.into_any(),
        None => view! {
            <p class="signed-in" data-testid="fragment-user">"Browsing as a guest. "
                <a href="/login?next=/cart" rel="external">"Sign in"</a>" to keep this cart in your account and have its items held for you."</p>
        }
        .into_any(),
    }
}

fn cart_lines(cart: CartView) -> impl IntoView {
    let who = who(&cart);
    let next = match (&cart.user, cart.locked) {
        (_, true) => view! { <p class="notice">"Your order is being placed; the cart is locked."</p> }.into_any(),
        (Some(_), false) => view! { <a class="button" href=format!("{PREFIX}/checkout") data-testid="to-checkout">"Check out"</a> }.into_any(),
        (None, false) => view! { <a class="button" href="/login?next=/cart/checkout" rel="external">"Sign in to check out"</a> }.into_any(),
    };
    let lines = if cart.lines.is_empty() {
        view! { <p data-testid="cart-empty">"Your cart is empty."</p> }.into_any()
    } else {
        view! {
            <table class="cart-lines" data-testid="cart-lines">
                <thead><tr><th>"Item"</th><th>"Price"</th><th>"Quantity"</th><th>"Total"</th><th>"Actions"</th></tr></thead>
                <tbody>{cart.lines.into_iter().map(line_row).collect_view()}</tbody>
            </table>
            <p class="subtotal">"Subtotal: " <strong data-testid="subtotal">{cart.subtotal.to_string()}</strong></p>
            {next}
        }
        .into_any()
    };
    view! {
        // The page is what the shopper reads: every badge on the page follows it, from the first render
        // (the chrome's count was fetched beside this page and may predate a merge it made) and after
        // each change.
        <AnnounceCount count=cart.item_count/>
        {who}
        {lines}
    }
}

/// Tells the page's cart badges the count of the cart as rendered.
#[island]
fn AnnounceCount(count: i64) -> impl IntoView {
    Effect::new(move |_| tessera_contracts::dom_events::announce_cart_count(count));
}

fn line_row(line: LineView) -> impl IntoView {
    let quantity = line.quantity;
    let hold_class = match line.hold {
        HoldState::Held => "hold held",
        HoldState::Pending => "hold pending",
        HoldState::Short => "hold short",
    };
    let product = if line.product_id.is_empty() { None } else { Some(format!("/catalog/p/{}", line.product_id)) };
    view! {
        <tr data-sku=line.sku.clone()>
            <td>
                {match product {
                    Some(href) => view! { <a href=href rel="external">{line.name.clone()}</a> }.into_any(),
                    None => view! { <span>{line.name.clone()}</span> }.into_any(),
                }}
                <small class="sku">" " {line.sku.clone()}</small>
                <br/><small class=hold_class data-testid="hold">{line.hold_text.clone()}</small>
                {line.price_note.clone().map(|note| view! { <br/><small class="price-note" data-testid="price-note">{note}</small> })}
            </td>
            <td>{line.unit_price.to_string()}</td>
            <td>
                <QuantityButton sku=line.sku.clone() quantity=quantity - 1 label="−".to_owned() hint="one less".to_owned()/>
                <span class="quantity" data-testid="quantity">{quantity}</span>
                <QuantityButton sku=line.sku.clone() quantity=quantity + 1 label="+".to_owned() hint="one more".to_owned()/>
            </td>
            <td>{line.line_total.to_string()}</td>
            <td><QuantityButton sku=line.sku.clone() quantity=0 label="Remove".to_owned() hint=String::new()/></td>
        </tr>
    }
}

/// A button that sets a line to `quantity` (0 removes it), then shows the cart as the server now has it.
#[island]
fn QuantityButton(sku: String, quantity: i64, label: String, hint: String) -> impl IntoView {
    let change = move |_| {
        let sku = sku.clone();
        leptos::task::spawn_local(async move {
            match call(&SetQuantity { sku, quantity }).await {
                Ok(_) => {
                    refresh().await;
                    announce("");
                }
                Err(error) => announce(&error.to_string()),
            }
        });
    };
    let class = (quantity == 0).then_some("link");
    let hint = (!hint.is_empty()).then_some(hint);
    view! { <button type="button" class=class aria-label=hint on:click=change>{label}</button> }
}

/// `/cart/checkout`: review, address, shipping, place order.
#[component]
pub fn CheckoutPage() -> impl IntoView {
    let data = Resource::new(|| (), |_| checkout_view());
    view! {
        <section class="checkout">
            {subnav()}
            {steps(1)}
            <h1>"Checkout"</h1>
            <p class="status" role="status" data-testid="checkout-status" data-page-status=""></p>
            <div data-refresh="checkout">
                <Suspense fallback=|| view! { <p>"Loading…"</p> }>
                    {move || data.get().map(|result| match result {
                        Ok(view) if view.cart.lines.is_empty() => view! { <p>"Your cart is empty. " <a href="/catalog" rel="external">"Browse the catalog"</a></p> }.into_any(),
                        Ok(view) => checkout_form(view).into_any(),
                        Err(tessera_contracts::ApiError::Unauthorized) => view! {
                            <p><a href="/login?next=/cart/checkout" rel="external">"Sign in"</a>" to check out."</p>
                        }.into_any(),
                        Err(error) => view! { <p class="error">{error.to_string()}</p> }.into_any(),
                    })}
                </Suspense>
            </div>
        </section>
    }
}

fn checkout_form(view: CheckoutForm) -> impl IntoView {
    let CheckoutForm { cart, key } = view;
    let rows = cart
        .lines
        .iter()
        .map(|line| {
            view! {
                <tr>
                    <td>{line.name.clone()} {line.price_note.clone().map(|note| view! { <br/><small class="price-note">{note}</small> })}</td>
                    <td>{line.quantity}</td>
                    <td>{line.line_total.to_string()}</td>
                </tr>
            }
        })
        .collect_view();
    view! {
        <h2>"Review"</h2>
        <table class="review" data-testid="review">
            <thead><tr><th>"Item"</th><th>"Quantity"</th><th>"Total"</th></tr></thead>
            <tbody>{rows}</tbody>
        </table>
        <p>"Items: " <strong>{cart.subtotal.to_string()}</strong> " plus shipping."</p>
        <PlaceOrderForm key=key currency=cart.subtotal.currency.clone()/>
    }
}

/// The address and shipping form. Placed, the shopper goes to the provider's payment page (or to the
/// order, if the provider is down); refused, the page shows the cart as it now is and says why.
#[island]
fn PlaceOrderForm(key: String, currency: String) -> impl IntoView {
    let on_submit = move |event: leptos::ev::SubmitEvent| {
        let Some(form) = form_of(&event) else { return };
        leptos::task::spawn_local(async move {
            match submit(&form).await.and_then(|body| read::<PlacedOrder>(&body)) {
                Ok(placed) => {
                    announce(&placed.message.unwrap_or_else(|| "Order placed; taking you to the payment page…".into()));
                    let target = placed.pay_url.unwrap_or_else(|| format!("{PREFIX}/orders/{}", placed.order_id));
                    #[cfg(feature = "hydrate")]
                    if let Some(window) = web_sys::window() {
                        let _ = window.location().set_href(&target);
                    }
                    #[cfg(not(feature = "hydrate"))]
                    let _ = target;
                }
                Err(error) => {
                    refresh().await;
                    announce(&error.to_string());
                }
            }
        });
    };
    let methods = ShippingMethod::ALL
        .into_iter()
        .map(|method| {
            let price = tessera_contracts::domain::Money { minor: method.price_minor(), currency: currency.clone() };
            view! {
                <label class="choice">
                    <input type="radio" name="shipping" value=method.as_str() checked=method == ShippingMethod::Standard/>
                    {method.label()} " — " {price.to_string()}
                </label>
            }
        })
        .collect_view();
    view! {
        <form method="post" action=PlaceOrder::PATH data-form="checkout" on:submit=on_submit>
            <input type="hidden" name="key" value=key/>
            <fieldset>
                <legend>"Delivery address"</legend>
                <label>"Name " <input type="text" name="name" required maxlength="100" autocomplete="name"/></label>
                <label>"Street " <input type="text" name="street" required maxlength="200" autocomplete="street-address"/></label>
                <label>"City " <input type="text" name="city" required maxlength="100" autocomplete="address-level2"/></label>
                <label>"Postcode " <input type="text" name="postcode" required maxlength="12" autocomplete="postal-code"/></label>
                <label>"Country (two letters) " <input type="text" name="country" required maxlength="2" value="DE" autocomplete="country"/></label>
            </fieldset>
            <fieldset>
                <legend>"Shipping"</legend>
                {methods}
            </fieldset>
            <button type="submit" data-testid="place-order">"Place order and pay"</button>
        </form>
    }
}

/// `/cart/orders`: the shopper's order history.
#[component]
pub fn OrdersPage() -> impl IntoView {
    let orders = Resource::new(|| (), |_| my_orders());
    view! {
        <section class="orders">
            {subnav()}
            <h1>"Your orders"</h1>
            <Suspense fallback=|| view! { <p>"Loading…"</p> }>
                {move || orders.get().map(|result| match result {
                    Ok(list) if list.is_empty() => view! { <p>"No orders yet."</p> }.into_any(),
                    Ok(list) => view! {
                        <table class="orders" data-testid="orders">
                            <thead><tr><th>"Order"</th><th>"Placed"</th><th>"Items"</th><th>"Total"</th><th>"Status"</th></tr></thead>
                            <tbody>
                                {list.into_iter().map(|order| view! {
                                    <tr data-order=order.id.clone()>
                                        <td><a href=format!("{PREFIX}/orders/{}", order.id)>{order.id[..8].to_owned()}</a></td>
                                        <td>{order.placed_at}</td>
                                        <td>{order.item_count}</td>
                                        <td>{order.total.to_string()}</td>
                                        <td>{order.status.label()}</td>
                                    </tr>
                                }).collect_view()}
                            </tbody>
                        </table>
                    }.into_any(),
                    Err(tessera_contracts::ApiError::Unauthorized) => view! {
                        <p><a href="/login?next=/cart/orders" rel="external">"Sign in"</a>" to see your orders."</p>
                    }.into_any(),
                    Err(error) => view! { <p class="error">{error.to_string()}</p> }.into_any(),
                })}
            </Suspense>
        </section>
    }
}

/// `/cart/orders/<id>`: one order with its status timeline.
#[component]
pub fn OrderPage(id: String) -> impl IntoView {
    let order = Resource::new(move || id.clone(), order_detail);
    view! {
        <section class="order">
            {subnav()}
            <p class="error" role="status" data-page-status=""></p>
            <div data-refresh="order">
                <Suspense fallback=|| view! { <p>"Loading…"</p> }>
                    {move || order.get().map(|result| match result {
                        Ok(order) => order_view(order).into_any(),
                        Err(tessera_contracts::ApiError::Unauthorized) => view! {
                            <p><a href="/login?next=/cart/orders" rel="external">"Sign in"</a>" to see your orders."</p>
                        }.into_any(),
                        Err(error) => view! { <h1>"Order not found"</h1> <p class="error">{error.to_string()}</p> }.into_any(),
                    })}
                </Suspense>
            </div>
        </section>
    }
}

/// While it is on the page, asks for the page's regions again every two seconds: the provider's webhook
/// may arrive after the shopper came back from the payment page, and the warehouse answers a
/// cancellation later. The refreshed region brings its own watcher when the order still needs one, so
/// this one stops as soon as it has left the page.
#[island]
fn KeepCurrent() -> impl IntoView {
    let marker = NodeRef::<leptos::html::Span>::new();
    #[cfg(feature = "hydrate")]
    Effect::new(move |_| {
        set_timeout(
            move || {
                if marker.get_untracked().is_some_and(|span| span.is_connected()) {
                    leptos::task::spawn_local(refresh());
                }
            },
            std::time::Duration::from_secs(2),
        );
    });
    view! { <span hidden node_ref=marker data-testid="keeps-current"></span> }
}

/// "Cancel this order": asks for the cancellation, then shows the order as it now is.
#[island]
fn CancelButton(id: String) -> impl IntoView {
    let on_submit = move |event: leptos::ev::SubmitEvent| {
        let Some(form) = form_of(&event) else { return };
        leptos::task::spawn_local(async move {
            match submit(&form).await {
                Ok(_) => refresh().await,
                Err(error) => announce(&error.to_string()),
            }
        });
    };
    view! {
        <form method="post" action=CancelOrder::PATH data-form="cancel" on:submit=on_submit>
            <input type="hidden" name="id" value=id/>
            <button type="submit" class="link" data-testid="cancel-order">"Cancel this order"</button>
        </form>
    }
}

fn order_view(order: OrderView) -> impl IntoView {
    let OrderView { id, status, placed_at, lines, items, shipping, shipping_method, total, address, timeline, pay_url, cancel_requested } = order;
    let status_class = format!("order-status status-{}", status.as_str());
    let awaiting = status == OrderStatus::AwaitingPayment;
    // Only an order on its way to being paid is somewhere on the steps; a failed or cancelled one is not.
    let step = match status {
        OrderStatus::Placing | OrderStatus::AwaitingPayment => Some(2),
        OrderStatus::Paid | OrderStatus::Fulfilled => Some(3),
        OrderStatus::Failed | OrderStatus::Cancelled | OrderStatus::Refunded => None,
    };
    view! {
        {step.map(steps)}
        <h1>"Order " {id[..8].to_owned()}</h1>
        <p>"Placed " {placed_at} " · " <strong class=status_class data-testid="order-status">{status.label()}</strong></p>
        {(awaiting || cancel_requested).then(|| view! { <KeepCurrent/> })}
        {awaiting.then(|| view! {
            <p class="notice">"We mark the order paid as soon as the payment provider confirms it; this page updates by itself."</p>
        })}
        {cancel_requested.then(|| view! {
            <p class="notice" data-testid="cancel-pending">"You asked to cancel this order. We are checking with the warehouse that it has not shipped; \
                if it has not, the order is cancelled and your payment refunded. This page updates by itself."</p>
        })}
        {pay_url.map(|url| view! { <p><a class="button" href=url rel="external" data-testid="pay">"Pay now"</a></p> })}
        <table class="order-lines">
            <thead><tr><th>"Item"</th><th>"Quantity"</th><th>"Price"</th><th>"Total"</th></tr></thead>
            <tbody>
                {lines.into_iter().map(|line| view! {
                    <tr data-sku=line.sku.clone()><td>{line.name}</td><td>{line.quantity}</td><td>{line.unit_price.to_string()}</td><td>{line.line_total.to_string()}</td></tr>
                }).collect_view()}
            </tbody>
        </table>
        <p>"Items " {items.to_string()} " · " {shipping_method} " " {shipping.to_string()} " · Total " <strong data-testid="order-total">{total.to_string()}</strong></p>
        <p class="address">"Deliver to: " {address.name} ", " {address.street} ", " {address.postcode} " " {address.city} ", " {address.country}</p>
        <h2>"Timeline"</h2>
        <ol class="timeline" data-testid="timeline">
            {timeline.into_iter().map(|entry| view! {
                <li data-status=entry.status.clone()><time>{entry.at}</time> " — " {entry.note}</li>
            }).collect_view()}
        </ol>
        {(status.cancellable() && !cancel_requested).then(|| view! { <CancelButton id=id.clone()/> })}
    }
}
