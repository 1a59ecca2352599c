//! `podwalld explain`: offline verdicts and reachability matrices from a manifests directory.
