//! `fedtune certs`.

use std::path::PathBuf;

use clap::Args;

#[derive(Debug, Args)]
pub struct CertsArgs {
    /// Directory to write into (created if needed; existing files are never replaced).
    #[arg(long)]
    out: PathBuf,
    /// Host name or IP address devices dial to reach the server; repeat for several
    /// (`--server-name fl.example.org --server-name 10.0.0.5`).
    #[arg(long, required = true, value_name = "NAME")]
    server_name: Vec<String>,
    /// Device certificates to write for mutual TLS (client-0 … client-N-1).
    #[arg(long, default_value_t = 0, value_name = "N")]
    clients: usize,
}

pub fn run(a: CertsArgs) -> anyhow::Result<()> {
    let written = fedtune::certs::write_dev_pki(&a.out, &a.server_name, a.clients)?;
    for p in &written {
        println!("{}", p.display());
    }
    println!(
        "server: --tls-cert {0}/server.pem --tls-key {0}/server.key [--client-ca {0}/ca.pem]; \
         device: --server https://{1}:PORT --ca {0}/ca.pem [--tls-cert {0}/client-0.pem \
         --tls-key {0}/client-0.key]",
        a.out.display(),
        a.server_name[0]
    );
    Ok(())
}
