//! mispd: brings MISP threat intelligence onto a Linux host. The daemon polls MISP servers and
//! static feeds over pinned TLS, validates every indicator, and serves the validated set on a
//! local Unix socket. The binaries in `src/bin` are thin shims over this library.
//!
//! Data flows one way: `sync` workers fetch through `misp` (the only user of `credentials` and
//! `tls`), `validate` judges every attribute, the `supervisor` applies breakers and builds each
//! `index` generation, `state` publishes it atomically, and `query` serves it on the socket.
#![deny(unsafe_code)]

pub mod config;
pub mod credentials;
pub mod ctl;
pub mod daemon;
pub mod index;
pub mod logging;
pub mod misp;
pub mod model;
pub mod normalize;
pub mod notify;
pub mod query;
pub mod snapshot;
pub mod state;
pub mod supervisor;
pub mod sync;
pub mod sys;
pub mod tls;
pub mod validate;
