//! Any text as `/proc/*/mountinfo`.
//!
//! No panic; the file parses as its lines do one by one; a filesystem type comes from one
//! space-separated field, so it has no space unless that field escapes one (`\040`, which the
//! parser decodes as the kernel means it).

#![no_main]

use bpf_token_launcher::mountinfo;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let entries = mountinfo::parse(&text);
    let mut by_line = Vec::new();
    for line in text.lines() {
        let mut parsed = mountinfo::parse(line);
        assert!(parsed.len() <= 1, "one line gave {parsed:?}");
        let Some(entry) = parsed.pop() else { continue };
        let (_, after) = line
            .split_once(" - ")
            .unwrap_or_else(|| panic!("{line:?} has no ` - ` but gave {entry:?}"));
        let raw_type = after.split(' ').next().unwrap_or_default();
        if !raw_type.contains('\\') {
            assert_eq!(entry.fs_type, raw_type, "{line:?}");
        }
        assert!(
            !entry.fs_type.contains(' ') || raw_type.contains('\\'),
            "{line:?} gave fs_type {:?}",
            entry.fs_type
        );
        by_line.push(entry);
    }
    assert_eq!(entries, by_line);
});
