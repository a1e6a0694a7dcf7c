//! Request-path handling shared by route lookup and the `http_path` criterion: query removal,
//! Envoy's normalisation (merge slashes, remove dot segments) and percent-decoding. Each step
//! borrows when there is nothing to do, so already-normal paths cost no allocation.

use std::borrow::Cow;

/// The path without its query string. Only `?` cuts, as Pomerium's `getCheckRequestURL` (a
/// `#` is part of the path; Envoy does not forward fragments anyway).
pub fn strip_query(path: &str) -> &str {
    let end = path.find('?').unwrap_or(path.len());
    path.get(..end).unwrap_or(path)
}

/// Whether the path (query aside) is in the normal form every proxy and upstream reads the
/// same way, so that what the policy judged is what the upstream serves (the filter and
/// the sidecar's ext_authz refuse other paths): starts with `/`; no empty segment but a trailing one (`//`); no `.` or `..`
/// segment (also `..;x`, which servlet containers read as `..`); no `\` or `#`; no
/// escape of `.`, `/` or `\` (`%2e`, `%2f`, `%5c`); no malformed escape; with `strict`, no
/// escape of any unreserved character either (`%61` for `a`).
pub fn is_normal(path: &str, strict: bool) -> bool {
    let p = strip_query(path);
    if !p.starts_with('/') || p.bytes().any(|b| b == b'\\' || b == b'#') {
        return false;
    }
    let mut segs = p.split('/').skip(1).peekable();
    while let Some(seg) = segs.next() {
        if seg.is_empty() && segs.peek().is_some() {
            return false;
        }
        let core = seg.split(';').next().unwrap_or(seg);
        if core == "." || core == ".." {
            return false;
        }
    }
    let bytes = p.as_bytes();
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hex = |j: usize| bytes.get(j).and_then(|c| char::from(*c).to_digit(16));
            let (Some(hi), Some(lo)) = (hex(i + 1), hex(i + 2)) else {
                return false;
            };
            let c = u8::try_from(hi * 16 + lo).unwrap_or(0);
            if matches!(c, b'.' | b'/' | b'\\')
                || (strict && (c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'~')))
            {
                return false;
            }
            i += 3;
        } else {
            i += 1;
        }
    }
    true
}

fn needs_normalise(p: &str) -> bool {
    if !p.starts_with('/') || p.contains("//") {
        return true;
    }
    p.split('/').any(|seg| seg == "." || seg == "..")
}

/// Envoy's `merge_slashes` + `normalize_path` (RFC 3986 remove_dot_segments); the result
/// always starts with `/`. `..` above the root is dropped, as Envoy does.
pub fn normalise(p: &str) -> Cow<'_, str> {
    if !needs_normalise(p) {
        return Cow::Borrowed(p);
    }
    let mut segs: Vec<&str> = Vec::new();
    let mut trailing_slash = false;
    for seg in p.split('/') {
        trailing_slash = false;
        match seg {
            "" => trailing_slash = true,
            "." => trailing_slash = true,
            ".." => {
                segs.pop();
                trailing_slash = true;
            }
            s => segs.push(s),
        }
    }
    let mut out = String::with_capacity(p.len());
    for s in &segs {
        out.push('/');
        out.push_str(s);
    }
    if trailing_slash || segs.is_empty() {
        out.push('/');
    }
    Cow::Owned(out)
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Percent-decoding (`%41` → `A`) as Pomerium's `u.Path, _ = url.PathUnescape(u.RawPath)`:
/// any malformed escape (`%zz`, a truncated `%4`) makes the whole path `""`. Invalid UTF-8
/// after decoding becomes U+FFFD.
pub fn percent_decode(p: &str) -> Cow<'_, str> {
    if !p.contains('%') {
        return Cow::Borrowed(p);
    }
    let bytes = p.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hi = bytes.get(i + 1).copied().and_then(hex);
            let lo = bytes.get(i + 2).copied().and_then(hex);
            let (Some(hi), Some(lo)) = (hi, lo) else {
                return Cow::Borrowed("");
            };
            out.push(hi << 4 | lo);
            i += 3;
            continue;
        }
        out.push(b);
        i += 1;
    }
    match String::from_utf8(out) {
        Ok(s) => Cow::Owned(s),
        Err(e) => Cow::Owned(String::from_utf8_lossy(e.as_bytes()).into_owned()),
    }
}

/// What the `http_path` criterion sees: query removed, normalised, percent-decoded.
pub fn policy_path(raw: &str) -> Cow<'_, str> {
    match normalise(strip_query(raw)) {
        Cow::Borrowed(b) => percent_decode(b),
        Cow::Owned(o) => Cow::Owned(percent_decode(&o).into_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strip_query_removes_only_the_query() {
        assert_eq!(strip_query("/a/b?x=1"), "/a/b");
        assert_eq!(strip_query("/a#f"), "/a#f");
        assert_eq!(strip_query("/a#f?x#y"), "/a#f");
        assert_eq!(strip_query("/a"), "/a");
    }

    #[test]
    fn normalise_merges_and_removes_dots() {
        assert_eq!(normalise("/a//b"), "/a/b");
        assert_eq!(normalise("/a/./b/../c"), "/a/c");
        assert_eq!(normalise("/../../x"), "/x");
        assert_eq!(normalise("/a/.."), "/");
        assert_eq!(normalise("/a/b/"), "/a/b/");
        assert_eq!(normalise(""), "/");
        assert!(matches!(normalise("/ok/path"), Cow::Borrowed(_)));
    }

    #[test]
    fn percent_decode_handles_bad_escapes() {
        assert_eq!(percent_decode("/a%20b"), "/a b");
        assert_eq!(percent_decode("/%2Fadmin"), "//admin");
        // Go's `url.PathUnescape` fails on a malformed escape; Pomerium then uses "".
        assert_eq!(percent_decode("/%zz%4"), "");
        assert_eq!(percent_decode("/a%4"), "");
        assert_eq!(percent_decode("/a%"), "");
        assert_eq!(percent_decode("/a%41%g1"), "");
        assert_eq!(percent_decode("/%C3%A9"), "/é");
        assert_eq!(percent_decode("/%FF"), "/\u{FFFD}");
    }

    #[test]
    fn policy_path_composes() {
        assert_eq!(policy_path("/a//%61dmin/../b?q=%20"), "/a/b");
        assert_eq!(policy_path("/%61dmin?x"), "/admin");
    }

    #[test]
    fn normal_paths() {
        for p in [
            "/",
            "/a",
            "/a/b/",
            "/a.b/..c/.d",
            "/%20/%C3%A9",
            "/a?x=/../..//%2e",
            "/a;x",
        ] {
            assert!(is_normal(p, true), "{p}");
        }
        for p in [
            "", "a", "//", "/a//b", "/.", "/./a", "/a/..", "/..;/a", "/a/.;x/b", "/%2e/", "/a%2Fb",
            "/a%5cb", "/a\\b", "/a#/../b", "/%zz", "/%4",
        ] {
            assert!(!is_normal(p, false), "{p}");
        }
        assert!(is_normal("/%7Euser/%41", false));
        assert!(!is_normal("/%7Euser", true));
        assert!(!is_normal("/%41", true));
    }
}
