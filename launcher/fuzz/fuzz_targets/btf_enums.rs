//! Raw bytes as BTF, searched for two of the enums the policy reads.
//!
//! The input is untrusted: no panic, and what is returned is bounded by the input's size (each
//! constant takes at least 8 bytes of the type section, and decoded names are charged to a
//! budget of the input's length).

#![no_main]

use bpf_token_launcher::bpf::btf;
use libfuzzer_sys::fuzz_target;

const WANTED: [&str; 2] = ["bpf_cmd", "bpf_attach_type"];

fuzz_target!(|data: &[u8]| {
    match btf::find_enums(data, &WANTED) {
        Ok(found) => {
            assert_eq!(found.len(), WANTED.len());
            let mut constants = 0;
            let mut name_bytes = 0;
            for (enum_type, wanted) in found.iter().zip(WANTED) {
                let Some(enum_type) = enum_type else { continue };
                assert_eq!(enum_type.name, wanted);
                constants += enum_type.constants.len();
                name_bytes += enum_type
                    .constants
                    .iter()
                    .map(|c| c.name.len())
                    .sum::<usize>();
            }
            assert!(
                constants * 8 <= data.len(),
                "{constants} constants from {} bytes",
                data.len()
            );
            assert!(
                name_bytes <= data.len(),
                "{name_bytes} bytes of names from {} bytes",
                data.len()
            );
        }
        Err(error) => assert!(!error.to_string().is_empty()),
    }
});
