//! What the catalog shows and accepts: listing filters (all in the URL), product cards and pages, the
//! category tree, editor input. Plain data shared by the server and the browser build, with the checks
//! both sides apply.

use serde::{Deserialize, Serialize};
use tessera_contracts::domain::Money;
use tessera_contracts::ApiError;

/// Products per listing page.
pub const PER_PAGE: i64 = 24;
/// Longest search text accepted.
pub const MAX_SEARCH: usize = 200;
/// Search words used (the rest are ignored).
pub const MAX_WORDS: usize = 8;

/// One category of the tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Category {
    pub slug: String,
    pub name: String,
    pub parent: Option<String>,
}

/// A product in a listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Card {
    pub id: String,
    pub name: String,
    pub brand: String,
    pub price: Money,
    pub image: String,
    /// Units available over all variants, as last heard from inventory (`None`: nothing heard).
    pub available: Option<i64>,
    /// The SKU, when the product has exactly one variant (the card can add it to the cart directly).
    pub single_sku: Option<String>,
}

/// One variant on the product page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VariantView {
    pub sku: String,
    pub label: String,
    pub available: Option<i64>,
}

/// Everything the product page shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Detail {
    pub id: String,
    pub name: String,
    pub brand: String,
    pub description: String,
    pub price: Money,
    pub image: String,
    /// Root first.
    pub trail: Vec<Category>,
    pub variants: Vec<VariantView>,
}

/// The listing's filters, exactly as they appear in the query string (so junk can be refused clearly).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ListingQuery {
    pub q: String,
    pub cat: String,
    pub brand: String,
    /// Price bounds in whole currency units, as typed.
    pub min: String,
    pub max: String,
    /// `name:value`, e.g. `colour:blue`.
    pub attr: String,
    /// `1` (or `on`): in-stock products only.
    pub stock: String,
    /// `relevance` (default with a search), `price`, `price_desc`, `newest`, `name` (default without).
    pub sort: String,
    pub page: String,
}

/// A listing query after validation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filters {
    /// Search words (letters and digits only), at most [`MAX_WORDS`].
    pub words: Vec<String>,
    pub cat: String,
    pub brand: String,
    pub min_minor: Option<i64>,
    pub max_minor: Option<i64>,
    pub attr: Option<(String, String)>,
    pub in_stock: bool,
    pub sort: Sort,
    pub page: i64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Sort {
    Relevance,
    Price,
    PriceDesc,
    Newest,
    #[default]
    Name,
}

fn bad(message: String) -> ApiError {
    ApiError::BadRequest(message)
}

fn price_bound(text: &str, what: &str) -> Result<Option<i64>, ApiError> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    let units: f64 = text.parse().map_err(|_| bad(format!("the {what} price must be a number, not {:?}", text.chars().take(20).collect::<String>())))?;
    if !units.is_finite() || !(0.0..=1_000_000.0).contains(&units) {
        return Err(bad(format!("the {what} price must be between 0 and 1000000")));
    }
    Ok(Some((units * 100.0).round() as i64))
}

impl ListingQuery {
    /// Checks every field; the error says which one is wrong and why.
    pub fn validate(&self) -> Result<Filters, ApiError> {
        if self.q.chars().count() > MAX_SEARCH {
            return Err(bad(format!("a search has at most {MAX_SEARCH} characters")));
        }
        // Lowercasing can add marks that are not letters ('İ' becomes 'i' and a combining dot), so the
        // words are filtered again after it (found by the `listing_query` fuzz target).
        let words: Vec<String> = self
            .q
            .split(|c: char| !c.is_alphanumeric())
            .map(|word| word.to_lowercase().chars().filter(|c| c.is_alphanumeric()).collect::<String>())
            .filter(|word| !word.is_empty())
            .take(MAX_WORDS)
            .collect();
        let slug_like = |text: &str, what: &str| -> Result<String, ApiError> {
            let text = text.trim();
            if text.len() > 80 || text.chars().any(char::is_control) {
                return Err(bad(format!("{what} is not valid")));
            }
            Ok(text.to_owned())
        };
        let attr = match self.attr.trim() {
            "" => None,
            text => match text.split_once(':') {
                Some((name, value)) if !name.is_empty() && !value.is_empty() && text.len() <= 80 => Some((name.to_lowercase(), value.to_lowercase())),
                _ => return Err(bad("an attribute filter looks like name:value, e.g. colour:blue".into())),
            },
        };
        let (min_minor, max_minor) = (price_bound(&self.min, "lowest")?, price_bound(&self.max, "highest")?);
        if let (Some(min), Some(max)) = (min_minor, max_minor) {
            if min > max {
                return Err(bad("the lowest price is above the highest".into()));
            }
        }
        let sort = match self.sort.as_str() {
            "" if !words.is_empty() => Sort::Relevance,
            "" | "name" => Sort::Name,
            "relevance" => Sort::Relevance,
            "price" => Sort::Price,
            "price_desc" => Sort::PriceDesc,
            "newest" => Sort::Newest,
            other => {
                return Err(bad(format!("{:?} is not a sort order (relevance, price, price_desc, newest, name)", other.chars().take(20).collect::<String>())))
            }
        };
        let page = match self.page.trim() {
            "" => 1,
            text => text.parse::<i64>().map_err(|_| bad("the page must be a number".into()))?.clamp(1, 1_000_000),
        };
        Ok(Filters {
            words,
            cat: slug_like(&self.cat, "the category")?,
            brand: slug_like(&self.brand, "the brand")?,
            min_minor,
            max_minor,
            attr,
            in_stock: matches!(self.stock.as_str(), "1" | "on" | "true"),
            sort,
            page,
        })
    }

    /// This query's address with `page` (links keep every filter).
    pub fn href(&self, page: i64) -> String {
        let mut pairs: Vec<(&str, String)> = Vec::new();
        for (name, value) in [
            ("q", &self.q),
            ("cat", &self.cat),
            ("brand", &self.brand),
            ("min", &self.min),
            ("max", &self.max),
            ("attr", &self.attr),
            ("stock", &self.stock),
            ("sort", &self.sort),
        ] {
            if !value.is_empty() {
                pairs.push((name, value.clone()));
            }
        }
        if page > 1 {
            pairs.push(("page", page.to_string()));
        }
        let query = serde_qs::to_string(&pairs.into_iter().collect::<std::collections::BTreeMap<_, _>>()).unwrap_or_default();
        if query.is_empty() {
            crate::PREFIX.to_owned()
        } else {
            format!("{}?{query}", crate::PREFIX)
        }
    }
}

/// One page of results and what the filter form offers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Listing {
    pub cards: Vec<Card>,
    pub total: i64,
    pub page: i64,
    pub pages: i64,
    pub categories: Vec<Category>,
    pub brands: Vec<String>,
    /// `name:value` pairs that exist.
    pub attributes: Vec<String>,
}

/// Editor input for a product (create or update).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ProductInput {
    /// Empty: a new product (the id is made from the name).
    pub id: String,
    pub name: String,
    pub brand: String,
    pub category: String,
    pub description: String,
    /// Price in currency units, as typed (e.g. `14.50`).
    pub price: String,
    /// For a new product: its first variant's SKU.
    pub sku: String,
    /// An image URL (`https://…` or a path on this site); empty: the generated picture.
    pub image: String,
}

/// A product id from a name: lowercase letters, digits and dashes.
pub fn slugify(name: &str) -> String {
    let mut slug = String::new();
    for c in name.to_lowercase().chars() {
        if c.is_ascii_alphanumeric() {
            slug.push(c);
        } else if !slug.ends_with('-') && !slug.is_empty() {
            slug.push('-');
        }
    }
    slug.trim_end_matches('-').chars().take(80).collect()
}

/// The checked fields of [`ProductInput`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidProduct {
    pub id: String,
    pub name: String,
    pub brand: String,
    pub category: String,
    pub description: String,
    pub price_minor: i64,
    pub sku: Option<tessera_contracts::domain::Sku>,
    pub image: Option<String>,
}

impl ProductInput {
    pub fn validate(&self) -> Result<ValidProduct, ApiError> {
        let name = self.name.trim();
        if name.is_empty() || name.chars().count() > 200 || name.chars().any(char::is_control) {
            return Err(bad("the name is required (at most 200 characters, one line)".into()));
        }
        let brand = self.brand.trim();
        if brand.chars().count() > 80 || brand.chars().any(char::is_control) {
            return Err(bad("the brand has at most 80 characters".into()));
        }
        let description = self.description.trim();
        if description.chars().count() > 5000 {
            return Err(bad("the description has at most 5000 characters".into()));
        }
        let price_minor = match price_bound(&self.price, "")? {
            Some(minor) if minor > 0 => minor,
            _ => return Err(bad("the price is required and above zero, e.g. 14.50".into())),
        };
        let image = match self.image.trim() {
            "" => None,
            url if url.len() <= 500
                && (url.starts_with("https://") || url.starts_with("http://") || (url.starts_with('/') && !url.starts_with("//")))
                && !url.chars().any(|c| c.is_whitespace() || c.is_control() || c == '"' || c == '<' || c == '>') =>
            {
                Some(url.to_owned())
            }
            _ => return Err(bad("the image must be an http(s) URL or a path on this site".into())),
        };
        let (id, sku) = if self.id.trim().is_empty() {
            let id = slugify(name);
            if id.is_empty() {
                return Err(bad("the name needs letters or digits".into()));
            }
            (id, Some(tessera_contracts::domain::Sku::parse(&self.sku)?))
        } else {
            (self.id.trim().to_owned(), None)
        };
        Ok(ValidProduct {
            id,
            name: name.to_owned(),
            brand: brand.to_owned(),
            category: self.category.trim().to_owned(),
            description: description.to_owned(),
            price_minor,
            sku,
            image,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listing_queries_are_checked_and_searches_reduced_to_words() {
        let query = ListingQuery { q: "  Mug\"* OR 1=1; -- (blue)".into(), min: "10".into(), max: "25.5".into(), ..Default::default() };
        let filters = query.validate().unwrap();
        assert_eq!(filters.words, ["mug", "or", "1", "1", "blue"]);
        // Lowercase 'İ' is 'i' and a combining dot, which is no letter: the word keeps letters only.
        let turkish = ListingQuery { q: "İstanbul".into(), ..Default::default() }.validate().unwrap();
        assert_eq!(turkish.words, ["istanbul"]);
        assert_eq!((filters.min_minor, filters.max_minor, filters.sort), (Some(1000), Some(2550), Sort::Relevance));
        for bad in [
            ListingQuery { q: "x".repeat(201), ..Default::default() },
            ListingQuery { min: "cheap".into(), ..Default::default() },
            ListingQuery { min: "NaN".into(), ..Default::default() },
            ListingQuery { min: "9".into(), max: "3".into(), ..Default::default() },
            ListingQuery { sort: "random".into(), ..Default::default() },
            ListingQuery { page: "two".into(), ..Default::default() },
            ListingQuery { attr: "blue".into(), ..Default::default() },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
        assert_eq!(ListingQuery { page: "99999999999".into(), ..Default::default() }.validate().unwrap().page, 1_000_000);
    }

    #[test]
    fn links_keep_filters_and_ids_are_slugs() {
        let query = ListingQuery { q: "blue mug".into(), stock: "1".into(), ..Default::default() };
        assert_eq!(query.href(2), "/catalog?page=2&q=blue+mug&stock=1");
        assert_eq!(ListingQuery::default().href(1), "/catalog");
        assert_eq!(slugify("  Stoneware Mug (Blue) "), "stoneware-mug-blue");
        let input = ProductInput { name: "New mug".into(), price: "14.5".into(), sku: "MUG-NEW-1".into(), ..Default::default() };
        assert_eq!(input.validate().unwrap().price_minor, 1450);
        assert!(ProductInput { price: "-1".into(), ..input.clone() }.validate().is_err());
        assert!(ProductInput { sku: "bad sku".into(), ..input.clone() }.validate().is_err());
        assert!(ProductInput { image: "javascript:alert(1)".into(), ..input.clone() }.validate().is_err());
        assert!(ProductInput { image: "//evil.example/x.png".into(), ..input.clone() }.validate().is_err());
        assert_eq!(
            ProductInput { image: "https://img.example/mug.png".into(), ..input }.validate().unwrap().image.as_deref(),
            Some("https://img.example/mug.png")
        );
    }
}
