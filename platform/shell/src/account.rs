//! The account page: who you are, your active sessions (sign one out), and changing your password.

use axum::extract::rejection::FormRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::{Extension, Form};
use leptos::prelude::*;
use serde::Deserialize;
use shared_auth::extract::MaybeUser;
use shared_auth::SessionUser;

use crate::pages::{page, see_other, server_error, start_session};
use crate::session_middleware::CurrentSession;
use crate::session_store::{self, now_seconds};
use crate::users::{self, NewPassword};
use crate::{throttle, ShellState};

#[derive(Deserialize, Default)]
pub(crate) struct AccountQuery {
    notice: Option<String>,
}

fn when(seconds: i64, now: i64) -> String {
    let ago = (now - seconds).max(0);
    match ago {
        0..60 => "just now".into(),
        60..3600 => format!("{} min ago", ago / 60),
        3600..86400 => format!("{} h ago", ago / 3600),
        _ => format!("{} days ago", ago / 86400),
    }
}

async fn render(
    state: &ShellState,
    session: &SessionUser,
    current: Option<&str>,
    notice: Option<String>,
    error: Option<String>,
    status: StatusCode,
) -> Response {
    let stored = match users::find(&state.db, &session.id).await {
        Ok(Some(stored)) => stored,
        Ok(None) => return see_other("/login", state.cookies.clear_cookies()),
        Err(error) => {
            tracing::error!(%error, "account query failed");
            return server_error(state);
        }
    };
    let now = now_seconds();
    let active = match session_store::list_active(&state.db, &stored.id, now).await {
        Ok(active) => active,
        Err(error) => {
            tracing::error!(%error, "session list failed");
            return server_error(state);
        }
    };
    let roles = stored.roles.iter().map(|role| view! { <li>{role.label()}</li> }).collect_view();
    let rows = active
        .into_iter()
        .map(|info| {
            let this = current == Some(info.id.as_str());
            let device = if info.user_agent.is_empty() { "unknown device".to_owned() } else { info.user_agent.clone() };
            view! {
                <tr data-testid="session-row">
                    <td>{device} {this.then_some(" (this browser)")}</td>
                    <td>{when(info.created_at, now)}</td>
                    <td>{when(info.last_seen_at, now)}</td>
                    <td>
                        <form method="post" action="/account/sessions/revoke" class="inline">
                            <input type="hidden" name="session_id" value=info.id.clone()/>
                            <button type="submit" class="link">"Sign out"</button>
                        </form>
                    </td>
                </tr>
            }
        })
        .collect_view();
    let main = view! {
        <h1>"Your account"</h1>
        {notice.map(|notice| view! { <p class="notice" role="status" data-testid="notice">{notice}</p> })}
        {error.map(|error| view! { <p class="error" role="alert" data-testid="form-error">{error}</p> })}
        <dl class="account">
            <dt>"Name"</dt><dd data-testid="account-name">{stored.name.clone()}</dd>
            <dt>"Email"</dt><dd data-testid="account-email">{stored.email.clone()}</dd>
            <dt>"Roles"</dt><dd><ul>{roles}</ul></dd>
        </dl>
        <h2>"Where you are signed in"</h2>
        <table class="sessions">
            <thead><tr><th>"Device"</th><th>"Signed in"</th><th>"Last active"</th><th>"Actions"</th></tr></thead>
            <tbody>{rows}</tbody>
        </table>
        <h2>"Change your password"</h2>
        <p>"Changing your password signs you out everywhere else."</p>
        <form method="post" action="/account/password" class="stacked">
            <label>"Current password" <input type="password" name="current_password" autocomplete="current-password" required/></label>
            <label>"New password (8 to 128 characters)" <input type="password" name="new_password" autocomplete="new-password" required minlength="8"/></label>
            <button type="submit">"Change password"</button>
        </form>
    };
    (status, Html(page(state, Some(session), None, "Account", main))).into_response()
}

pub(crate) async fn account(
    State(state): State<ShellState>,
    MaybeUser(user): MaybeUser,
    Extension(current): Extension<CurrentSession>,
    query: Result<Query<AccountQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Some(user) = user else {
        return see_other("/login?next=/account", []);
    };
    let notice = query.ok().and_then(|Query(query)| query.notice).and_then(|notice| match notice.as_str() {
        "password-changed" => Some("Your password is changed, and every other session is signed out.".to_owned()),
        "session-ended" => Some("That session is signed out.".to_owned()),
        _ => None,
    });
    render(&state, &user, current.session_id(), notice, None, StatusCode::OK).await
}

#[derive(Deserialize)]
pub(crate) struct PasswordForm {
    current_password: String,
    new_password: String,
}

/// Changes the password, revokes every session of the user, and starts a new one for this browser.
pub(crate) async fn change_password(
    State(state): State<ShellState>,
    MaybeUser(user): MaybeUser,
    Extension(current): Extension<CurrentSession>,
    headers: HeaderMap,
    form: Result<Form<PasswordForm>, FormRejection>,
) -> Response {
    let Some(user) = user else {
        return see_other("/login?next=/account", []);
    };
    let form = match form {
        Ok(Form(form)) => form,
        Err(rejection) => {
            let status = if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE { StatusCode::PAYLOAD_TOO_LARGE } else { StatusCode::BAD_REQUEST };
            return render(&state, &user, current.session_id(), None, Some("Please fill in both password fields.".into()), status).await;
        }
    };
    let new_password = match NewPassword::parse(&form.new_password) {
        Ok(password) => password,
        Err(message) => return render(&state, &user, current.session_id(), None, Some(message.to_string()), StatusCode::UNPROCESSABLE_ENTITY).await,
    };
    // Wrong current passwords count like failed sign-ins (a stolen session must not become a way to
    // guess the password), counted first; a right one is taken back.
    let key = format!("password:{}", user.id);
    let counted = match throttle::count(&state.db, &state.throttle, &key, state.throttle.max_failures_per_account, session_store::now_seconds()).await {
        Ok(Some(counted)) => counted,
        Ok(None) => {
            let message = "Too many wrong current passwords. Please wait a few minutes and try again.".to_owned();
            let response = render(&state, &user, current.session_id(), None, Some(message), StatusCode::TOO_MANY_REQUESTS).await;
            return crate::pages::too_many(&state, response);
        }
        Err(error) => {
            tracing::error!(%error, "password change throttle failed");
            return server_error(&state);
        }
    };
    let busy = || async {
        let message = crate::pages::BUSY_MESSAGE.to_owned();
        crate::pages::come_back_soon(render(&state, &user, current.session_id(), None, Some(message), StatusCode::SERVICE_UNAVAILABLE).await)
    };
    let turns = state.hashing.of(&format!("user:{}", user.id));
    match users::check_password(&state.db, &turns, &user.id, &form.current_password).await {
        Ok(true) => {
            if let Err(error) = counted.take_back(&state.db).await {
                tracing::warn!(%error, "cannot take back a password check");
            }
        }
        Ok(false) => {
            let message = "Your current password is not right.".to_owned();
            return render(&state, &user, current.session_id(), None, Some(message), StatusCode::UNPROCESSABLE_ENTITY).await;
        }
        Err(users::UserError::Busy) => {
            if let Err(error) = counted.take_back(&state.db).await {
                tracing::warn!(%error, "cannot take back a password check");
            }
            return busy().await;
        }
        Err(error) => {
            tracing::error!(%error, "password check failed");
            return server_error(&state);
        }
    }
    match users::set_password(&state.db, &turns, &user.id, &new_password).await {
        Ok(()) => {}
        Err(users::UserError::Busy) => return busy().await,
        Err(error) => {
            tracing::error!(%error, "password change failed");
            return server_error(&state);
        }
    }
    match session_store::revoke_all(&state.db, &user.id, "password changed").await {
        Ok(count) => {
            tracing::info!(user = %user.id, sessions = count, "password changed; sessions revoked")
        }
        Err(error) => {
            tracing::error!(%error, "cannot revoke sessions after a password change");
            return server_error(&state);
        }
    }
    start_session(&state, &user, &headers, "/account?notice=password-changed").await
}

#[derive(Deserialize)]
pub(crate) struct RevokeForm {
    session_id: String,
}

/// Signs one of the user's own sessions out; 404 for any other id.
pub(crate) async fn revoke_session(
    State(state): State<ShellState>,
    MaybeUser(user): MaybeUser,
    Extension(current): Extension<CurrentSession>,
    form: Result<Form<RevokeForm>, FormRejection>,
) -> Response {
    let Some(user) = user else {
        return see_other("/login?next=/account", []);
    };
    let Ok(Form(form)) = form else {
        return render(&state, &user, current.session_id(), None, Some("Which session? The form was incomplete.".into()), StatusCode::BAD_REQUEST).await;
    };
    match session_store::revoke_own(&state.db, &user.id, &form.session_id).await {
        Ok(true) if current.session_id() == Some(form.session_id.as_str()) => see_other("/", state.cookies.clear_cookies()),
        Ok(true) => see_other("/account?notice=session-ended", []),
        Ok(false) => {
            let message = "There is no such active session on your account.".to_owned();
            render(&state, &user, current.session_id(), None, Some(message), StatusCode::NOT_FOUND).await
        }
        Err(error) => {
            tracing::error!(%error, "session revocation failed");
            server_error(&state)
        }
    }
}
