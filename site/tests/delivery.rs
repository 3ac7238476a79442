//! The whole site's layout: the all-in-one binary serves what each fragment crate declares.

#[test]
fn every_fragment_crate_declares_the_name_and_prefix_its_code_owns() {
    // `cargo xtask` builds what `[package.metadata.tessera]` declares; the server serves what the code says.
    for fragment in tessera_site::FRAGMENTS {
        let path = format!("{}/../fragments/{}/Cargo.toml", env!("CARGO_MANIFEST_DIR"), fragment.name());
        let manifest = std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("{path}: {error}"));
        assert!(manifest.contains("[package.metadata.tessera]"), "{path}");
        assert!(manifest.contains(&format!("fragment = \"{}\"", fragment.name())), "{path}");
        assert!(manifest.contains(&format!("prefix = \"{}\"", fragment.prefix())), "{path}");
    }
}
