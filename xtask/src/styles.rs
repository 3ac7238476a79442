//! A fragment's own stylesheet (`<crate>/style.css`), scoped at build time so its rules apply to its own
//! pages and widgets and nowhere else.
//!
//! The file is wrapped in one CSS `@scope` rule. Its root is the fragment's markup (`[data-fragment="NAME"]`:
//! the `<body>` of its pages, the root of its widgets); its limits are the shell's chrome and any other
//! fragment's markup inside that root. So a rule as broad as `button { … }` in the catalog's stylesheet
//! styles the catalog's buttons, never the chrome's or the cart's, whatever the class names.
//!
//! Why native `@scope` rather than a tool that prefixes selectors (lightningcss and the like): it needs no
//! parser in the build, keeps the file as its team wrote it, and the browsers Tessera supports have it
//! (Chromium 118, Safari 17.4, Firefox 146). What `@scope` cannot contain is refused with a message
//! rather than left to leak: rules that are global by nature (`@import`, `@font-face`, `@keyframes`,
//! `@property`, `@namespace`, `@charset`, `@layer` order) belong to the shell's design tokens, and a
//! stray closing brace would end the scope early and let every later rule out.

use anyhow::{bail, Result};
use tessera_contracts::manifest::FRAGMENT_ATTRIBUTE;
use tessera_contracts::CHROME_SLOT_ID;

/// At-rules that are global by nature and cannot be scoped.
const GLOBAL_AT_RULES: [&str; 7] = ["@import", "@font-face", "@keyframes", "@property", "@namespace", "@charset", "@layer"];

/// The CSS outside comments and strings, for the checks (strings become `""`, comments a space).
fn code_only(css: &str) -> Result<String> {
    let mut code = String::with_capacity(css.len());
    let mut chars = css.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '/' if chars.peek() == Some(&'*') => {
                chars.next();
                let mut closed = false;
                while let Some(c) = chars.next() {
                    if c == '*' && chars.peek() == Some(&'/') {
                        chars.next();
                        closed = true;
                        break;
                    }
                }
                if !closed {
                    bail!("a comment is never closed (`/*` without `*/`)");
                }
                code.push(' ');
            }
            '"' | '\'' => {
                let quote = c;
                let mut closed = false;
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => {
                            chars.next();
                        }
                        c if c == quote => {
                            closed = true;
                            break;
                        }
                        '\n' => break,
                        _ => {}
                    }
                }
                if !closed {
                    bail!("a string is never closed");
                }
                code.push_str("\"\"");
            }
            other => code.push(other),
        }
    }
    Ok(code)
}

/// `css` wrapped in the fragment's scope, or why it cannot be.
pub fn scoped(fragment: &str, css: &str) -> Result<String> {
    let code = code_only(css)?;
    let lower = code.to_ascii_lowercase();
    if let Some(rule) = GLOBAL_AT_RULES.iter().find(|rule| lower.contains(*rule)) {
        bail!("{rule} is global and cannot be scoped to the {fragment} fragment; the shell's stylesheet owns such rules");
    }
    let mut depth = 0i64;
    for (line, text) in code.lines().enumerate() {
        for c in text.chars() {
            match c {
                '{' => depth += 1,
                '}' => depth -= 1,
                _ => {}
            }
            if depth < 0 {
                bail!("line {}: a `}}` closes more than was opened, which would end the fragment's scope early", line + 1);
            }
        }
    }
    if depth != 0 {
        bail!("{depth} `{{` never closed");
    }
    let root = format!("[{FRAGMENT_ATTRIBUTE}=\"{fragment}\"]");
    let limits = format!("#{CHROME_SLOT_ID}, [{FRAGMENT_ATTRIBUTE}]:not({root})");
    Ok(format!("/* The {fragment} fragment's stylesheet, scoped to its markup by cargo xtask build. */\n@scope ({root}) to ({limits}) {{\n{css}\n}}\n"))
}

#[cfg(test)]
mod tests {
    use super::scoped;

    #[test]
    fn a_stylesheet_is_wrapped_in_its_fragments_scope() {
        let css = scoped("catalog", "button { color: red; }\n@media (min-width: 48rem) { .a { b: c } }").unwrap();
        assert!(
            css.contains(
                "@scope ([data-fragment=\"catalog\"]) to (#tessera-chrome, [data-fragment]:not([data-fragment=\"catalog\"])) {\nbutton { color: red; }"
            ),
            "{css}"
        );
        assert!(css.trim_end().ends_with('}'));
    }

    #[test]
    fn what_would_leak_is_refused_and_braces_in_strings_and_comments_are_not_counted() {
        for leaky in
            ["} button { color: red } .x {", "@import url(x.css);", "@FONT-FACE { font-family: x }", "@keyframes spin { to { rotate: 1turn } }", ".a { b: c"]
        {
            assert!(scoped("catalog", leaky).is_err(), "{leaky:?} accepted");
        }
        for fine in [".a::before { content: \"} {\" }", "/* } @import */ .a { b: c }", ".a { content: '\\'}' }"] {
            assert!(scoped("catalog", fine).is_ok(), "{fine:?} refused");
        }
        assert!(scoped("catalog", "/* never closed").is_err());
    }
}
