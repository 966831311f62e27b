//! fleet-core: the desired-state engine behind `fleet-cli`.
//!
//! The flow is always the same, for every command:
//!
//! ```text
//! stack (declared) ──┐
//! state (recorded) ──┼──> planner (pure) ──> Plan ──> apply executor ──> cloud + state
//! observed (cloud) ──┘         ^
//!                     policy (desired count)
//! ```
//!
//! * [`stack`] loads and validates the YAML stack file (what the user declared).
//! * [`state`] is what the last apply recorded, behind the [`state::StateBackend`] trait.
//! * [`cloud`] is what the cloud reports now, behind the [`cloud::Cloud`] trait.
//! * [`policy`] turns demand into a desired instance count.
//! * [`planner`] diffs the three into a [`plan::Plan`]; it is a pure function of its inputs.
//! * [`apply`] executes a plan; preview is the same path with `dry_run` set.
//! * [`render`] renders the templates each VM boots with, and the fleet's inventory.
//!
//! This crate imports no cloud SDK, no HTTP client and no clock: `now` is a parameter
//! everywhere, so every decision can be tested with plain values. Implementations of the
//! traits live in `fleet-providers`.

#![warn(missing_docs)]

pub mod apply;
pub mod autoscale;
pub mod ci;
pub mod cloud;
pub mod engine;
pub mod naming;
pub mod plan;
pub mod planner;
pub mod policy;
pub mod render;
pub mod resource;
pub mod runners;
pub mod secret;
pub mod simulate;
pub mod spec;
pub mod stack;
pub mod state;

#[cfg(feature = "testing")]
pub mod testing;

pub use plan::{Action, Change, Plan};
pub use stack::{LoadedStack, Stack};
pub use state::State;
