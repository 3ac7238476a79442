//! Probe fragments: small fragments the shell's tests compose, built on the same SDK as the real ones, so
//! the shell is tested against the fragment contract rather than against another team's pages. Each
//! answers what the shell's behaviour can be read from:
//!
//! - `GET <prefix>`: a page rendered by the SDK (the empty chrome slot, "Signed in as <strong>Name</strong>"
//!   or "Browsing as a guest", and an inline script with the nonce the shell handed it);
//! - `POST <prefix>/api/whoami`: the signed-in user as JSON (401 for a guest);
//! - `GET <prefix>/staff` and `POST <prefix>/api/staff`: the same, for the probe's staff role only (401
//!   for a guest, 403 without the role);
//! - `POST <prefix>/api/count`: counts one up for the caller (a user, or a guest by its
//!   `tessera_<name>` cookie, which it then sets), and `GET <prefix>/api/summary` (the cart's summary path when the probe
//!   is the cart: the shell's badge reads it) says how many;
//! - `POST <prefix>/api/forget`: clears that cookie (a fragment setting its own cookie);
//! - `POST <prefix>/api/big`: a JSON answer of a few kilobytes;
//! - `GET <prefix>/widget`: its home-page widget (hidden from users without the staff role, if it has one);
//! - anything else: the SDK's 404 page under its prefix.

use std::collections::HashMap;
use std::sync::Mutex;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use leptos::prelude::*;
use shared_auth::extract::MaybeUser;
use shared_auth::{Role, SessionUser};
use sqlx::migrate::Migrator;
use tessera_contracts::descriptor::NavEntry;
use tessera_contracts::domain::ServiceName;
use tessera_fragment::db::Migrations;
use tessera_fragment::fragment::{published, BoxFuture, Fragment, SeedError};
use tessera_fragment::page::PageHead;
use tessera_fragment::routes::{fragment_router, render_with_head};
use tessera_fragment::FragmentRuntime;

static NO_TABLES: Migrator = Migrator::DEFAULT;
static NO_MIGRATIONS: Migrations = Migrations { sqlite: &NO_TABLES, postgres: &NO_TABLES };

/// The guest cookie probe `name` sets when a guest counts: a cookie the probe owns
/// (`tessera_<name>`), so the shell passes it to that probe alone.
pub fn guest_cookie_of(name: &str) -> String {
    format!("tessera_{name}")
}

/// A probe fragment (see the module's docs).
pub struct Probe {
    pub name: &'static str,
    pub prefix: &'static str,
    pub title: &'static str,
    /// The role its staff page, staff API and widget want (`None`: everyone may see them).
    pub staff: Option<Role>,
    pub publishes: &'static [(&'static str, u32)],
}

/// Three probes under the real fragments' names and prefixes, so the shell's own treatment of them (the
/// cart's badge, the navigation, role-gated links) is what the tests see.
pub static CATALOG: Probe = Probe { name: "catalog", prefix: "/catalog", title: "Catalog", staff: None, publishes: &[] };
pub static CART: Probe = Probe { name: "cart", prefix: "/cart", title: "Cart", staff: None, publishes: &[] };
pub static INVENTORY: Probe = Probe {
    name: "inventory",
    prefix: "/admin/inventory",
    title: "Inventory",
    staff: Some(Role::InventoryAdmin),
    publishes: &[published::<tessera_contracts::events::StockChanged>()],
};

/// The probes a shell under test contains unless a test says otherwise.
pub fn all() -> Vec<&'static dyn Fragment> {
    vec![&CATALOG, &CART, &INVENTORY]
}

/// What the probes have counted, by who counted (`user:<id>`, `guest:<cookie>`), across every probe of
/// every test in this binary; names are unique per test (fresh users, fresh guest cookies).
fn counts() -> &'static Mutex<HashMap<String, i64>> {
    static COUNTS: std::sync::OnceLock<Mutex<HashMap<String, i64>>> = std::sync::OnceLock::new();
    COUNTS.get_or_init(Mutex::default)
}

#[derive(Clone)]
struct ProbeState {
    runtime: FragmentRuntime,
    probe: &'static Probe,
}

impl axum::extract::FromRef<ProbeState> for shared_auth::verify::Verifier {
    fn from_ref(state: &ProbeState) -> shared_auth::verify::Verifier {
        state.runtime.verifier.clone()
    }
}

impl Fragment for Probe {
    fn name(&self) -> ServiceName {
        ServiceName::of(self.name)
    }
    fn prefix(&self) -> &'static str {
        self.prefix
    }
    fn title(&self) -> &'static str {
        self.title
    }
    fn nav(&self) -> Option<NavEntry> {
        Some(NavEntry { label: self.title.to_owned(), role: self.staff })
    }
    fn migrations(&self) -> &'static Migrations {
        &NO_MIGRATIONS
    }
    fn router(&self, runtime: FragmentRuntime) -> Router {
        let probe: &'static Probe = [&CATALOG, &CART, &INVENTORY].into_iter().find(|known| known.name == self.name).unwrap_or(&CATALOG);
        let state = ProbeState { runtime: runtime.clone(), probe };
        let prefix = self.prefix;
        let own = Router::new()
            .route(&format!("{prefix}/staff"), get(staff_page))
            .route(&format!("{prefix}/api/whoami"), post(whoami))
            .route(&format!("{prefix}/api/staff"), post(staff_api))
            .route(&format!("{prefix}/api/count"), post(count))
            .route(&format!("{prefix}/api/summary"), get(summary))
            .route(&format!("{prefix}/api/forget"), post(forget))
            .route(&format!("{prefix}/api/big"), post(big))
            .with_state(state.clone())
            // As every fragment does, whether or not a shell is in front.
            .layer(axum::middleware::from_fn_with_state(runtime.csrf.clone(), shared_auth::csrf::reject_cross_site));
        // The SDK's routes (page, widget, bundle, events, 404) beside the probe's own; its server-function
        // route would answer `/api/*` first, so the probe's own come first.
        let page_state = state.clone();
        let widget_state = state;
        let sdk = fragment_router(
            &runtime,
            get(move |user: MaybeUser, request: Request| page(page_state.clone(), user, request)),
            get(move |user: MaybeUser| widget(widget_state.clone(), user)),
        )
        .with_state(runtime);
        own.merge(sdk)
    }
    fn seed_demo<'a>(&'a self, _runtime: &'a FragmentRuntime, _extra: usize) -> BoxFuture<'a, Result<(), SeedError>> {
        Box::pin(async { Ok(()) })
    }
    fn publishes(&self) -> &'static [(&'static str, u32)] {
        self.publishes
    }
}

fn signed_in_as(user: &Option<SessionUser>) -> String {
    match user {
        Some(user) => format!("Signed in as <strong>{}</strong>", user.name),
        None => "Browsing as a guest".to_owned(),
    }
}

/// A probe waits a little for its "data", as a page that reads a database does, so its answers have a
/// data time to report (`tessera_fragment::timing`).
async fn wait_for_data() {
    tessera_fragment::timing::data(tokio::time::sleep(std::time::Duration::from_millis(2))).await;
}

/// The page, rendered by the SDK as every fragment's is.
async fn page(state: ProbeState, MaybeUser(user): MaybeUser, request: Request) -> Response {
    wait_for_data().await;
    let line = signed_in_as(&user);
    let title = state.probe.title;
    let head = PageHead { title: title.to_owned(), ..PageHead::default() };
    render_with_head(
        &state.runtime,
        head,
        move || {
            let line = line.clone();
            let nonce = leptos::nonce::use_nonce();
            view! {
                <header id=tessera_contracts::CHROME_SLOT_ID></header>
                <main class="probe">
                    <h1>{title}</h1>
                    <p data-testid="fragment-user" inner_html=line></p>
                </main>
                <script nonce=nonce>"window.probeRendered = true;"</script>
            }
        },
        request,
    )
    .await
}

/// Who may see the staff page, API and widget: 401 for a guest, 403 without the role.
fn staff_check(probe: &Probe, user: &Option<SessionUser>) -> Result<SessionUser, StatusCode> {
    let Some(user) = user.clone() else {
        return Err(StatusCode::UNAUTHORIZED);
    };
    match probe.staff {
        Some(role) if !user.has_role(role) => Err(StatusCode::FORBIDDEN),
        _ => Ok(user),
    }
}

async fn staff_page(State(state): State<ProbeState>, MaybeUser(user): MaybeUser) -> Response {
    match staff_check(state.probe, &user) {
        Ok(user) => Html(format!("<main>Staff page for {}</main>", user.name)).into_response(),
        Err(refusal) => refusal.into_response(),
    }
}

async fn staff_api(State(state): State<ProbeState>, MaybeUser(user): MaybeUser) -> Response {
    match staff_check(state.probe, &user) {
        Ok(user) => Json(serde_json::json!({ "staff": user.name })).into_response(),
        Err(refusal) => refusal.into_response(),
    }
}

async fn whoami(MaybeUser(user): MaybeUser) -> Response {
    wait_for_data().await;
    match user {
        Some(user) => Json(serde_json::json!({ "id": user.id, "name": user.name, "roles": user.roles })).into_response(),
        None => (StatusCode::UNAUTHORIZED, Json(tessera_contracts::ApiError::Unauthorized)).into_response(),
    }
}

fn guest_cookie(probe: &Probe, headers: &axum::http::HeaderMap) -> Option<String> {
    shared_auth::cookie::read_cookie(headers, &guest_cookie_of(probe.name)).filter(|value| !value.is_empty())
}

fn counter(user: &Option<SessionUser>, guest: Option<&str>) -> Option<String> {
    match (user, guest) {
        (Some(user), _) => Some(format!("user:{}", user.id)),
        (None, Some(guest)) => Some(format!("guest:{guest}")),
        (None, None) => None,
    }
}

async fn count(State(state): State<ProbeState>, MaybeUser(user): MaybeUser, headers: axum::http::HeaderMap) -> Response {
    let existing = guest_cookie(state.probe, &headers);
    let guest = existing.clone().or_else(|| user.is_none().then(|| uuid::Uuid::new_v4().simple().to_string()));
    let key = counter(&user, guest.as_deref()).expect("a user or a guest");
    let total = {
        let mut counts = counts().lock().unwrap();
        let total = counts.entry(key).or_default();
        *total += 1;
        *total
    };
    let mut response = Json(serde_json::json!({ "item_count": total })).into_response();
    if let (None, Some(guest)) = (&existing, guest.filter(|_| user.is_none())) {
        let cookie = format!("{}={guest}; Path=/; HttpOnly; SameSite=Lax", guest_cookie_of(state.probe.name));
        response.headers_mut().append(header::SET_COOKIE, cookie.parse().expect("a cookie"));
    }
    response
}

async fn summary(State(state): State<ProbeState>, MaybeUser(user): MaybeUser, headers: axum::http::HeaderMap) -> Response {
    let key = counter(&user, guest_cookie(state.probe, &headers).as_deref());
    let total = key.and_then(|key| counts().lock().unwrap().get(&key).copied()).unwrap_or(0);
    Json(serde_json::json!({ "item_count": total })).into_response()
}

async fn forget(State(state): State<ProbeState>) -> Response {
    let mut response = Json(serde_json::json!({ "forgotten": true })).into_response();
    let cleared = format!("{}=; Path=/; Max-Age=0; HttpOnly; SameSite=Lax", guest_cookie_of(state.probe.name));
    response.headers_mut().append(header::SET_COOKIE, cleared.parse().expect("a cookie"));
    response
}

async fn big() -> Response {
    let rows: Vec<serde_json::Value> = (0..100).map(|n| serde_json::json!({ "row": n, "text": "a row of the probe's big answer" })).collect();
    Json(rows).into_response()
}

async fn widget(state: ProbeState, MaybeUser(user): MaybeUser) -> Response {
    if state.probe.staff.is_some() {
        if let Err(refusal) = staff_check(state.probe, &user) {
            return refusal.into_response();
        }
    }
    let html = format!(
        "<section class=\"widget\" data-widget=\"{name}\" data-fragment=\"{name}\"><h2>{title}</h2><p>{}</p></section>",
        signed_in_as(&user),
        name = state.probe.name,
        title = state.probe.title
    );
    Html(tessera_fragment::page::widget_html(&state.runtime, html)).into_response()
}
