//! Site administration: accounts (roles, "sign out everywhere"), event traffic, and the fragments the
//! site routes to with the health of their instances.

use std::collections::HashMap;

use axum::extract::rejection::FormRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use axum::Form;
use leptos::prelude::*;
use serde::Deserialize;
use shared_auth::extract::MaybeUser;
use shared_auth::{Role, SessionUser};

use crate::pages::{page, see_other, server_error};
use crate::registry::{Fragment, Upstream};
use crate::{session_store, users, ShellState};

/// The signed-in site admin, or the page that says why not.
fn require_admin(state: &ShellState, user: Option<SessionUser>) -> Result<SessionUser, Box<Response>> {
    match user {
        Some(user) if user.has_role(Role::Admin) => Ok(user),
        Some(user) => {
            let main = view! { <h1>"Not allowed"</h1><p>"Managing accounts needs the site admin role."</p> };
            Err(Box::new((StatusCode::FORBIDDEN, Html(page(state, Some(&user), None, "Not allowed", main))).into_response()))
        }
        None => Err(Box::new(see_other("/login?next=/admin/users", []))),
    }
}

#[derive(Deserialize, Default)]
pub(crate) struct UsersQuery {
    notice: Option<String>,
}

async fn render(state: &ShellState, admin: &SessionUser, notice: Option<String>, error: Option<String>, status: StatusCode) -> Response {
    let accounts = match users::list(&state.db).await {
        Ok(accounts) => accounts,
        Err(error) => {
            tracing::error!(%error, "user list failed");
            return server_error(state);
        }
    };
    let rows = accounts
        .into_iter()
        .map(|account| {
            let boxes = Role::ALL
                .into_iter()
                .map(|role| {
                    view! {
                        <label class="role">
                            <input type="checkbox" name=role.as_str() value="on" checked=account.has_role(role)/>
                            {role.label()}
                        </label>
                    }
                })
                .collect_view();
            view! {
                <tr data-email=account.email.clone()>
                    <td>{account.name.clone()}<br/><small>{account.email.clone()}</small></td>
                    <td>
                        <form method="post" action="/admin/users/roles" class="inline">
                            <input type="hidden" name="user_id" value=account.id.clone()/>
                            {boxes}
                            <button type="submit">"Save roles"</button>
                        </form>
                    </td>
                    <td>
                        <form method="post" action="/admin/users/sign-out" class="inline">
                            <input type="hidden" name="user_id" value=account.id.clone()/>
                            <button type="submit">"Sign out everywhere"</button>
                        </form>
                    </td>
                </tr>
            }
        })
        .collect_view();
    let main = view! {
        <h1>"Accounts"</h1>
        {notice.map(|notice| view! { <p class="notice" role="status" data-testid="notice">{notice}</p> })}
        {error.map(|error| view! { <p class="error" role="alert" data-testid="form-error">{error}</p> })}
        <table class="accounts"><tbody>{rows}</tbody></table>
    };
    (status, Html(page(state, Some(admin), None, "Accounts", main))).into_response()
}

pub(crate) async fn users_page(
    State(state): State<ShellState>,
    MaybeUser(user): MaybeUser,
    query: Result<Query<UsersQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let admin = match require_admin(&state, user) {
        Ok(admin) => admin,
        Err(response) => return *response,
    };
    let notice = query.ok().and_then(|Query(query)| query.notice).and_then(|notice| match notice.as_str() {
        "roles-saved" => Some("Roles saved. They apply from the user's next request.".to_owned()),
        "signed-out" => Some("Every session of that account is signed out.".to_owned()),
        _ => None,
    });
    render(&state, &admin, notice, None, StatusCode::OK).await
}

/// `POST /admin/users/roles`: `user_id` and one `<role>=on` field per granted role.
pub(crate) async fn set_roles(
    State(state): State<ShellState>,
    MaybeUser(user): MaybeUser,
    form: Result<Form<HashMap<String, String>>, FormRejection>,
) -> Response {
    let admin = match require_admin(&state, user) {
        Ok(admin) => admin,
        Err(response) => return *response,
    };
    let Ok(Form(fields)) = form else {
        return render(&state, &admin, None, Some("The form could not be read.".into()), StatusCode::BAD_REQUEST).await;
    };
    let Some(user_id) = fields.get("user_id").filter(|id| !id.is_empty() && id.len() <= 64) else {
        return render(&state, &admin, None, Some("Which account? The form was incomplete.".into()), StatusCode::BAD_REQUEST).await;
    };
    if let Some(unknown) = fields.keys().find(|key| *key != "user_id" && Role::parse(key).is_none()) {
        let message = format!("{unknown:?} is not a role.");
        return render(&state, &admin, None, Some(message), StatusCode::UNPROCESSABLE_ENTITY).await;
    }
    let roles: Vec<Role> = Role::ALL.into_iter().filter(|role| fields.get(role.as_str()).is_some_and(|value| value == "on")).collect();
    if *user_id == admin.id && !roles.contains(&Role::Admin) {
        let message = "You cannot take the site admin role from yourself; ask another admin.".to_owned();
        return render(&state, &admin, None, Some(message), StatusCode::CONFLICT).await;
    }
    match users::set_roles(&state.db, user_id, &roles).await {
        Ok(true) => {
            tracing::info!(admin = %admin.id, user = %user_id, ?roles, "roles changed");
            see_other("/admin/users?notice=roles-saved", [])
        }
        Ok(false) => render(&state, &admin, None, Some("There is no such account.".into()), StatusCode::NOT_FOUND).await,
        Err(error) => {
            tracing::error!(%error, "role change failed");
            server_error(&state)
        }
    }
}

#[derive(Deserialize)]
pub(crate) struct SignOutForm {
    user_id: String,
}

/// `POST /admin/users/sign-out`: revokes every session of an account.
pub(crate) async fn sign_out_everywhere(
    State(state): State<ShellState>,
    MaybeUser(user): MaybeUser,
    form: Result<Form<SignOutForm>, FormRejection>,
) -> Response {
    let admin = match require_admin(&state, user) {
        Ok(admin) => admin,
        Err(response) => return *response,
    };
    let Ok(Form(form)) = form else {
        return render(&state, &admin, None, Some("Which account? The form was incomplete.".into()), StatusCode::BAD_REQUEST).await;
    };
    match users::find(&state.db, &form.user_id).await {
        Ok(Some(_)) => {}
        Ok(None) => return render(&state, &admin, None, Some("There is no such account.".into()), StatusCode::NOT_FOUND).await,
        Err(error) => {
            tracing::error!(%error, "user lookup failed");
            return server_error(&state);
        }
    }
    match session_store::revoke_all(&state.db, &form.user_id, "signed out everywhere by an admin").await {
        Ok(count) => {
            tracing::info!(admin = %admin.id, user = %form.user_id, sessions = count, "signed out everywhere");
            see_other("/admin/users?notice=signed-out", [])
        }
        Err(error) => {
            tracing::error!(%error, "revocation failed");
            server_error(&state)
        }
    }
}

/// `GET /admin/events`: every service's event traffic (outbox depth, oldest undelivered event, dead
/// letters with a replay button), gathered from the fragments in parallel like the home-page widgets.
pub(crate) async fn events_page(
    State(state): State<ShellState>,
    MaybeUser(user): MaybeUser,
    headers: axum::http::HeaderMap,
    session: Option<axum::Extension<crate::session_middleware::CurrentSession>>,
) -> Response {
    let session = session.map(|axum::Extension(session)| session).unwrap_or_default();
    let admin = match require_admin(&state, user) {
        Ok(admin) => admin,
        Err(response) => return *response,
    };
    let visitor = crate::widgets::Visitor { cookie: headers.get(axum::http::header::COOKIE).cloned(), session };
    let fragments = state.registry.fragments();
    let statuses = futures::future::join_all(fragments.iter().map(|fragment| event_status(&state, fragment, &visitor))).await;
    let rows = fragments.iter().zip(statuses).map(|(fragment, status)| event_row(fragment, status)).collect_view();
    let main = view! {
        <h1>"Events"</h1>
        <table class="events">
            <thead><tr><th>"Service"</th><th>"Outbox depth"</th><th>"Oldest undelivered"</th><th>"Waiting, per subscriber"</th><th>"Received"</th><th>"Dead letters"</th></tr></thead>
            <tbody>{rows}</tbody>
        </table>
    };
    Html(page(&state, Some(&admin), None, "Events", main)).into_response()
}

/// A fragment's event status (`<prefix>/events/status`, asked as the signed-in admin), if it answers.
async fn event_status(state: &ShellState, fragment: &Fragment, visitor: &crate::widgets::Visitor) -> Option<serde_json::Value> {
    let request = visitor.get_request(&format!("{}/events/status", fragment.prefix));
    match state.registry.forward(fragment, request, fragment.timeout).await {
        Ok(response) if response.status().is_success() => {
            axum::body::to_bytes(response.into_body(), 256 * 1024).await.ok().and_then(|body| serde_json::from_slice::<serde_json::Value>(&body).ok())
        }
        _ => None,
    }
}

/// One service's row of the events page: outbox depth, oldest undelivered, what each subscriber still
/// waits for (marked when it is behind the bound, `TESSERA_EVENTS_MAX_LAG_MS`), received, dead letters.
fn event_row(fragment: &Fragment, status: Option<serde_json::Value>) -> AnyView {
    match status {
        None => view! {
            <tr data-service=fragment.name.to_string()><td>{fragment.title.clone()}</td><td colspan="5">"not reachable right now"</td></tr>
        }
        .into_any(),
        Some(status) => {
            let depth = status["outbox_depth"].as_i64().unwrap_or_default();
            let oldest = status["oldest_undelivered_age_ms"].as_i64().map(|ms| format!("{:.1} s", ms as f64 / 1000.0)).unwrap_or_else(|| "—".into());
            let received = status["received"].as_i64().unwrap_or_default();
            let waiting = status["subscriptions"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .map(|lag| {
                    let behind = lag["behind"].as_bool().unwrap_or_default();
                    let text = format!(
                        "→ {}: {} waiting, {:.1} s{}",
                        lag["subscriber"].as_str().unwrap_or(""),
                        lag["pending"].as_i64().unwrap_or_default(),
                        lag["lag_ms"].as_i64().unwrap_or_default() as f64 / 1000.0,
                        if behind { " — behind" } else { "" }
                    );
                    view! { <li data-testid="subscription-lag" data-behind=behind.to_string()>{text}</li> }
                })
                .collect_view();
            let dead = status["dead_letters"].as_array().cloned().unwrap_or_default();
            let dead_count = dead.len();
            let replay_action = format!("{}/events/replay", fragment.prefix);
            let dead_list = dead
                .into_iter()
                .map(|letter| {
                    let text = format!(
                        "#{} {} {} → {} ({} attempts): {}",
                        letter["seq"],
                        letter["event_type"].as_str().unwrap_or(""),
                        letter["aggregate_id"].as_str().unwrap_or(""),
                        letter["subscriber"].as_str().unwrap_or(""),
                        letter["attempts"],
                        letter["last_error"].as_str().unwrap_or("")
                    );
                    view! { <li>{text}</li> }
                })
                .collect_view();
            view! {
                <tr data-service=fragment.name.to_string()>
                    <td>{fragment.title.clone()}</td>
                    <td data-testid="outbox-depth">{depth}</td>
                    <td>{oldest}</td>
                    <td><ul>{waiting}</ul></td>
                    <td>{received}</td>
                    <td>
                        <span data-testid="dead-letters">{dead_count}</span>
                        <ul>{dead_list}</ul>
                        {(dead_count > 0).then(|| view! {
                            <form method="post" action=replay_action class="inline"><button type="submit">"Replay dead letters"</button></form>
                        })}
                    </td>
                </tr>
            }
            .into_any()
        }
    }
}

/// `GET /admin/fragments`: every fragment the site routes to — in this process or its instances, with
/// each instance's readiness, requests in flight, build, contract version, and why it is out of rotation
/// (an incompatible contract included). Site admins only.
pub(crate) async fn fragments_page(State(state): State<ShellState>, MaybeUser(user): MaybeUser) -> Response {
    let admin = match require_admin(&state, user) {
        Ok(admin) => admin,
        Err(response) => return *response,
    };
    let rows = state
        .registry
        .fragments()
        .into_iter()
        .map(|fragment| {
            let instances = match &fragment.upstream {
                Upstream::InProcess(_) => view! { <li>"in this process"</li> }.into_any(),
                Upstream::Instances(pool) => pool
                    .instances
                    .iter()
                    .map(|instance| {
                        let descriptor = instance.descriptor();
                        let build = descriptor.as_ref().and_then(|d| d.build_id.clone()).unwrap_or_else(|| "—".into());
                        let contract = descriptor.as_ref().map(|d| format!("v{}", d.contract_version)).unwrap_or_else(|| "—".into());
                        let health =
                            if instance.is_ready() { "ready".to_owned() } else { format!("out of rotation: {}", instance.problem().unwrap_or_default()) };
                        view! {
                            <li data-instance=instance.base.to_string() data-ready=instance.is_ready().to_string()>
                                <code>{instance.base.to_string()}</code> " · " {health} " · build " <code>{build}</code>
                                " · contract " {contract} " · " {instance.in_flight()} " in flight"
                            </li>
                        }
                    })
                    .collect_view()
                    .into_any(),
            };
            let events = fragment
                .publishes
                .iter()
                .map(|event| format!("publishes {} v{}", event.event_type, event.version))
                .chain(fragment.consumes.iter().map(|event| format!("consumes {} v{}", event.event_type, event.version)))
                .collect::<Vec<_>>()
                .join(", ");
            view! {
                <tr data-fragment=fragment.name.to_string()>
                    <td>{fragment.title.clone()}<br/><small><code>{fragment.prefix.clone()}</code></small></td>
                    <td><ul>{instances}</ul></td>
                    <td><small>{events}</small></td>
                </tr>
            }
        })
        .collect_view();
    let main = view! {
        <h1>"Fragments"</h1>
        <p>{format!("This site runs contract v{}.", tessera_contracts::CONTRACT_VERSION)}</p>
        <table class="fragments">
            <thead><tr><th>"Fragment"</th><th>"Instances"</th><th>"Events"</th></tr></thead>
            <tbody>{rows}</tbody>
        </table>
    };
    Html(page(&state, Some(&admin), None, "Fragments", main)).into_response()
}
