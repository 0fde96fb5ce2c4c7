//! Upgraded connections (WebSocket and other `Upgrade`s): both sides as
//! plain byte streams, joined once the upstream answered 101.
//!
//! The server and the upstream connection turn their protocol library's
//! upgrade handles into a [`PendingUpgrade`], so nothing here knows the
//! wire library.

use super::body::BoxError;
use std::future::Future;
use std::pin::Pin;
use tokio::io::{AsyncRead, AsyncWrite};

/// A byte stream after an upgrade.
pub trait UpgradedIo: AsyncRead + AsyncWrite + Send + Unpin {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin> UpgradedIo for T {}

/// One side of an upgrade, ready once the 101 is through.
pub type PendingUpgrade =
    Pin<Box<dyn Future<Output = Result<Box<dyn UpgradedIo>, BoxError>> + Send>>;

/// Joins the client and the upstream once both upgrades complete and
/// copies bytes both ways until either side closes. `guard` (the
/// endpoint's in-flight count) is held until then.
pub async fn tunnel<G: Send>(client: PendingUpgrade, server: PendingUpgrade, guard: G) {
    let (mut client, mut server) = match tokio::try_join!(client, server) {
        Ok(both) => both,
        Err(e) => {
            tracing::debug!(error = %e, "upgrade failed");
            return;
        }
    };
    if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut server).await {
        tracing::debug!(error = %e, "tunnel closed");
    }
    drop(guard);
}
