//! `aisapp`: the mini-app author CLI (in progress).

fn main() {}
