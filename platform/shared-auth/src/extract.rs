//! Auth as a type in the signature: axum extractors and Leptos server-function helpers.
//!
//! Handlers never read the cookie themselves. `MaybeUser` never fails; `AuthUser` answers 401 without a
//! valid token; `RequireRole<R>` answers 403 when the user lacks role `R`. All of them need a [`Verifier`]
//! reachable from the router state (`Verifier: FromRef<S>`). The verified user is cached in the request's
//! extensions, so several extractors on one request verify once.
//!
//! Inside Leptos server functions and SSR, [`current_user`] and [`require_role`] do the same from the
//! request parts and the `Verifier` that the fragment provides as context.

use std::marker::PhantomData;

use axum::extract::{FromRef, FromRequestParts};
use axum::response::{IntoResponse, Response};
use http::request::Parts;
use http::StatusCode;
use tessera_contracts::ApiError;

use crate::verify::Verifier;
use crate::{Role, SessionUser};

/// The verified user of this request, cached in the request extensions.
#[derive(Clone)]
struct VerifiedUser(Option<SessionUser>);

async fn user_of(parts: &mut Parts, verifier: &Verifier) -> Option<SessionUser> {
    if let Some(VerifiedUser(user)) = parts.extensions.get::<VerifiedUser>() {
        return user.clone();
    }
    let user = verifier.user_from_headers(&parts.headers).await;
    parts.extensions.insert(VerifiedUser(user.clone()));
    user
}

/// Records the user of a request as established by a layer in front of the handlers (a fragment on
/// another domain signs its users in at the shell: `tessera_host::relying_party`). Every extractor and
/// [`current_user`] then take it as it is, without looking at the shell's cookie.
pub fn vouch(extensions: &mut http::Extensions, user: Option<SessionUser>) {
    extensions.insert(VerifiedUser(user));
}

/// The signed-in user, if any.
#[derive(Debug, Clone)]
pub struct MaybeUser(pub Option<SessionUser>);

/// A signed-in user; 401 otherwise.
#[derive(Debug, Clone)]
pub struct AuthUser(pub SessionUser);

/// A signed-in user with role `R`; 401 or 403 otherwise.
#[derive(Debug, Clone)]
pub struct RequireRole<R: RoleMarker>(pub SessionUser, pub PhantomData<R>);

/// A role as a type, for [`RequireRole`].
pub trait RoleMarker: Send + Sync + 'static {
    const ROLE: Role;
}

pub struct InventoryAdmin;
impl RoleMarker for InventoryAdmin {
    const ROLE: Role = Role::InventoryAdmin;
}
pub struct SiteAdmin;
impl RoleMarker for SiteAdmin {
    const ROLE: Role = Role::Admin;
}
pub struct CatalogEditor;
impl RoleMarker for CatalogEditor {
    const ROLE: Role = Role::CatalogEditor;
}

/// Why an auth extractor refused the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthRejection {
    Unauthenticated,
    Forbidden(Role),
}

impl IntoResponse for AuthRejection {
    fn into_response(self) -> Response {
        match self {
            AuthRejection::Unauthenticated => (StatusCode::UNAUTHORIZED, "Please sign in first.").into_response(),
            AuthRejection::Forbidden(role) => (StatusCode::FORBIDDEN, format!("This needs the {} role.", role.label())).into_response(),
        }
    }
}

impl<S> FromRequestParts<S> for MaybeUser
where
    Verifier: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Ok(MaybeUser(user_of(parts, &Verifier::from_ref(state)).await))
    }
}

impl<S> FromRequestParts<S> for AuthUser
where
    Verifier: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = AuthRejection;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        user_of(parts, &Verifier::from_ref(state)).await.map(AuthUser).ok_or(AuthRejection::Unauthenticated)
    }
}

impl<S, R> FromRequestParts<S> for RequireRole<R>
where
    Verifier: FromRef<S>,
    S: Send + Sync,
    R: RoleMarker,
{
    type Rejection = AuthRejection;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let user = user_of(parts, &Verifier::from_ref(state)).await.ok_or(AuthRejection::Unauthenticated)?;
        if user.has_role(R::ROLE) {
            Ok(RequireRole(user, PhantomData))
        } else {
            Err(AuthRejection::Forbidden(R::ROLE))
        }
    }
}

/// The signed-in user of the current server function call or SSR render, if any.
///
/// Needs the request [`Parts`] (provided by `leptos_axum`) and a [`Verifier`] (provided by the fragment)
/// in the reactive context.
pub async fn current_user() -> Option<SessionUser> {
    let mut parts = leptos::prelude::use_context::<Parts>()?;
    let verifier = leptos::prelude::use_context::<Verifier>()?;
    user_of(&mut parts, &verifier).await
}

/// The signed-in user, or [`ApiError::Unauthorized`].
pub async fn require_user() -> Result<SessionUser, ApiError> {
    current_user().await.ok_or(ApiError::Unauthorized)
}

/// The signed-in user with `role`, or 401/403 as an [`ApiError`].
pub async fn require_role(role: Role) -> Result<SessionUser, ApiError> {
    let user = require_user().await?;
    if user.has_role(role) {
        Ok(user)
    } else {
        Err(ApiError::Forbidden(format!("this needs the {} role", role.label())))
    }
}
