//! What the daemon serves right now, shared between the supervisor (the only writer) and the
//! query service (readers). Readers load one [`View`] and never see a half-applied sync: the
//! supervisor builds a whole new view and swaps it in atomically.

use crate::index::Index;
use crate::model::{Rejection, SourceStatus};
use arc_swap::ArcSwap;
use std::sync::Arc;
use tokio::sync::mpsc;

/// One consistent generation of served data and status.
#[derive(Debug, Default)]
pub struct View {
    /// Increases by one every time the published set changes.
    pub generation: u64,
    pub index: Arc<Index>,
    pub sources: Vec<SourceStatus>,
    /// The most recent rejections, newest last (bounded by the supervisor).
    pub quarantine: Arc<Vec<Rejection>>,
}

/// Actions a privileged client may ask of the supervisor through the query socket.
#[derive(Debug)]
pub enum AdminCommand {
    /// Apply a held change for this source (`mispctl release SOURCE`).
    Release {
        source: String,
        reply: tokio::sync::oneshot::Sender<Result<String, String>>,
    },
}

/// The handle both sides hold.
#[derive(Debug)]
pub struct Shared {
    view: ArcSwap<View>,
    admin: mpsc::Sender<AdminCommand>,
}

impl Shared {
    pub fn new(view: View, admin: mpsc::Sender<AdminCommand>) -> Arc<Shared> {
        Arc::new(Shared {
            view: ArcSwap::from_pointee(view),
            admin,
        })
    }

    /// The current view; cheap, lock-free.
    pub fn load(&self) -> Arc<View> {
        self.view.load_full()
    }

    /// Publish a new view (supervisor only).
    pub fn publish(&self, view: View) {
        self.view.store(Arc::new(view));
    }

    pub fn admin(&self) -> &mpsc::Sender<AdminCommand> {
        &self.admin
    }
}
