//! Rule files → [`super::Snapshot`]. (Stub.)
