//! What this binary is: its version and the git commit it was built from
//! (recorded by `build.rs`; `unknown` outside a git checkout).

/// The crate version (`Cargo.toml`).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The git commit the binary was built from (12 hex digits), or `unknown`.
pub const COMMIT: &str = env!("POINTSMAN_GIT_COMMIT");

/// `--version`'s text after the program name: `0.1.0 (commit 0123456789ab)`.
pub const LONG: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("POINTSMAN_GIT_COMMIT"),
    ")"
);
