//! Helpers shared by the crate's tests.

use policy_compiler::config::Config;

/// The bundle's route ids for `c` (in config order), as the compiler assigns them.
pub fn route_ids(c: &Config) -> Vec<String> {
    c.routes
        .iter()
        .map(policy_compiler::compile::route_id)
        .collect()
}
