//! Talking to MISP: the HTTP client for `/attributes/restSearch` and `/servers/getVersion`
//! ([`client`]), static feeds over https or from a directory ([`feed`]), and the JSON wire
//! types ([`wire`]). The only module that sends the API key and (with `tls`) opens connections.

pub mod client;
pub mod error;
pub mod feed;
mod http;
mod lenient;
pub mod wire;

pub use client::{shared_key, MispClient, Page, SharedKey, Version};
pub use error::{ClientError, FeedError};
pub use feed::{FeedClient, FeedEvent};
pub use http::proxy_env_for;
