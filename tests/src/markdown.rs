//! Reading the project's Markdown docs in doc-drift tests: heading anchors, in-page links
//! and links to other docs. Shared, std only, by `tests/tests/apdu_doc.rs` (as
//! `openpsd_tests::markdown`) and `card-sim/tests/doc.rs` (which includes this file by
//! path: card-sim's tests do not depend on this crate).

use std::collections::BTreeSet;

/// The anchor GitHub gives a heading line (`## 3.4 SELECT` → `34-select`): lower case,
/// punctuation dropped, spaces to hyphens.
pub fn anchor(heading: &str) -> String {
    heading
        .trim_start_matches('#')
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

/// The anchors of every heading of `doc` (lines starting with `#` outside code blocks).
pub fn anchors(doc: &str) -> BTreeSet<String> {
    let mut in_code = false;
    doc.lines()
        .filter(|l| {
            if l.starts_with("```") {
                in_code = !in_code;
            }
            !in_code && l.starts_with('#')
        })
        .map(anchor)
        .collect()
}

/// Checks that every in-page link `](#anchor)` of `doc` (named `name` in messages) names
/// one of its headings, and that there are at least `at_least` of them.
pub fn check_in_page_links(doc: &str, name: &str, at_least: usize) {
    let anchors = anchors(doc);
    let mut rest = doc;
    let mut links = 0;
    while let Some(i) = rest.find("](#") {
        let tail = &rest[i + 3..];
        let end = tail
            .find(')')
            .unwrap_or_else(|| panic!("{name}: a link that does not end"));
        let anchor = &tail[..end];
        assert!(
            anchors.contains(anchor),
            "{name} links to #{anchor}, which is no heading"
        );
        links += 1;
        rest = &tail[end..];
    }
    assert!(
        links >= at_least,
        "{name} has {links} in-page links, expected at least {at_least}"
    );
}

/// Checks that every link of `doc` (named `name`) to another Markdown file of `dir`
/// (`](other.md)` or `](other.md#anchor)`) names a file there and, with an anchor, one of
/// its headings. Returns how many such links there are.
pub fn check_links_to_other_docs(doc: &str, name: &str, dir: &std::path::Path) -> usize {
    let mut rest = doc;
    let mut links = 0;
    while let Some(i) = rest.find("](") {
        let tail = &rest[i + 2..];
        let end = tail
            .find(')')
            .unwrap_or_else(|| panic!("{name}: a link that does not end"));
        let target = &tail[..end];
        rest = &tail[end..];
        let (file, anchor) = target.split_once('#').unwrap_or((target, ""));
        let local = file.ends_with(".md")
            && file
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !local {
            continue;
        }
        let path = dir.join(file);
        let other = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{name} links to {file}: {}: {e}", path.display()));
        assert!(
            anchor.is_empty() || anchors(&other).contains(anchor),
            "{name} links to {file}#{anchor}, which is no heading of {file}"
        );
        links += 1;
    }
    links
}
