//! Fuzz target `dns`: see `vswitch_fuzz::dns`.
#![cfg_attr(fuzzing, no_main)]

#[cfg(fuzzing)]
libfuzzer_sys::fuzz_target!(|data: &[u8]| vswitch_fuzz::dns(data));

#[cfg(not(fuzzing))]
fn main() {
    vswitch_fuzz::replay_main(vswitch_fuzz::dns);
}
