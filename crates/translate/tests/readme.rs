//! The README's compatibility table is the annotation catalog, written out: they cannot drift.

use portcullis_translate::annotations::catalog;

#[test]
fn the_readme_lists_every_annotation_as_the_catalog_does() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md");
    let readme = std::fs::read_to_string(path).expect("README.md");
    let start = readme
        .find("<!-- compatibility table:")
        .expect("the README marks where the table starts");
    let start = start + readme[start..].find('\n').expect("a line end") + 1;
    let end = readme
        .find("<!-- end of compatibility table -->")
        .expect("the README marks where the table ends");
    assert_eq!(
        &readme[start..end],
        catalog::markdown(),
        "README.md's compatibility table differs from crates/translate/src/annotations/catalog.rs"
    );
    assert!(
        catalog::CATALOG.len() >= 130,
        "every ingress-nginx annotation is listed"
    );
}
