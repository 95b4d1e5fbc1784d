//! The web console's files, built from `app/` (TypeScript, Vite) by the
//! build script and embedded, so the appliance serves its page without
//! Node. The API crate serves them at `/` (see `lifeboat_api::routes::page`).

#![warn(missing_docs)]

include!(concat!(env!("OUT_DIR"), "/files.rs"));

/// The file at `path` (relative, no leading `/`), if the console has one.
pub fn file(path: &str) -> Option<&'static [u8]> {
    FILES.binary_search_by(|(p, _)| (*p).cmp(path)).ok().map(|i| FILES[i].1)
}

/// Whether this binary carries a web console at all.
pub fn built() -> bool {
    file("index.html").is_some()
}

/// The media type to serve a console file with, by its extension.
pub fn content_type(path: &str) -> &'static str {
    match path.rsplit_once('.').map(|(_, ext)| ext) {
        Some("html") => "text/html; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("json" | "map") => "application/json",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        Some("woff2") => "font/woff2",
        Some("txt") => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_table_is_sorted_for_lookup_and_finds_every_file() {
        assert!(super::FILES.windows(2).all(|w| w[0].0 < w[1].0));
        for (p, bytes) in super::FILES {
            assert_eq!(super::file(p).map(<[u8]>::len), Some(bytes.len()));
        }
        assert_eq!(super::file("no/such/file"), None);
    }

    #[test]
    fn media_types_by_extension() {
        assert_eq!(super::content_type("assets/index-abc.js"), "text/javascript; charset=utf-8");
        assert_eq!(super::content_type("index.html"), "text/html; charset=utf-8");
        assert_eq!(super::content_type("x"), "application/octet-stream");
    }
}
