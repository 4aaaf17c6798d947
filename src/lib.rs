//! mispd: brings MISP threat intelligence onto a Linux host. The daemon polls MISP servers and
//! static feeds over pinned TLS, validates every indicator, and serves the validated set on a
//! local Unix socket. The binaries in `src/bin` are thin shims over this library.
#![forbid(unsafe_code)]

pub mod index;
pub mod model;
pub mod normalize;
pub mod state;
pub mod validate;
