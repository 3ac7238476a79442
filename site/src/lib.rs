//! The all-in-one `tessera` binary: the shell and every fragment in one process, each on its own SQLite
//! file or PostgreSQL schema — the embedded default behind `cargo xtask run`.
//!
//! Each part has its own deployable as well (`tessera-shell`, `tessera-catalog`, `tessera-cart`,
//! `tessera-inventory`), built from its own crate; this crate only chooses what the all-in-one binary
//! contains (`app::FRAGMENTS`) and keeps its command line (`tessera serve [--fragment NAME]`, `tessera
//! keys rotate`, `tessera db provision`, `tessera inventory verify`). Assembly, serving, health, readiness and draining live in
//! the process host (`tessera_host`, `tessera_shell::site`), so every binary behaves the same.
//!
//! `main.rs` only parses the command line, starts tracing and calls into here, so tests start the real
//! thing on port 0.

pub mod app;

pub use app::{spawn, Mode, FRAGMENTS};
pub use tessera_host::{Running, Settings};
pub use tessera_shell::settings::ShellSettings;
