//! Demo data shared by the services' seeders, so the catalog's SKUs and the inventory's SKUs agree even
//! though each service seeds its own database. Only `tessera serve --demo` (what `cargo xtask run` starts)
//! seeds it.

use crate::domain::Sku;

/// A demo product: SKU, name, description, price in minor units (cents), initial stock.
pub struct DemoProduct {
    pub sku: &'static str,
    pub name: &'static str,
    pub description: &'static str,
    pub price_minor: i64,
    pub stock: i64,
}

pub const CURRENCY: &str = "EUR";

/// The demo catalogue. Stock levels include low (< 5) and zero values so the admin view has something to show.
pub const PRODUCTS: &[DemoProduct] = &[
    DemoProduct { sku: "TEE-BLU-M", name: "Blue tee", description: "Organic cotton T-shirt, medium.", price_minor: 1900, stock: 40 },
    DemoProduct { sku: "TEE-RED-L", name: "Red tee", description: "Organic cotton T-shirt, large.", price_minor: 1900, stock: 3 },
    DemoProduct { sku: "MUG-STN-01", name: "Stoneware mug", description: "Hand-glazed 350 ml mug.", price_minor: 1450, stock: 25 },
    DemoProduct { sku: "CAP-BLK-01", name: "Black cap", description: "Six-panel cap with a ferris logo.", price_minor: 2200, stock: 0 },
    DemoProduct { sku: "BAG-CNV-01", name: "Canvas tote", description: "Heavy canvas bag for groceries.", price_minor: 1200, stock: 60 },
    DemoProduct { sku: "NTB-A5-DOT", name: "Dotted notebook", description: "A5, 120 g paper, lay-flat binding.", price_minor: 1600, stock: 12 },
    DemoProduct { sku: "PEN-GEL-BK", name: "Gel pen", description: "0.5 mm black gel pen.", price_minor: 350, stock: 4 },
    DemoProduct { sku: "STK-RST-10", name: "Sticker pack", description: "Ten vinyl stickers.", price_minor: 500, stock: 100 },
];

/// The demo accounts: email, display name, password, roles (as role names).
pub const ACCOUNTS: &[(&str, &str, &[&str])] =
    &[("shopper@example.com", "Sam Shopper", &["shopper"]), ("admin@example.com", "Ada Admin", &["shopper", "inventory_admin", "catalog_editor", "admin"])];

/// Password of every demo account.
pub const PASSWORD: &str = "tessera-demo";

/// The demo category tree: slug, name, parent slug.
pub const CATEGORIES: &[(&str, &str, Option<&str>)] = &[
    ("apparel", "Apparel", None),
    ("tees", "T-shirts", Some("apparel")),
    ("hoodies", "Hoodies", Some("apparel")),
    ("caps", "Caps", Some("apparel")),
    ("home", "Home", None),
    ("mugs", "Mugs", Some("home")),
    ("bags", "Bags", Some("home")),
    ("stationery", "Stationery", None),
    ("notebooks", "Notebooks", Some("stationery")),
    ("pens", "Pens", Some("stationery")),
    ("stickers", "Stickers", Some("stationery")),
];

/// A SKU of the demo data (written here, so one that is not a SKU is a bug the tests below catch).
fn demo_sku(text: &str) -> Sku {
    Sku::parse(text).unwrap_or_else(|error| panic!("a demo SKU: {error}"))
}

/// One sellable variant of a demo product.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DemoVariant {
    pub sku: Sku,
    /// e.g. "M / Blue"; empty for a product with one variant.
    pub label: String,
    /// Attribute name → value (size, colour).
    pub attributes: Vec<(String, String)>,
    pub stock: i64,
}

/// A demo product of the generated catalogue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DemoCatalogProduct {
    /// URL slug, unique.
    pub id: String,
    pub name: String,
    pub brand: String,
    pub category: &'static str,
    pub description: String,
    pub price_minor: i64,
    pub variants: Vec<DemoVariant>,
}

/// A tiny deterministic generator (SplitMix64), so every service derives the same catalogue.
struct Mix(u64);

impl Mix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[(self.next() % items.len() as u64) as usize]
    }
}

const BRANDS: &[&str] = &["Ferris & Co", "Northwind", "Oakline", "Pebble", "Tidewater", "Lumen", "Hearth", "Kestrel"];
const ADJECTIVES: &[&str] = &["Classic", "Everyday", "Heavy", "Light", "Organic", "Recycled", "Vintage", "Studio", "Field", "Coastal"];
const COLOURS: &[(&str, &str)] = &[("BLK", "Black"), ("WHT", "White"), ("BLU", "Blue"), ("RED", "Red"), ("GRN", "Green"), ("SND", "Sand")];
const SIZES: &[&str] = &["S", "M", "L", "XL"];

/// A kind of generated product: category, noun, SKU stem, price range in cents, sized?, coloured?.
type Kind = (&'static str, &'static str, &'static str, (i64, i64), bool, bool);

const KINDS: &[Kind] = &[
    ("tees", "tee", "TEE", (1500, 3500), true, true),
    ("hoodies", "hoodie", "HOD", (4500, 8900), true, true),
    ("caps", "cap", "CAP", (1800, 3200), false, true),
    ("mugs", "mug", "MUG", (900, 2400), false, true),
    ("bags", "tote", "BAG", (1200, 4900), false, true),
    ("notebooks", "notebook", "NTB", (700, 2600), false, false),
    ("pens", "pen", "PEN", (200, 1800), false, true),
    ("stickers", "sticker pack", "STK", (300, 900), false, false),
];

/// The classic products (the first eight, with their fixed SKUs and stock) followed by `extra` generated
/// ones, always the same for the same `extra`.
pub fn catalog(extra: usize) -> Vec<DemoCatalogProduct> {
    let categories = ["tees", "tees", "mugs", "caps", "bags", "notebooks", "pens", "stickers"];
    let mut products: Vec<DemoCatalogProduct> = PRODUCTS
        .iter()
        .zip(categories)
        .map(|(product, category)| DemoCatalogProduct {
            id: product.sku.to_ascii_lowercase(),
            name: product.name.to_owned(),
            brand: "Ferris & Co".to_owned(),
            category,
            description: product.description.to_owned(),
            price_minor: product.price_minor,
            variants: vec![DemoVariant { sku: demo_sku(product.sku), label: String::new(), attributes: Vec::new(), stock: product.stock }],
        })
        .collect();
    let mut mix = Mix(0x7E55_E7A0);
    for n in 0..extra {
        let (category, noun, stem, (low, high), sized, coloured) = *mix.pick(KINDS);
        let brand = *mix.pick(BRANDS);
        let adjective = *mix.pick(ADJECTIVES);
        let price = low + (mix.next() % ((high - low) as u64 / 50 + 1)) as i64 * 50 - 1;
        let colours: Vec<&(&str, &str)> = if coloured { (0..1 + mix.next() % 3).map(|_| mix.pick(COLOURS)).collect() } else { Vec::new() };
        let mut colours = colours;
        colours.sort();
        colours.dedup();
        let sizes: &[&str] = if sized { SIZES } else { &[] };
        let mut variants = Vec::new();
        let colour_options: Vec<Option<&(&str, &str)>> = if colours.is_empty() { vec![None] } else { colours.iter().map(|c| Some(*c)).collect() };
        let size_options: Vec<Option<&str>> = if sizes.is_empty() { vec![None] } else { sizes.iter().map(|s| Some(*s)).collect() };
        for colour in &colour_options {
            for size in &size_options {
                let mut sku = format!("{stem}-{n:04}");
                let mut label = Vec::new();
                let mut attributes = Vec::new();
                if let Some((code, name)) = colour {
                    sku.push_str(&format!("-{code}"));
                    label.push(name.to_string());
                    attributes.push(("colour".to_owned(), name.to_lowercase()));
                }
                if let Some(size) = size {
                    sku.push_str(&format!("-{size}"));
                    label.push(size.to_string());
                    attributes.push(("size".to_owned(), size.to_lowercase()));
                }
                let stock = match mix.next() % 10 {
                    0 => 0,
                    1 | 2 => 1 + (mix.next() % 4) as i64,
                    _ => 5 + (mix.next() % 60) as i64,
                };
                variants.push(DemoVariant { sku: demo_sku(&sku), label: label.join(" / "), attributes, stock });
            }
        }
        let name = format!("{adjective} {noun} No. {}", n + 1);
        products.push(DemoCatalogProduct {
            id: format!("{}-{noun}-{}", adjective.to_lowercase(), n + 1).replace(' ', "-"),
            description: format!("{adjective} {noun} by {brand}. Made to last, shipped in recycled packaging. Item {} of the demo catalogue.", n + 1),
            name,
            brand: brand.to_owned(),
            category,
            price_minor: price,
            variants,
        });
    }
    products
}

/// How many generated products the demo adds to the classic eight (≥ 500 in all).
pub const DEFAULT_EXTRA_PRODUCTS: usize = 520;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_generated_catalogue_is_deterministic_and_well_formed() {
        let products = catalog(DEFAULT_EXTRA_PRODUCTS);
        assert_eq!(products, catalog(DEFAULT_EXTRA_PRODUCTS));
        assert!(products.len() >= 500);
        let mut skus: Vec<&str> = products.iter().flat_map(|p| p.variants.iter().map(|v| v.sku.as_str())).collect();
        let mut ids: Vec<&str> = products.iter().map(|p| p.id.as_str()).collect();
        let (sku_count, id_count) = (skus.len(), ids.len());
        skus.sort();
        skus.dedup();
        ids.sort();
        ids.dedup();
        assert_eq!((skus.len(), ids.len()), (sku_count, id_count), "unique SKUs and ids");
        // Every SKU is a `Sku` already: one that is not panics in `demo_sku` while the data is made.
        for product in &products {
            assert!(CATEGORIES.iter().any(|(slug, _, _)| *slug == product.category));
            assert!(product.price_minor > 0 && !product.variants.is_empty());
        }
        assert_eq!(products[2].variants[0].sku.as_str(), "MUG-STN-01");
    }
}
