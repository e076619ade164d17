//! The web pages the hub serves: a chat at `/` and the operator's console
//! at `/console` (also `/dashboard`; its calls are `crate::console`'s),
//! plain HTML, CSS and JavaScript compiled into the binary (no
//! CDN, nothing fetched from elsewhere). Their scripts are ES modules on the
//! TypeScript SDK (`clients/js`), whose browser build is checked in as
//! `web/duplex-client.js` and served at `/assets/duplex-client.js`
//! (`tests/web_build.rs` checks it is what `npm run build:web` makes).
//!
//! Invariants: only the files listed here are served; a path is never mapped
//! to the file system. `/assets/hub.js`, the pages' former client, is gone:
//! it answers 404 like any other unknown path.

/// The content type and body of the page or asset at `path`, if any.
pub(crate) fn asset(path: &str) -> Option<(&'static str, &'static [u8])> {
    const HTML: &str = "text/html; charset=utf-8";
    const JS: &str = "text/javascript; charset=utf-8";
    const CSS: &str = "text/css; charset=utf-8";
    let found: (&str, &str) = match path {
        "/" | "/index.html" => (HTML, include_str!("../web/index.html")),
        "/console" | "/dashboard" | "/dashboard.html" => {
            (HTML, include_str!("../web/dashboard.html"))
        }
        "/assets/duplex-client.js" => (JS, include_str!("../web/duplex-client.js")),
        "/assets/chat.js" => (JS, include_str!("../web/chat.js")),
        "/assets/dashboard.js" => (JS, include_str!("../web/dashboard.js")),
        "/assets/console.js" => (JS, include_str!("../web/console.js")),
        "/assets/style.css" => (CSS, include_str!("../web/style.css")),
        _ => return None,
    };
    Some((found.0, found.1.as_bytes()))
}
