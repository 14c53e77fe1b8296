//! Telling a supervising master that a role is up. Under `switchboard start` each child gets
//! `SWITCHBOARD_SUPERVISED=1` and reports readiness as one line on its stdout, `ready <json>`;
//! run by hand, a role prints nothing there.

use std::io::Write;

pub const ENV: &str = "SWITCHBOARD_SUPERVISED";

/// Prints the readiness line when supervised.
pub fn announce(details_json: &str) {
    line(&format!("ready {details_json}"));
}

/// Prints one line for the master when supervised (`ready …`, `metrics <addr>`).
pub fn line(text: &str) {
    if std::env::var_os(ENV).is_some() {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{text}");
        let _ = out.flush();
    }
}
