//! Tessera's one login, shared by the shell and every fragment.
//!
//! The shell signs short-lived access tokens (JWT, EdDSA over Ed25519, `kid` in the header) and sets them
//! in an HttpOnly cookie; every fragment verifies them with the shell's public keys, which it fetches from
//! `/.well-known/jwks.json` and caches. Fragments never hold the signing key and check roles themselves.
//!
//! Layout:
//! - this file: the types every side shares, compiled for the browser too ([`Role`], [`Claims`],
//!   [`SessionUser`]);
//! - `keys` (feature `server`): the signing key, generated on first run and kept in the data dir, and the
//!   JWKS it publishes;
//! - `verify`: [`Verifier`](verify::Verifier), the only way a token becomes a user: pinned algorithm,
//!   issuer, audience, `typ`, lifetime cap, keys by `kid` with a refetch cooldown;
//! - `password`: argon2id hashing with a bounded input length;
//! - `cookie`: the access cookie's attributes in one place;
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
pub mod extract;
#[cfg(feature = "server")]
pub mod keys;
#[cfg(feature = "server")]
pub mod password;
#[cfg(feature = "server")]
pub mod verify;

/// Name of the cookie that carries the access token.
pub const ACCESS_COOKIE: &str = "tessera_access";
/// Value of the `typ` claim of an access token; other token kinds (refresh) use other values.
pub const ACCESS_TOKEN_TYPE: &str = "access";

/// What a user may do. A role is granted by the shell and checked by each fragment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Shopper,
    CatalogEditor,
    InventoryAdmin,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Shopper, Role::CatalogEditor, Role::InventoryAdmin];

    /// Stable name, as stored in the database and in tokens.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Shopper => "shopper",
            Role::CatalogEditor => "catalog_editor",
            Role::InventoryAdmin => "inventory_admin",
        }
    }

    /// Words for people.
    pub fn label(self) -> &'static str {
        match self {
            Role::Shopper => "Shopper",
            Role::CatalogEditor => "Catalog editor",
            Role::InventoryAdmin => "Inventory admin",
        }
    }

    pub fn parse(name: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|role| role.as_str() == name)
    }
}

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
