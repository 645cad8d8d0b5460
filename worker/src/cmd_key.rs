//! `shoal key new|show`: a submitter's signing key (see `docs/trust.md`).
//!
//! `new` writes a fresh ed25519 key (PKCS#8 PEM, mode 0600, never over an existing file) and
//! prints its public form; `show` prints the public form of a key file: the line volunteers put
//! in their `trusted_submitters`.

use std::path::PathBuf;

use anyhow::Context as _;
use shoal_sdk::SigningKey;

/// Arguments of `shoal key`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
    shoal key new --out ~/.config/shoal/submitter.key\n  \
    shoal key show ~/.config/shoal/submitter.key >> trusted_submitters   # on each worker\n  \
    shoal submit job.toml --sign-key ~/.config/shoal/submitter.key --bootstrap 192.0.2.10:7600")]
pub(crate) struct KeyArgs {
    #[command(subcommand)]
    action: KeyAction,
}

#[derive(Debug, clap::Subcommand)]
enum KeyAction {
    /// Make a new signing key and print its public form.
    New {
        /// Where to write it (refuses to overwrite a file).
        #[arg(long, value_name = "FILE", default_value = "submitter.key")]
        out: PathBuf,
    },
    /// Print the public form of a signing key (what workers list in trusted_submitters).
    Show {
        /// The key file.
        file: PathBuf,
    },
}

/// Runs the command; returns the process exit status.
pub(crate) fn run(args: KeyArgs) -> anyhow::Result<u8> {
    match args.action {
        KeyAction::New { out } => {
            let key = SigningKey::generate();
            key.write_new(&out).context("cannot write the new key")?;
            eprintln!("wrote a new signing key to {} (keep it secret); its public form:", out.display());
            println!("{}", key.public());
        }
        KeyAction::Show { file } => println!("{}", SigningKey::read(&file)?.public()),
    }
    Ok(0)
}
