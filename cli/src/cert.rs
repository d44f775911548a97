//! `skein cert`: make the cluster's CA and node certificates for mutual TLS
//! between nodes (and the nodes' HTTPS). Local files only: no node is asked.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use skein_tls::{issue, NodeTls};

/// `skein cert ca` and `skein cert node`.
#[derive(Debug, Subcommand)]
pub enum CertCommand {
    /// Make a new cluster CA: DIR/ca.pem and DIR/ca.key.
    #[command(
        long_about = "\
Make a new certificate authority for one cluster: DIR/ca.pem (its certificate,
valid 10 years; every node gets a copy) and DIR/ca.key (its private key, mode
0600; keep it on the machine you issue certificates from, never on the nodes).

Refuses to overwrite an existing DIR/ca.key: every certificate it signed would
stop verifying.",
        after_help = "\
Examples:
  skein cert ca --dir ./skein-ca
  skein cert node --ca-dir ./skein-ca --id 1 --host 10.0.0.1 --host node1.example.com"
    )]
    Ca(CaArgs),

    /// Issue a node certificate signed by the CA: node.pem, node.key and ca.pem.
    #[command(
        long_about = "\
Issue a certificate for one node, signed by the CA in --ca-dir. The certificate
names the node's id and role (a URI skein://ROLE/ID: a node may only speak for
the id its certificate names), the DNS name node-ID.skein, and every --host
(for HTTPS clients, which check the name they dialled). It is good for both
ends of node-to-node RPC (server and client).

Writes node.pem, node.key (mode 0600) and a copy of the CA's ca.pem to --out,
a directory to give the node as --tls-dir. Files are replaced atomically, so
re-issuing into a running node's --tls-dir renews its certificate: the node
picks up the new files without a restart.",
        after_help = "\
Examples:
  skein cert node --ca-dir ./skein-ca --id 1 --host 10.0.0.1
  skein cert node --ca-dir ./skein-ca --id 4 --role worker --host 10.0.0.4 --host w4.example.com --out /etc/skein/tls
  skein cert node --ca-dir ./skein-ca --id 2 --host 127.0.0.1 --days 30"
    )]
    Node(NodeArgs),
}

#[derive(Debug, Args)]
pub struct CaArgs {
    /// The directory to write ca.pem and ca.key into (created if needed).
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
}

#[derive(Debug, Args)]
pub struct NodeArgs {
    /// The CA's directory (made by `skein cert ca`): ca.pem and ca.key are read from it.
    /// (Not `--ca`: that global option names the ca.pem the CLI trusts for HTTPS.)
    #[arg(long, value_name = "DIR")]
    pub ca_dir: PathBuf,

    /// The node's id, as given to skein-node --id.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub id: u64,

    /// The node's role: member (a Raft member) or worker.
    #[arg(long, default_value = "member", value_parser = clap::builder::PossibleValuesParser::new(issue::ROLES))]
    pub role: String,

    /// A host name or IP address clients reach the node by; repeat for several
    /// (IP addresses become IP names, anything else DNS names).
    #[arg(long = "host", value_name = "HOST")]
    pub hosts: Vec<String>,

    /// Where to write node.pem, node.key and ca.pem [default: CA_DIR/node-ID].
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,

    /// How many days the certificate is valid.
    #[arg(long, value_name = "N", default_value_t = issue::NODE_DAYS, value_parser = clap::value_parser!(u32).range(1..))]
    pub days: u32,
}

/// Runs `skein cert ...`, printing the files written and what to do next.
pub fn run(command: CertCommand, out: &mut dyn Write) -> anyhow::Result<()> {
    match command {
        CertCommand::Ca(args) => {
            issue::make_ca(&args.dir).context("making the CA")?;
            writeln!(out, "wrote {}  (the CA certificate: copy it to every node)", args.dir.join("ca.pem").display())?;
            writeln!(out, "wrote {}  (the CA key: keep it secret, off the nodes)", args.dir.join("ca.key").display())?;
            writeln!(out, "next: skein cert node --ca-dir {} --id 1 --host <address of node 1>", args.dir.display())?;
        }
        CertCommand::Node(args) => {
            let dir = args.out.unwrap_or_else(|| args.ca_dir.join(format!("node-{}", args.id)));
            issue::issue_node_with_days(&args.ca_dir, args.id, &args.role, &args.hosts, &dir, args.days)
                .context("issuing the node certificate")?;
            // Load it as the node will, so a problem shows here, not there.
            NodeTls::load(&dir).context("checking the files just written")?;
            let mut names = vec![format!("skein://{}/{}", args.role, args.id), format!("node-{}.skein", args.id)];
            names.extend(args.hosts.iter().cloned());
            writeln!(
                out,
                "wrote {}  (node {}'s certificate: {})",
                dir.join("node.pem").display(),
                args.id,
                names.join(", ")
            )?;
            writeln!(out, "wrote {}  (its private key)", dir.join("node.key").display())?;
            writeln!(out, "wrote {}  (the CA certificate)", dir.join("ca.pem").display())?;
            writeln!(out, "valid for {} days", args.days)?;
            writeln!(
                out,
                "next: copy {} to node {} and start skein-node with --tls-dir {}",
                dir.display(),
                args.id,
                dir.display()
            )?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(subcommand)]
        cert: CertCommand,
    }

    fn parse(args: &[&str]) -> Result<CertCommand, clap::Error> {
        Cli::try_parse_from(std::iter::once("cert").chain(args.iter().copied())).map(|c| c.cert)
    }

    #[test]
    fn node_flags_parse_with_defaults() {
        let CertCommand::Node(args) =
            parse(&["node", "--ca-dir", "d", "--id", "3", "--host", "10.0.0.3", "--host", "n3"]).expect("parses")
        else {
            panic!("not node")
        };
        assert_eq!((args.id, args.role.as_str(), args.days), (3, "member", 365));
        assert_eq!(args.hosts, vec!["10.0.0.3", "n3"]);
        assert!(parse(&["node", "--ca-dir", "d", "--id", "0"]).is_err(), "id 0");
        assert!(parse(&["node", "--ca-dir", "d", "--id", "1", "--role", "admin"]).is_err(), "unknown role");
    }

    #[test]
    fn ca_then_node_writes_a_tls_dir() {
        let root = tempfile::tempdir().expect("tempdir");
        let ca = root.path().join("ca");
        let mut out = Vec::new();
        run(parse(&["ca", "--dir", ca.to_str().expect("utf-8")]).expect("parses"), &mut out).expect("ca");
        let ca_str = ca.to_str().expect("utf-8");
        run(
            parse(&["node", "--ca-dir", ca_str, "--id", "2", "--role", "worker", "--host", "127.0.0.1"])
                .expect("parses"),
            &mut out,
        )
        .expect("node");
        let text = String::from_utf8(out).expect("utf-8");
        assert!(text.contains("skein://worker/2"), "{text}");
        assert!(text.contains("--tls-dir"), "{text}");
        let tls = NodeTls::load(&ca.join("node-2")).expect("the default --out works as --tls-dir");
        assert_eq!(tls.node_id(), 2);
        // A second CA over the first is refused.
        let err = run(parse(&["ca", "--dir", ca_str]).expect("parses"), &mut Vec::new()).expect_err("refused");
        assert!(format!("{err:#}").contains("ca.key"), "{err:#}");
    }
}
