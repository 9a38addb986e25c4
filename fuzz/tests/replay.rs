//! Every committed corpus input and every regression input runs through its target without a
//! panic (on stable, without libFuzzer). Regressions live in `fuzz/regressions/TARGET/`.

use std::path::Path;

#[test]
fn corpora_and_regressions_replay_without_a_crash() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut total = 0;
    for (name, target) in vswitch_fuzz::TARGETS {
        let corpus = root.join("corpus").join(name);
        assert!(corpus.is_dir(), "no seed corpus for {name}");
        let n = vswitch_fuzz::replay(*target, &corpus);
        assert!(n > 0, "empty seed corpus for {name}");
        total += n;
        let reg = root.join("regressions").join(name);
        if reg.is_dir() {
            total += vswitch_fuzz::replay(*target, &reg);
        }
    }
    assert!(total > 0);
}
