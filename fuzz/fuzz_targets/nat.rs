//! Fuzz target `nat`: see `vswitch_fuzz::nat`.
#![cfg_attr(fuzzing, no_main)]

#[cfg(fuzzing)]
libfuzzer_sys::fuzz_target!(|data: &[u8]| vswitch_fuzz::nat(data));

#[cfg(not(fuzzing))]
fn main() {
    vswitch_fuzz::replay_main(vswitch_fuzz::nat);
}
