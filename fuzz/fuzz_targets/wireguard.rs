//! Fuzz target `wireguard`: see `vswitch_fuzz::wireguard`.
#![cfg_attr(fuzzing, no_main)]

#[cfg(fuzzing)]
libfuzzer_sys::fuzz_target!(|data: &[u8]| vswitch_fuzz::wireguard(data));

#[cfg(not(fuzzing))]
fn main() {
    vswitch_fuzz::replay_main(vswitch_fuzz::wireguard);
}
