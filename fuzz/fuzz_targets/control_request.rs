//! Fuzz target `control_request`: see `vswitch_fuzz::control_request`.
#![cfg_attr(fuzzing, no_main)]

#[cfg(fuzzing)]
libfuzzer_sys::fuzz_target!(|data: &[u8]| vswitch_fuzz::control_request(data));

#[cfg(not(fuzzing))]
fn main() {
    vswitch_fuzz::replay_main(vswitch_fuzz::control_request);
}
