//! The Tessera process host: configuration, databases, fragments and shell, served by axum.
//!
//! One binary, `tessera`, runs the whole site in one process (`tessera serve`: the shell and every
//! fragment, each on its own SQLite file or PostgreSQL schema) or one fragment alone
//! (`tessera serve --fragment catalog`), which the shell then reaches over HTTP when configured with
//! `TESSERA_FRAGMENTS__CATALOG__UPSTREAM`. Nothing else changes between the two shapes: the fragment owns
//! the same prefix, verifies the same cookie (with the shell's JWKS over HTTP instead of in process) and
//! serves the same bundle.
//!
//! Layout: `config` (typed, layered settings), `app` (assembling a process, serving it). `main.rs` only
//! parses the command line, starts tracing and calls into here, so tests start the real thing on port 0.

pub mod app;
pub mod config;

pub use app::{build, spawn, Mode, Running};
pub use config::Settings;
