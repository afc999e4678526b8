//! Running the `distsync` command line against a cluster, as a user's shell would.

use std::process::{Command, Output, Stdio};

use anyhow::Context as _;

use crate::cluster::CLI_TIMEOUT;
use crate::process::run_bounded;
use crate::Cluster;

impl Cluster {
    /// Like [`Cluster::run_cli`], with `input` on the command's stdin.
    ///
    /// # Errors
    ///
    /// When the binary cannot be run or does not finish in time.
    pub async fn run_cli_with_stdin(&self, args: &[&str], input: &[u8]) -> anyhow::Result<Output> {
        use tokio::io::AsyncWriteExt as _;
        let mut command = tokio::process::Command::new(self.binary());
        command
            .arg("--endpoints")
            .arg(self.endpoints().join(","))
            .arg("--ca")
            .arg(self.ca_path())
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command.spawn()?;
        let mut stdin = child.stdin.take().context("stdin")?;
        stdin.write_all(input).await?;
        drop(stdin);
        Ok(tokio::time::timeout(CLI_TIMEOUT, child.wait_with_output()).await.context("the CLI did not finish")??)
    }

    /// Runs the command line against the whole cluster: `distsync --endpoints <all> --ca <ca>
    /// ARGS…`, with a 60 s deadline. Returns the output whatever the exit status.
    ///
    /// # Errors
    ///
    /// When the binary cannot be run or does not finish in time.
    pub async fn run_cli(&self, args: &[&str]) -> anyhow::Result<Output> {
        let endpoints = self.endpoints().join(",");
        let ca = self.ca_path();
        let mut full: Vec<&str> = vec!["--endpoints", &endpoints, "--ca"];
        let ca_text = ca.to_str().context("temporary directory path is not UTF-8")?;
        full.push(ca_text);
        full.extend_from_slice(args);
        self.run_binary(&full).await
    }

    /// Runs the `distsync` binary with exactly these arguments, with a 60 s deadline.
    ///
    /// # Errors
    ///
    /// When the binary cannot be run or does not finish in time.
    pub async fn run_binary(&self, args: &[&str]) -> anyhow::Result<Output> {
        let mut command = Command::new(self.binary());
        command.args(args);
        run_bounded(command, CLI_TIMEOUT).await
    }
}
