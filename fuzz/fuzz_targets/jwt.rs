#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| mreg_wire::fuzzing::jwt(data));
