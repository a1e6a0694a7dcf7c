//! Not yet implemented (issue 3).
