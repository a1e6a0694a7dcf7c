//! PPL parser tests.
