//! The web pages, compiled into the binary and served by the gateway on its client port:
//! `/widget.js` (the one-tag visitor widget, client library included), `/switchboard-client.js`
//! (the connection library on its own), `/console/` (the agent console) and `/demo.html` (a
//! page embedding the widget). No build step: plain scripts, so what is here is what runs.

use bytes::Bytes;

const CLIENT: &str = include_str!("../web/switchboard-client.js");
const WIDGET: &str = include_str!("../web/widget.js");
const CONSOLE_HTML: &str = include_str!("../web/console/index.html");
const CONSOLE_JS: &str = include_str!("../web/console/console.js");
const CONSOLE_CSS: &str = include_str!("../web/console/console.css");
const DEMO: &str = include_str!("../web/demo.html");

const JS: &str = "text/javascript; charset=utf-8";

/// The asset at `path`, with its content type.
pub fn asset(path: &str) -> Option<(&'static str, Bytes)> {
    Some(match path {
        "/widget.js" => (JS, Bytes::from(format!("{CLIENT}\n{WIDGET}"))),
        "/switchboard-client.js" => (JS, Bytes::from_static(CLIENT.as_bytes())),
        "/console" | "/console/" | "/console/index.html" => ("text/html; charset=utf-8", Bytes::from_static(CONSOLE_HTML.as_bytes())),
        "/console/console.js" => (JS, Bytes::from_static(CONSOLE_JS.as_bytes())),
        "/console/console.css" => ("text/css; charset=utf-8", Bytes::from_static(CONSOLE_CSS.as_bytes())),
        "/" | "/demo.html" => ("text/html; charset=utf-8", Bytes::from_static(DEMO.as_bytes())),
        _ => return None,
    })
}
