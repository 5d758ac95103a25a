//! The terminal dashboard (ratatui + crossterm).
//!
//! - `event`: what travels between the threads (`Update`, `FeedEvent`, `Control`, log lines);
//! - `feed`: the collector thread (source → `crate::judge` → `Update`) and its controls;
//! - `state/`: what the views show, selection, filter, sort, pause (main thread only);
//! - `view/`: one module per view, pure rendering of `State`;
//! - `input`: keys → intents; `app`: the event loop, generic over the backend;
//! - `term`: raw mode / alternate screen guard and panic hook; `svg`: screenshots.
//!
//! Imports go one way: `app` → `input` → `view` → `state` → `event`; `feed` → `event` and
//! `crate::judge`, which knows nothing of the dashboard.

pub mod app;
pub mod event;
pub mod feed;
/// Test data for the views' tests and benchmarks; not in a release build (feature
/// `fixtures`, which the crate's own tests and benches turn on).
#[cfg(any(test, feature = "fixtures"))]
#[doc(hidden)]
pub mod fixture;
pub mod input;
pub mod state;
pub mod svg;
pub mod term;
pub mod view;

pub use app::App;
pub use state::State;
