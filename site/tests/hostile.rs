//! A hostile fragment: the catalog, compromised, as a process the shell routes to. It records what it
//! receives and replays it to the shell and to the other fragments, sets the shell's and the cart's
//! cookies, publishes events of a type another service owns (as itself, and as that service: with its
//! own key, with a key of its making, with its key published under the other's name), calls other
//! services' APIs (as itself and as the cart), claims another fragment's prefix, and reads and writes
//! other schemas with its own database role — every attempt refused, each listed with its answer. (On
//! PostgreSQL, with the roles of `tessera db provision`.)

mod support;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::http::HeaderMap;
use axum::Router;
use reqwest::StatusCode;
use support::{database, spawn_with, Backend, Options, TestApp, ADMIN, PASSWORD};
use tessera_contracts::descriptor::{FragmentDescriptor, DESCRIPTOR_PATH, READINESS_PATH};
use tessera_contracts::domain::ServiceName;
use tessera_contracts::events::{Envelope, Event, StockChanged};
use tessera_fragment::signature::{CallSigner, EventSigner, KeyDirectory, ServiceKeys, PRODUCER_HEADER};
use tessera_host::settings::FragmentSettings;

/// What the hostile process saw: each request's path and `Cookie` header.
type Seen = Arc<Mutex<Vec<(String, String)>>>;

/// A hostile catalog process describing itself at `prefix` with `signer`'s public keys (and, in the same
/// description, as inventory with the same keys): it records every request and answers pages with a
/// `Set-Cookie` for the shell's session and the cart's guest cart.
async fn hostile(prefix: &'static str, signer: &EventSigner) -> (String, Seen) {
    let seen: Seen = Arc::default();
    let recorded = seen.clone();
    let description = vec![
        FragmentDescriptor { signing_keys: signer.public_keys(), ..FragmentDescriptor::named(ServiceName::CATALOG, prefix) },
        FragmentDescriptor { signing_keys: signer.public_keys(), ..FragmentDescriptor::named(ServiceName::INVENTORY, "/admin/inventory") },
    ];
    let app = Router::new()
        .route(
            DESCRIPTOR_PATH,
            axum::routing::get(move || {
                let description = description.clone();
                async move { axum::Json(description) }
            }),
        )
        .route(READINESS_PATH, axum::routing::get(|| async { "ready" }))
        .fallback(move |uri: axum::http::Uri, headers: HeaderMap| {
            let cookie = headers.get("cookie").and_then(|value| value.to_str().ok()).unwrap_or_default().to_owned();
            recorded.lock().unwrap().push((uri.path().to_owned(), cookie));
            async {
                let mut answer = HeaderMap::new();
                for planted in
                    ["tessera_access=planted.by.catalog; Path=/", "__Host-tessera_refresh=planted; Path=/; Secure", "tessera_cart=planted-cart; Path=/"]
                {
                    answer.append("set-cookie", planted.parse().unwrap());
                }
                (answer, axum::response::Html("<html><head></head><body><main>the catalog</main></body></html>"))
            }
        });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, seen)
}

/// One attempt and what it got.
struct Attempt {
    what: &'static str,
    answer: String,
    refused: bool,
}

fn attempt(what: &'static str, refused: bool, answer: impl Into<String>) -> Attempt {
    Attempt { what, answer: answer.into(), refused }
}

async fn post_signed(app: &TestApp, path: &str, headers: &[(&'static str, String)], body: Vec<u8>) -> (StatusCode, String) {
    let mut request = app.client.post(format!("{}{path}", app.url)).header("content-type", "application/json").body(body);
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    (status, format!("{status} {}", response.text().await.unwrap_or_default().chars().take(160).collect::<String>()))
}

#[tokio::test]
async fn a_hostile_fragment_is_refused_everything_it_tries() {
    if !support::postgres_configured() {
        return;
    }
    let prefix = support::fresh_schema_prefix();
    let urls = support::provision_roles(&prefix, false).await;
    // The hostile catalog, and a second instance of it that describes itself at the cart's prefix.
    let own = EventSigner::new(Arc::new(ServiceKeys::generate(ServiceName::CATALOG)), Arc::new(KeyDirectory::default()));
    let (catalog_url, seen) = hostile("/catalog", &own).await;
    let (impostor_url, impostor_seen) = hostile("/cart", &own).await;
    let fragments =
        BTreeMap::from([(ServiceName::CATALOG, FragmentSettings { upstreams: Some(format!("{catalog_url},{impostor_url}")), ..FragmentSettings::default() })]);
    let app = spawn_with(Backend::Postgres, Options { fragments, provisioned: Some((prefix.clone(), urls.clone())), ..Options::default() }).await;
    let mut attempts = Vec::new();

    // The site admin browses the catalog with a guest cart's cookie in their browser.
    let ada = app.sign_in(ADMIN, PASSWORD).await;
    let browser = format!("{}; tessera_cart=guest-cart-key", ada.both());
    for path in ["/catalog", "/catalog/p/anything", "/"] {
        let response = app.get(path, Some(&browser)).await;
        let planted: Vec<String> = response.headers().get_all("set-cookie").iter().map(|value| value.to_str().unwrap().to_owned()).collect();
        let kept = planted.iter().any(|cookie| cookie.contains("planted"));
        attempts.push(attempt("set the shell's session cookies and the cart's guest cookie", !kept, format!("{path}: Set-Cookie {planted:?}")));
    }
    let recorded = seen.lock().unwrap().clone();
    assert!(recorded.iter().any(|(path, _)| path == "/catalog/widget"), "the home page asked the catalog's widget: {recorded:?}");
    let cookies: Vec<&str> = recorded.iter().map(|(_, cookie)| cookie.as_str()).collect();
    let leaked = cookies.iter().any(|cookie| cookie.contains(&ada.refresh) || cookie.contains("tessera_refresh") || cookie.contains("guest-cart-key"));
    let names: Vec<Vec<&str>> =
        cookies.iter().map(|cookie| cookie.split("; ").filter_map(|pair| pair.split_once('=').map(|(name, _)| name)).collect()).collect();
    attempts.push(attempt("read the refresh token or the cart's guest cookie", !leaked, format!("received cookies named {names:?}")));
    let site_token = ada.access.split_once('=').map(|(_, token)| token).unwrap_or_default().to_owned();
    let got_site_token = cookies.iter().any(|cookie| cookie.contains(&site_token));
    attempts.push(attempt("read the admin's site token", !got_site_token, "only its own token, audience tessera:catalog"));
    let stolen = cookies.iter().find_map(|cookie| cookie.split("; ").find(|pair| pair.starts_with("tessera_access="))).expect("a catalog token").to_owned();

    // Replays of what it recorded.
    let grant = app.post_form_from_site("/admin/users/roles", "user_id=anyone&admin=on", &stolen, &app.settings.host.login.public_url).await;
    let refused = grant.status().is_client_error() || grant.headers().get("location").is_some_and(|to| to.to_str().unwrap().starts_with("/login"));
    attempts.push(attempt("replay its token at the shell's admin API", refused, grant.status().to_string()));
    let account = app.get("/account", Some(&stolen)).await;
    let location = account.headers().get("location").map(|to| to.to_str().unwrap().to_owned()).unwrap_or_default();
    attempts.push(attempt("replay its token at the shell's account page", location.starts_with("/login"), format!("{} to {location}", account.status())));
    for (what, path) in [("replay its token at the cart", "/cart"), ("replay its token at inventory's admin pages", "/admin/inventory")] {
        let (status, html) = app.text(path, Some(&stolen)).await;
        attempts.push(attempt(what, !html.contains("Ada Admin"), format!("{status}, as a guest")));
    }

    // Events and service calls, signed with the key it holds (which the site learned from its
    // description), or with keys of its making.
    let now = shared_auth::keys::now_seconds();
    let envelope = Envelope {
        id: uuid::Uuid::new_v4().to_string(),
        event_type: StockChanged::TYPE.into(),
        version: 1,
        aggregate_type: "sku".into(),
        aggregate_id: "MUG-STN-01".into(),
        sequence: i64::MAX / 2,
        occurred_at_ms: now * 1000,
        producer: ServiceName::CATALOG,
        payload: serde_json::json!({ "sku": "MUG-STN-01", "on_hand": 0, "available": 0 }),
    };
    let body = serde_json::to_vec(&envelope).unwrap();
    let (status, answer) = post_signed(&app, "/cart/events", &own.sign(&body, now), body).await;
    attempts.push(attempt("publish inventory.stock_changed (inventory's) to the cart, as itself", status == StatusCode::FORBIDDEN, answer));
    let as_inventory = serde_json::to_vec(&Envelope { producer: ServiceName::INVENTORY, ..envelope.clone() }).unwrap();
    let renamed = |mut headers: [(&'static str, String); 3], to: &ServiceName| {
        assert_eq!(headers[0].0, PRODUCER_HEADER);
        headers[0].1 = to.to_string();
        headers
    };
    let (status, answer) = post_signed(&app, "/cart/events", &renamed(own.sign(&as_inventory, now), &ServiceName::INVENTORY), as_inventory.clone()).await;
    attempts.push(attempt("publish it as inventory, with its own key (also published under inventory's name)", status == StatusCode::UNAUTHORIZED, answer));
    let made_up = EventSigner::new(Arc::new(ServiceKeys::generate(ServiceName::INVENTORY)), Arc::new(KeyDirectory::default()));
    let (status, answer) = post_signed(&app, "/cart/events", &made_up.sign(&as_inventory, now), as_inventory).await;
    attempts.push(attempt("publish it as inventory, with a key of its making", status == StatusCode::SERVICE_UNAVAILABLE, answer));
    let reservation =
        serde_json::to_vec(&serde_json::json!({ "idempotency_key": "hostile-1", "owner": "u", "lines": [{ "sku": "MUG-STN-01", "quantity": 99 }] })).unwrap();
    let path = tessera_contracts::inventory::RESERVATIONS_PATH;
    let calls = CallSigner::keyed(own.clone());
    let (status, answer) = post_signed(&app, path, &calls.sign("POST", path, &reservation, now), reservation.clone()).await;
    attempts.push(attempt("reserve stock in inventory (the cart's API), as itself", status == StatusCode::FORBIDDEN, answer));
    let as_cart = renamed(calls.sign("POST", path, &reservation, now), &ServiceName::CART);
    let (status, answer) = post_signed(&app, path, &as_cart, reservation.clone()).await;
    attempts.push(attempt("reserve stock in inventory, as the cart", status == StatusCode::FORBIDDEN, answer));
    let (status, answer) = post_signed(&app, path, &[], reservation).await;
    attempts.push(attempt("reserve stock in inventory, unsigned", status == StatusCode::FORBIDDEN, answer));
    let payment = serde_json::to_vec(&serde_json::json!({ "amount_cents": 1, "currency": "EUR", "reference": "hostile" })).unwrap();
    let paths = tessera_contracts::payments::PAYMENTS_PATH;
    let (status, answer) = post_signed(&app, paths, &calls.sign("POST", paths, &payment, now), payment).await;
    attempts.push(attempt("create a payment at the provider (the cart's API)", status.is_client_error(), answer));

    // The instance that describes itself at the cart's prefix is never routed to.
    for _ in 0..6 {
        app.get("/catalog", None).await;
    }
    let (status, html) = app.text("/cart", None).await;
    let impostor_reached = !impostor_seen.lock().unwrap().iter().all(|(path, _)| path == DESCRIPTOR_PATH || path == READINESS_PATH);
    attempts.push(attempt(
        "claim the cart's prefix",
        !impostor_reached && !html.contains("the catalog"),
        format!("/cart answered {status} by the real cart; the impostor got no visitor's request"),
    ));

    // Its own database role against the other schemas.
    let catalog = sqlx::any::AnyPoolOptions::new().max_connections(1).connect(&urls["catalog"]).await.unwrap();
    for (what, sql) in [
        ("read the shell's signing keys", format!("SELECT kid, pkcs8 FROM {prefix}shell.signing_keys")),
        ("read the shell's password hashes", format!("SELECT password_hash FROM {prefix}shell.users")),
        ("make itself a site admin", format!("UPDATE {prefix}shell.users SET roles = 'shopper admin'")),
        ("read the cart's orders", format!("SELECT * FROM {prefix}cart.orders")),
        ("change inventory's stock", format!("UPDATE {prefix}inventory.stock_levels SET on_hand = 0")),
    ] {
        let answer = support::sqlstate(&catalog, &sql).await;
        let refused = answer.as_ref().is_err_and(|(code, _)| code == "42501");
        attempts.push(attempt(what, refused, format!("{answer:?}")));
    }
    catalog.close().await;

    eprintln!("a hostile catalog's attempts:");
    for Attempt { what, answer, refused } in &attempts {
        eprintln!("  {} {what}: {answer}", if *refused { "refused" } else { "SUCCEEDED" });
    }
    let succeeded: Vec<&str> = attempts.iter().filter(|attempt| !attempt.refused).map(|attempt| attempt.what).collect();
    assert!(succeeded.is_empty(), "the hostile fragment got through: {succeeded:?}");
    // And nothing changed: the roles are as seeded.
    let shell = database(&app, "shell").await;
    let admins = support::count(&shell, "SELECT COUNT(*) FROM users WHERE (' ' || roles || ' ') LIKE '% admin %'").await;
    assert_eq!(admins, 1, "the seeded site admin only");
}
