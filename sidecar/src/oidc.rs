//! OIDC client (discovery, code exchange, refresh, user info). Owned by the login flow (H2b).
