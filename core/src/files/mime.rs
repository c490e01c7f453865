//! Content-Type by file extension: nginx's `mime.types` for the types a web site serves,
//! kept here as a table rather than a crate (mime_guess's 1,000-odd entries cost a
//! dependency for types a static site does not have; an application that needs more
//! sets Content-Type itself). Matched case-insensitively on the last extension;
//! `application/octet-stream` otherwise.

/// The default type (nginx's `default_type`).
pub const DEFAULT: &str = "application/octet-stream";

/// (extension, type), sorted by extension for the binary search.
const TABLE: &[(&str, &str)] = &[
    ("7z", "application/x-7z-compressed"),
    ("apng", "image/apng"),
    ("atom", "application/atom+xml"),
    ("avif", "image/avif"),
    ("bin", "application/octet-stream"),
    ("bmp", "image/bmp"),
    ("css", "text/css"),
    ("csv", "text/csv"),
    ("doc", "application/msword"),
    ("eot", "application/vnd.ms-fontobject"),
    ("epub", "application/epub+zip"),
    ("gif", "image/gif"),
    ("gz", "application/gzip"),
    ("htm", "text/html"),
    ("html", "text/html"),
    ("ico", "image/x-icon"),
    ("jpeg", "image/jpeg"),
    ("jpg", "image/jpeg"),
    ("js", "application/javascript"),
    ("json", "application/json"),
    ("m4a", "audio/mp4"),
    ("map", "application/json"),
    ("md", "text/markdown"),
    ("mjs", "application/javascript"),
    ("mp3", "audio/mpeg"),
    ("mp4", "video/mp4"),
    ("mpeg", "video/mpeg"),
    ("oga", "audio/ogg"),
    ("ogg", "audio/ogg"),
    ("ogv", "video/ogg"),
    ("otf", "font/otf"),
    ("pdf", "application/pdf"),
    ("png", "image/png"),
    ("rss", "application/rss+xml"),
    ("svg", "image/svg+xml"),
    ("svgz", "image/svg+xml"),
    ("tar", "application/x-tar"),
    ("tif", "image/tiff"),
    ("tiff", "image/tiff"),
    ("ttf", "font/ttf"),
    ("txt", "text/plain"),
    ("wasm", "application/wasm"),
    ("wav", "audio/wav"),
    ("weba", "audio/webm"),
    ("webm", "video/webm"),
    ("webmanifest", "application/manifest+json"),
    ("webp", "image/webp"),
    ("woff", "font/woff"),
    ("woff2", "font/woff2"),
    ("xhtml", "application/xhtml+xml"),
    ("xml", "text/xml"),
    ("zip", "application/zip"),
];

/// The Content-Type for a file name (or path: the part after the last '/').
pub fn content_type(name: &[u8]) -> &'static str {
    let base = name.rsplit(|&c| c == b'/').next().unwrap_or(name);
    let Some(dot) = base.iter().rposition(|&c| c == b'.') else {
        return DEFAULT;
    };
    let ext = &base[dot + 1..];
    if dot == 0 || ext.is_empty() || ext.len() > 16 {
        // ".bashrc" has no extension.
        return DEFAULT;
    }
    let mut lower = [0u8; 16];
    for (d, s) in lower.iter_mut().zip(ext) {
        *d = s.to_ascii_lowercase();
    }
    let ext = &lower[..ext.len()];
    TABLE
        .binary_search_by(|(e, _)| e.as_bytes().cmp(ext))
        .map_or(DEFAULT, |i| TABLE[i].1)
}

#[cfg(test)]
mod tests {
    use super::{content_type, DEFAULT, TABLE};

    #[test]
    fn the_table_is_sorted() {
        assert!(TABLE.windows(2).all(|w| w[0].0 < w[1].0));
    }

    #[test]
    fn types_by_the_last_extension() {
        assert_eq!(content_type(b"index.html"), "text/html");
        assert_eq!(content_type(b"a/b/STYLE.CSS"), "text/css");
        assert_eq!(content_type(b"app.min.js"), "application/javascript");
        assert_eq!(content_type(b"x.tar.gz"), "application/gzip");
        assert_eq!(content_type(b"font.woff2"), "font/woff2");
        assert_eq!(content_type(b"README"), DEFAULT);
        assert_eq!(content_type(b".bashrc"), DEFAULT);
        assert_eq!(content_type(b"a.unknownext"), DEFAULT);
        assert_eq!(content_type(b"dir.html/file"), DEFAULT);
        assert_eq!(content_type(b"trailing."), DEFAULT);
    }
}
