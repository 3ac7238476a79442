//! The catalog listing's query string (`/catalog?q=…&cat=…&min=…&sort=…&page=…`), parsed and checked
//! as the page handler and the search server function do. Nothing panics; what passes holds the
//! promises the queries rely on (search words are letters and digits only, so no input is FTS5 or
//! tsquery syntax; prices are bounded and ordered; the page is positive); and a valid query's own links
//! (`href`, every pager and filter link) lead back to exactly the same filters.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tessera_catalog::model::ListingQuery;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(query) = serde_qs::from_str::<ListingQuery>(text) else { return };
    let Ok(filters) = query.validate() else { return };
    for word in &filters.words {
        assert!(!word.is_empty() && word.chars().all(char::is_alphanumeric), "a search word carries more than letters and digits: {word:?}");
    }
    assert!(filters.words.len() <= 8, "{} words", filters.words.len());
    if let (Some(min), Some(max)) = (filters.min_minor, filters.max_minor) {
        assert!(0 <= min && min <= max && max <= 100_000_000, "{min}..{max}");
    }
    assert!((1..=1_000_000).contains(&filters.page));
    let href = query.href(filters.page);
    let linked = href.split_once('?').map(|(_, query)| query).unwrap_or_default();
    let again = serde_qs::from_str::<ListingQuery>(linked).unwrap_or_else(|error| panic!("{href:?} does not parse: {error}"));
    assert_eq!(again.validate().as_ref(), Ok(&filters), "{text:?} links to {href:?}, which means something else");
});
