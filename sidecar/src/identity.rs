//! The identity manager (being implemented).

use crate::state::AppState;

/// Run the identity manager until the process ends.
pub async fn run(_state: AppState) {}
