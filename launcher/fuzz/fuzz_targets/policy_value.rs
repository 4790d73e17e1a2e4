//! One `delegate_*` value, as a flag or a policy file gives it and as `/proc/*/mountinfo` shows
//! it. The first byte picks the kind, the rest is the value.
//!
//! Beyond not panicking, every mask that is accepted must survive the textual forms it is
//! written in: `render` (flags, policy files) parses back to itself, `render_as_mounted` parses
//! back with `parse_as_mounted` to the bits the kernel knows, and the `fsconfig` options stay
//! within the kernel's 255 bytes and OR back to the mask.

#![no_main]

use std::sync::LazyLock;

use bpf_token_launcher::policy::{DelegateKind, Delegation, EnumNames, Mask};
use libfuzzer_sys::fuzz_target;

static BUILTIN: LazyLock<EnumNames> = LazyLock::new(EnumNames::builtin);

/// `fsconfig` copies at most this many bytes of a value.
const FSCONFIG_VALUE_MAX: usize = 255;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, value)) = data.split_first() else {
        return;
    };
    let kind = DelegateKind::ALL[usize::from(selector) % DelegateKind::ALL.len()];
    let text = String::from_utf8_lossy(value);
    for names in [&*BUILTIN, EnumNames::for_running_kernel()] {
        check(names, kind, &text);
    }
});

fn check(names: &EnumNames, kind: DelegateKind, text: &str) {
    if let Ok(mask) = names.parse(kind, text) {
        if !mask.is_empty() {
            let rendered = names.render(kind, mask);
            assert_eq!(
                names.parse(kind, &rendered),
                Ok(mask),
                "{kind}: {text:?} parsed to {mask:?}, rendered as {rendered:?} ({})",
                names.source()
            );
        }
        check_mounted(names, kind, mask);
        check_fsconfig(names, kind, mask);
    }
    // What mountinfo shows may carry any bits (a trailing number); the round trip must hold too.
    if let Ok(mask) = names.parse_as_mounted(kind, text) {
        check_mounted(names, kind, mask);
    }
}

/// `render_as_mounted` reads back as the known bits of the mask, alone and inside a mount's
/// super options.
fn check_mounted(names: &EnumNames, kind: DelegateKind, mask: Mask) {
    let expected = Mask(mask.0 & names.known_mask(kind).0);
    match names.render_as_mounted(kind, mask) {
        None => assert!(
            expected.is_empty(),
            "{kind}: {mask:?} shows nothing, but has known bits {expected:?} ({})",
            names.source()
        ),
        Some(shown) => assert_eq!(
            names.parse_as_mounted(kind, &shown),
            Ok(expected),
            "{kind}: {mask:?} shown as {shown:?} ({})",
            names.source()
        ),
    }

    let mut delegation = Delegation::default();
    delegation.set(kind, mask);
    let options: Vec<String> = std::iter::once("rw".to_owned())
        .chain(
            delegation
                .as_mounted(names)
                .into_iter()
                .map(|(kind, value)| format!("{}={value}", kind.option())),
        )
        .collect();
    let options = options.join(",");
    assert_eq!(
        delegation.check_mounted(&options, names),
        Ok(()),
        "{kind}: {mask:?} as mounted: {options:?} ({})",
        names.source()
    );
    let mut known = Delegation::default();
    known.set(kind, expected);
    assert_eq!(
        Delegation::from_mount_options(&options, names),
        Ok(known),
        "{kind}: {mask:?} as mounted: {options:?} ({})",
        names.source()
    );
}

/// Every `fsconfig` value fits the kernel's limit, and the values OR back to the mask.
fn check_fsconfig(names: &EnumNames, kind: DelegateKind, mask: Mask) {
    let mut delegation = Delegation::default();
    delegation.set(kind, mask);
    let options = delegation.fsconfig_options(names);
    if mask.is_empty() {
        assert!(options.is_empty(), "{kind}: empty set gives {options:?}");
        return;
    }
    assert!(!options.is_empty(), "{kind}: {mask:?} gives no option");
    let mut total = Mask::NONE;
    for (option_kind, value) in &options {
        assert_eq!(*option_kind, kind, "{mask:?} gives {options:?}");
        assert!(
            !value.is_empty() && value.len() <= FSCONFIG_VALUE_MAX,
            "{kind}: {mask:?} gives a {}-byte value {value:?}",
            value.len()
        );
        let part = names.parse(kind, value).unwrap_or_else(|e| {
            panic!(
                "{kind}: {mask:?} gives {value:?}, which does not parse: {e} ({})",
                names.source()
            )
        });
        total = Mask(total.0 | part.0);
    }
    assert_eq!(
        total,
        mask,
        "{kind}: options {options:?} ({})",
        names.source()
    );
}
