//! Where a sign-in may send the browser back to: a local path of the same site, never another site.
//! The shell's `next` after its login form and a relying party's return address both pass here.

/// `next` if it is a path of this site (no scheme, no `//host`, no backslash, no control characters, at
/// most `max_bytes` long), otherwise `/`.
pub fn local_path(next: Option<&str>, max_bytes: usize) -> String {
    match next {
        Some(path)
            if path.starts_with('/') && !path.starts_with("//") && !path.contains('\\') && path.len() <= max_bytes && !path.chars().any(char::is_control) =>
        {
            path.to_owned()
        }
        _ => "/".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::local_path;

    #[test]
    fn only_local_paths_are_followed() {
        assert_eq!(local_path(Some("/cart"), 64), "/cart");
        assert_eq!(local_path(Some("/admin/inventory?x=1"), 64), "/admin/inventory?x=1");
        for bad in ["https://evil.test", "//evil.test", "/\\evil.test", "evil", "/a\nb", ""] {
            assert_eq!(local_path(Some(bad), 64), "/", "{bad:?} followed");
        }
        assert_eq!(local_path(Some(&format!("/{}", "a".repeat(64))), 64), "/", "longer than allowed");
        assert_eq!(local_path(None, 64), "/");
    }
}
