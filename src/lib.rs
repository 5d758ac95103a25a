//! leakhound: finds what is stuck, leaking or starving in a concurrent program.
//!
//! Data flows one way: `source` → `model::Snapshot` → `judge` (`history` → `rules` →
//! `findings`) → (`tui` | `report` | verdict). See `docs/ARCHITECTURE.md`.

pub mod agent;
pub mod check;
pub mod cli;
pub mod config;
pub mod findings;
pub mod history;
pub mod judge;
pub mod launch;
pub mod model;
pub mod report;
pub mod rules;
pub mod source;
pub mod tui;
pub mod verdict;
