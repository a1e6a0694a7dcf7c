//! HTML pages (user info, errors). Owned by the login flow (H2b).
