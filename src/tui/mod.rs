//! The terminal dashboard (ratatui + crossterm).
//!
//! - `feed`: the collector thread (source → history → rules → `Update`) and its controls;
//! - `state/`: what the views show, selection, filter, sort, pause (main thread only);
//! - `view/`: one module per view, pure rendering of `State`;
//! - `input`: keys → intents; `app`: the event loop, generic over the backend;
//! - `term`: raw mode / alternate screen guard and panic hook; `svg`: screenshots.

pub mod app;
pub mod feed;
#[doc(hidden)]
pub mod fixture;
pub mod input;
pub mod state;
pub mod svg;
pub mod term;
pub mod view;

pub use app::App;
pub use state::State;
