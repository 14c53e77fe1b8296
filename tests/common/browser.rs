//! Headless Chromium (Debian's) driven by playwright-core from the scripts in web/e2e/, which
//! `.ci/run` and `scripts/test.sh` install. Missing, a test fails saying how to install it.
#![allow(dead_code)]

use std::path::PathBuf;

/// The scripts' directory (web/e2e), checked to hold its npm packages.
pub fn e2e_dir() -> PathBuf {
    let e2e = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("web/e2e");
    assert!(
        e2e.join("node_modules/playwright-core").exists() && e2e.join("node_modules/axe-core").exists(),
        "playwright-core or axe-core is not installed: run `npm ci --prefix web/e2e` (scripts/test.sh and .ci/run do)"
    );
    e2e
}

/// Chromium's path (`CHROMIUM`, or Debian's), checked to exist.
pub fn chromium() -> String {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(std::path::Path::new(&chromium).exists(), "Chromium is not installed at {chromium} (apt-get install chromium)");
    chromium
}
