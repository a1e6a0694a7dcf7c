//! Stub: implemented by its own issue.
