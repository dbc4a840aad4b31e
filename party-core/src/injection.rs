//! The bug class a test asks a real process to re-create (`PARTY_INJECT=NAME`),
//! acted on only in a build with the cargo feature `bug-injection`: see party-proto's
//! `bugs`. Any other build re-creates none, whatever the environment says.

use party_proto::bugs::Bugs;

/// The environment variable that names the bug class to re-create.
#[cfg(feature = "bug-injection")]
const INJECT_ENV: &str = "PARTY_INJECT";

/// The bugs to re-create: those `PARTY_INJECT` names in a `bug-injection` build, else none.
pub(crate) fn bugs() -> Bugs {
    #[cfg(feature = "bug-injection")]
    {
        static BUGS: std::sync::OnceLock<Bugs> = std::sync::OnceLock::new();
        *BUGS.get_or_init(|| {
            let name = std::env::var(INJECT_ENV).unwrap_or_default();
            if name.is_empty() {
                return Bugs::default();
            }
            match Bugs::named(&name) {
                Some(bugs) => {
                    tracing::warn!("{INJECT_ENV}: re-creating the bug class {name}");
                    bugs
                }
                None => {
                    tracing::warn!("{INJECT_ENV}: no bug class is named {name}");
                    Bugs::default()
                }
            }
        })
    }
    #[cfg(not(feature = "bug-injection"))]
    {
        Bugs::default()
    }
}
