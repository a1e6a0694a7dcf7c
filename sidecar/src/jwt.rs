//! Identity JWT signing and JWKS. Owned by the login flow (H2b).
