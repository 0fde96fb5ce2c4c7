//! Forwarding a routed request to its upstream. (Stub.)
