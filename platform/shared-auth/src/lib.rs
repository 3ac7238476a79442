//! Tessera's one login, shared by the shell and every fragment.
//!
//! The shell signs short-lived access tokens (JWT, EdDSA over Ed25519, `kid` in the header) and sets them
//! in an HttpOnly cookie; every fragment verifies them with the shell's public keys, which it fetches from
//! `/.well-known/jwks.json` and caches. Fragments never hold the signing key and check roles themselves.
//!
//! Layout:
//! - this file: the types every side shares, compiled for the browser too ([`Role`], [`Claims`],
//!   [`SessionUser`]);
//! - `keys` (feature `server`): the key ring (Ed25519 keys generated on first run and by
//!   `tessera keys rotate`, kept by the shell in its database), which key signs when, and the JWKS it
//!   publishes;
//! - `verify`: [`Verifier`](verify::Verifier), the only way a token becomes a user: pinned algorithm,
//!   issuer, audience, `typ`, lifetime cap, keys by `kid` with a refetch cooldown; the same checks with
//!   other expectations for the OpenID Connect tokens;
//! - `oidc`: the OpenID Connect paths, token kinds and claims the shell (provider) and fragments on other
//!   domains (relying parties) share;
//! - `password`: argon2id hashing with a bounded input length;
//! - `redirect`: the one check that a sign-in sends the browser back only to a path of this site;
//! - `cookie`: the session cookies' names and attributes for both deploy shapes (`__Host-` same-origin,
//!   `Domain` for subdomains);
//! - `csrf`: the cross-site request check every state-changing request passes;
//! - `extract`: axum extractors ([`MaybeUser`](extract::MaybeUser), [`AuthUser`](extract::AuthUser),
//!   [`RequireRole`](extract::RequireRole)) and the Leptos server-function helpers
//!   ([`current_user`](extract::current_user), [`require_role`](extract::require_role)).
//!
//! Libraries: `jsonwebtoken` (with `ring`) for JWT encoding and validation rather than hand-rolled JOSE,
//! `ring` to generate the Ed25519 key (already in the tree through `jsonwebtoken`), `argon2` (RustCrypto)
//! for passwords, `cookie` for Cookie header parsing.

use serde::{Deserialize, Serialize};

#[cfg(feature = "server")]
pub mod cookie;
#[cfg(feature = "server")]
pub mod csrf;
#[cfg(feature = "server")]
pub mod extract;
#[cfg(feature = "server")]
pub mod keys;
#[cfg(feature = "server")]
pub mod oidc;
#[cfg(feature = "server")]
pub mod password;
pub mod redirect;
#[cfg(feature = "server")]
pub mod verify;

/// Value of the `typ` claim of an access token; other token kinds (refresh) use other values.
pub const ACCESS_TOKEN_TYPE: &str = "access";

/// What a user may do: a value type of the contracts, since fragments name it in their descriptions too.
pub use tessera_contracts::domain::Role;

/// Claims of an access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Issuer: the shell's configured issuer name.
    pub iss: String,
    /// Audience: the site the token is good for.
    pub aud: String,
    /// Subject: the user id.
    pub sub: String,
    /// Expiry, seconds since the epoch.
    pub exp: i64,
    /// Issued at, seconds since the epoch.
    pub iat: i64,
    /// Token kind, [`ACCESS_TOKEN_TYPE`] for access tokens.
    pub typ: String,
    /// The session (refresh-token family) this token belongs to; revoking the session ends the token at
    /// the shell at once.
    pub sid: String,
    pub email: String,
    pub name: String,
    pub roles: Vec<Role>,
}

/// The signed-in user, as a fragment sees it after verifying the token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionUser {
    pub id: String,
    pub email: String,
    pub name: String,
    pub roles: Vec<Role>,
}

impl SessionUser {
    pub fn has_role(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }
}

impl From<Claims> for SessionUser {
    fn from(claims: Claims) -> Self {
        SessionUser { id: claims.sub, email: claims.email, name: claims.name, roles: claims.roles }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_round_trip_through_their_names() {
        for role in Role::ALL {
            assert_eq!(Role::parse(role.as_str()), Some(role));
            assert_eq!(serde_json::to_string(&role).unwrap(), format!("\"{}\"", role.as_str()));
        }
        assert_eq!(Role::parse("root"), None);
    }
}
