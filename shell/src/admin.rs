//! Account administration for site admins: roles, and "sign out everywhere".

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
use crate::{sessions, users, ShellState};

/// The signed-in site admin, or the page that says why not.
fn require_admin(state: &ShellState, user: Option<SessionUser>) -> Result<SessionUser, Response> {
    match user {
        Some(user) if user.has_role(Role::Admin) => Ok(user),
        Some(user) => {
            let main = view! { <h1>"Not allowed"</h1><p>"Managing accounts needs the site admin role."</p> };
            Err((StatusCode::FORBIDDEN, Html(page(state, Some(&user), None, "Not allowed", main))).into_response())
        }
        None => Err(see_other("/login?next=/admin/users", [])),
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
        Err(response) => return response,
    };
    let notice = query.ok().and_then(|Query(query)| query.notice).and_then(|notice| match notice.as_str() {
        "roles-saved" => Some("Roles saved. They apply from the user's next request.".to_owned()),
        "signed-out" => Some("Every session of that account is signed out.".to_owned()),
        _ => None,
    });
    render(&state, &admin, notice, None, StatusCode::OK).await
}

/// `POST /admin/users/roles`: `user_id` and one `<role>=on` field per granted role.
pub(crate) async fn set_roles(State(state): State<ShellState>, MaybeUser(user): MaybeUser, form: Result<Form<HashMap<String, String>>, FormRejection>) -> Response {
    let admin = match require_admin(&state, user) {
        Ok(admin) => admin,
        Err(response) => return response,
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
pub(crate) async fn sign_out_everywhere(State(state): State<ShellState>, MaybeUser(user): MaybeUser, form: Result<Form<SignOutForm>, FormRejection>) -> Response {
    let admin = match require_admin(&state, user) {
        Ok(admin) => admin,
        Err(response) => return response,
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
    match sessions::revoke_all(&state.db, &form.user_id, "signed out everywhere by an admin").await {
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
