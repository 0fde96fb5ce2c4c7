//! Listeners and connections. (Stub.)
