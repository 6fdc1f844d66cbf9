//! Helpers for the deployment tests.
#![allow(dead_code)]

pub mod template;
