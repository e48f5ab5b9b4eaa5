//! The metric names, their descriptions and the README's table agree.
use super::*;

#[test]
fn every_metric_has_the_prefix_a_description_and_a_row_in_both_tables() {
    let module = include_str!("mod.rs");
    let readme = include_str!("../../README.md");
    assert!(
        readme.contains(
            "| name (after the prefix) | type | labels | what it counts | Envoy |\n\
             |---|---|---|---|---|\n"
        ),
        "the README's table has its header"
    );
    for &(name, _, help) in DESCRIPTIONS {
        let short = name
            .strip_prefix(PREFIX)
            .expect("every name has the prefix");
        assert!(!help.is_empty());
        let row = format!("| `{short}` |");
        assert!(
            module.contains(&format!("//! {row}")),
            "no row for {short} here"
        );
        assert!(readme.contains(&row), "no row for {short} in the README");
    }
    let rows = module.lines().filter(|l| l.starts_with("//! | `")).count();
    assert_eq!(rows, DESCRIPTIONS.len(), "a table row names no metric");
}
