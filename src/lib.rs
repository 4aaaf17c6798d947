//! mispd: brings MISP threat intelligence onto a Linux host. The daemon polls MISP servers and
//! static feeds over pinned TLS, validates every indicator, and serves the validated set on a
//! local Unix socket. The binaries in `src/bin` are thin shims over this library.
// `deny`, not `forbid`: the systemd fd hand-over module below must opt out, with SAFETY notes.
#![deny(unsafe_code)]

pub mod index;
pub mod model;
pub mod normalize;
pub mod query;
pub mod state;
pub mod sys_activation;
