//! Wall-clock text: RFC 3339 in UTC, as the admin API, logs and certificate
//! messages print it.

use std::time::SystemTime;

/// RFC 3339 text of a time, in UTC, to the second.
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// RFC 3339 text of a time, in UTC, to the millisecond.
pub fn rfc3339_millis(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}
