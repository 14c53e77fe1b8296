//! The web pages in a real browser: headless Chromium (Debian's), driven by playwright-core,
//! against a system started with `switchboard start -d`. The browser flow is web/e2e/e2e.mjs
//! (which also runs axe-core's WCAG 2.1 AA rules on the widget and the console, and checks the
//! widget's keyboard and screen-reader behaviour);
//! its screenshots go to a temporary directory, or to docs/screenshots/ with
//! `UPDATE_SCREENSHOTS=1` (so running the tests leaves the checkout as it was). `.ci/run`
//! installs Chromium and the npm package.

mod common;

use common::fake_line::{start_fake_line, ACCESS_TOKEN, CHANNEL_SECRET};
use common::*;
use std::path::PathBuf;

#[test]
fn visitor_widget_and_agent_console_in_chromium() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let (e2e, chromium) = (common::browser::e2e_dir(), common::browser::chromium());

    let dir = std::env::temp_dir().join(format!("sb-web-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let _stopped_and_removed = StartedDir(dir.clone());
    let ip = "127.81.0.1";
    let (reg, ws, inner, line) = (free_port(ip), free_port(ip), free_port(ip), free_port(ip));
    // A fake LINE API for the LINE conversation at the end; its server runs on this runtime.
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let (fake, line_api) = runtime.block_on(start_fake_line("127.81.0.9"));
    let toml = format!(
        "registers = [\"{ip}:{reg}\"]\nmetrics_ip = \"{ip}\"\n[register]\nlisten = \"{ip}:{reg}\"\n\
         [gateway]\nlisten = \"{ip}:{ws}\"\nlan_ip = \"{ip}\"\ninner_port = {inner}\n\
         [events]\nagent_secret = \"web-secret\"\n\
         [events.line]\nlisten = \"{ip}:{line}\"\napi_base = \"{line_api}\"\ndata_base = \"{line_api}\"\n\
         [[events.line.bots]]\nbid = \"1\"\nchannel_secret = \"{CHANNEL_SECRET}\"\nchannel_access_token = \"{ACCESS_TOKEN}\"\n"
    );
    std::fs::write(dir.join("switchboard.toml"), toml).expect("config");
    let sb = |args: &[&str]| std::process::Command::new(BIN).current_dir(&dir).args(args).output().expect("switchboard");
    let started = sb(&["start", "-d"]);
    assert!(started.status.success(), "{}", String::from_utf8_lossy(&started.stderr));
    let token = |agent: &str| String::from_utf8_lossy(&sb(&["token", "--bid", "1", "--agent", agent]).stdout).trim().to_string();
    let shots = if std::env::var_os("UPDATE_SCREENSHOTS").is_some() { root.join("docs/screenshots") } else { dir.join("screenshots") };
    std::fs::create_dir_all(&shots).expect("screenshot dir");
    let out = std::process::Command::new("node")
        .arg(e2e.join("e2e.mjs"))
        .args([format!("http://{ip}:{ws}"), token("a1"), token("b2"), BIN.to_string()])
        .arg(&dir)
        .arg(&shots)
        .args([format!("http://{ip}:{line}/line/1/webhook"), CHANNEL_SECRET.to_string()])
        .env("CHROMIUM", &chromium)
        .output()
        .expect("node");
    let _ = sb(&["stop"]);
    // On failure the system's own log says what the servers saw; the run dir goes away below.
    let system_log = std::fs::read_to_string(dir.join("run/switchboard.log")).unwrap_or_default();
    let system_log_tail: String = system_log.lines().rev().take(80).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n");
    let shot_taken = shots.join("visitor-widget.png").exists() && shots.join("agent-console.png").exists();
    let _ = std::fs::remove_dir_all(&dir);
    let log = format!("{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && log.contains("e2e: ok"), "{log}\n--- the system's log (last lines) ---\n{system_log_tail}");
    assert!(shot_taken, "the screenshots were taken");
    assert_eq!(fake.delivered_texts("Uweb1"), ["Thanks, we are on it!"], "the console's answer reached LINE once");
}
