//! Front ends that let container runtimes drive the switch in their own protocols (the CNI
//! plugin is a binary of its own, `cni/`, that speaks the control protocol).

pub mod docker;
