//! Every input a fuzzer found a problem with (fuzz/regressions/<target>/) runs through the same
//! check again, in the normal test suite; and the seed corpus too, so a broken check shows here
//! before anyone fuzzes.

use std::path::Path;

fn each(dir: &str, check: fn(&[u8])) -> usize {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("fuzz");
    let mut n = 0;
    for sub in ["regressions", "corpus"] {
        let Ok(entries) = std::fs::read_dir(root.join(sub).join(dir)) else { continue };
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            let data = std::fs::read(e.path()).expect("read input");
            check(&data);
            n += 1;
        }
    }
    n
}

#[test]
fn inner_packets() {
    assert!(each("inner_packets", gateway::fuzz::inner_packets) > 0, "the seed corpus is there");
}

#[test]
fn register_lines() {
    each("register_line", gateway::fuzz::register_line);
}

#[test]
fn sessions() {
    each("session", gateway::fuzz::session);
}

#[test]
fn query_strings() {
    each("query_string", gateway::fuzz::query_string);
}

#[test]
fn goim_packets() {
    assert!(each("goim_packets", gateway::fuzz::goim_packets) > 0, "the seed corpus is there");
}

#[test]
fn websocket_frames() {
    assert!(each("websocket_frames", gateway::fuzz::websocket_frames) > 0, "the seed corpus is there");
}
