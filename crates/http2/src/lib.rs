//! The HTTP/2 wire format, with no I/O of its own: HPACK header compression (RFC 7541) and
//! the frames of RFC 9113.

pub mod frame;
pub mod hpack;
pub mod server;
