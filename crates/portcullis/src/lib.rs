//! The Portcullis binary's building blocks: wiring sources → translate → publish → proxy, the admin
//! server, the `check`/`route` reports and the built-in demo backends.
//!
//! `main.rs` only parses the command line; everything here is usable in-process by tests.
#![forbid(unsafe_code)]

pub mod admin;
pub mod app;
pub mod cluster;
pub mod demo;
pub mod metrics;
pub mod report;

pub use app::{start, Running, Settings};
