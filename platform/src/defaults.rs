//! Settings as they are with no flag and no environment, read from their own declarations.

/// A settings struct as it is with no flag and no environment: every field at the default its
/// `#[arg]` declares, so that a default is written once (tests and the benchmark build settings
/// with `..Default::default()`). Panics if a field has no default, which a test catches.
pub fn defaults<T: clap::Args + clap::FromArgMatches>() -> T {
    let command = T::augment_args(clap::Command::new("defaults"))
        // The process's environment is not the default: ignore every `env = ...`.
        .mut_args(|arg| arg.env(None));
    let matches = command
        .try_get_matches_from(["defaults"])
        .unwrap_or_else(|e| panic!("a setting without a default: {e}"));
    T::from_arg_matches(&matches).unwrap_or_else(|e| panic!("the defaults do not parse: {e}"))
}
