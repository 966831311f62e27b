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
//! Its modules, from the words everything uses up to the front door. A module imports only
//! modules above it in this list (`tests/module_graph.rs` fails the build on a circle):
//!
//! * [`secret`], [`spec`], [`naming`]: values that mask themselves, the instance spec and
//!   its hash, instance names and tags.
//! * [`resource`]: supporting resources (key pairs, buckets) and their dependency order.
//! * [`ci`]: the [`ci::Ci`] trait: demand (jobs waiting and running) and runner calls.
//! * [`cloud`]: the [`cloud::Cloud`] trait, what a provider reports (lifecycles, user data
//!   limits) and its errors. A new provider implements it in `fleet-providers`.
//! * [`stack`]: the stack file (what the user declared): YAML model, loader, `--set`, and
//!   sections compiled once at load (the `policy:` settings with their schedules, the
//!   template texts). A new stack setting goes here, with its check in `stack/load.rs`.
//! * [`autoscale`]: the demand policy's pure decision, boot-time learning, forecast, and
//!   the demand record and pool learning behind `policy.target`.
//! * [`simulate`]: replays CI job traces through the policy and GitLab's autoscalers; its
//!   timelines and sweeps are plain values (fleet-cli draws the pictures: no plotting here).
//! * [`state`]: what the last apply recorded, behind [`state::StateBackend`], and
//!   [`state::facts`], the one place where observations become state.
//! * [`plan`]: [`Plan`], [`Change`], [`Action`] and how a plan displays.
//! * [`runners`]: the runner lifecycle's pure half (orphans, never-online, drains).
//! * [`policy`]: the [`policy::Policy`] trait and the static and demand policies.
//! * [`planner`]: diffs desired, state and observed into a [`plan::Plan`]; pure.
//! * [`render`]: renders the templates each VM boots with, and the fleet's inventory.
//! * [`apply`]: executes a plan, one module per phase; preview is the same path with
//!   `dry_run` set.
//! * [`engine`]: the front door: [`engine::Fleet`] reads state, observes, plans and checks
//!   the plan, for every command and the daemon. A new read-only command uses it (and
//!   `fleet-cli`'s shared loader) and stops before the executor.
//! * `testing` (feature `testing`): conformance suites every state backend and cloud runs,
//!   and an in-memory cloud.
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
