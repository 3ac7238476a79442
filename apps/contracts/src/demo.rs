//! Demo data shared by the services' seeders, so the catalog's SKUs and the inventory's SKUs agree even
//! though each service seeds its own database. Only `tessera serve --demo` (what `cargo xtask run` starts)
//! seeds it.

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
pub const ACCOUNTS: &[(&str, &str, &[&str])] = &[
    ("shopper@example.com", "Sam Shopper", &["shopper"]),
    ("admin@example.com", "Ada Admin", &["shopper", "inventory_admin", "catalog_editor", "admin"]),
];

/// Password of every demo account.
pub const PASSWORD: &str = "tessera-demo";
