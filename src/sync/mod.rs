//! Syncing sources: the planner decides ([`plan`]), the worker performs ([`worker`]).

pub mod plan;
pub mod store_file;
pub mod worker;

pub use worker::{WorkerEvent, WorkerHandle, WorkerState};
