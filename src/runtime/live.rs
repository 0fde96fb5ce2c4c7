//! The cell every request loads its snapshot from: one `ArcSwap`, swapped
//! whole on reload; requests in flight keep the snapshot they loaded.

use super::Runtime;
use super::snapshot::Snapshot;
use crate::tls::{CertSet, CertSource};
use arc_swap::ArcSwap;
use std::net::SocketAddr;
use std::sync::Arc;

/// The serving snapshot and the runtime it was linked with.
#[derive(Debug)]
pub struct Live {
    snapshot: ArcSwap<Snapshot>,
    runtime: Arc<Runtime>,
}

impl Live {
    /// Serves `snapshot` (linked with `runtime`).
    pub fn new(snapshot: Snapshot, runtime: Arc<Runtime>) -> Arc<Live> {
        Arc::new(Live {
            snapshot: ArcSwap::from_pointee(snapshot),
            runtime,
        })
    }

    /// The current snapshot (one atomic load).
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// The runtime snapshots are linked with.
    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.runtime
    }

    /// Replaces the snapshot and hands back the one it replaced; requests
    /// in flight keep the one they loaded. Dropping the old one frees a
    /// whole rule set: do it off the serving threads.
    pub fn swap(&self, snapshot: Snapshot) -> Arc<Snapshot> {
        self.snapshot.swap(Arc::new(snapshot))
    }
}

impl CertSource for Live {
    fn certs(&self, addr: SocketAddr) -> Option<CertSet> {
        let snapshot = self.snapshot.load();
        snapshot
            .config
            .settings
            .listeners
            .iter()
            .find(|l| l.addr == addr)
            .and_then(|l| l.tls.as_ref())
            .map(|t| t.keys.clone())
    }
}
