//! `distsync acl …` and `distsync identity …`: grants on name prefixes, and identities that an
//! admin can shut out. Both need an admin identity.

use std::process::ExitCode;

use clap::Subcommand;
use distsync::wire::{AclTarget, IdentityInfo, Permission};

use crate::connect::Target;

#[derive(Subcommand)]
pub(crate) enum AclCommand {
    /// Grant PERMISSION (read or write; write implies read) on RESOURCE (kv:PREFIX, lock:PREFIX,
    /// queue:PREFIX or cache:PREFIX; an empty PREFIX is every name) to identity NAME; or make
    /// NAME an admin with `acl grant NAME admin`.
    Grant {
        /// The identity.
        name: String,
        /// `kv:PREFIX`, `lock:PREFIX`, `queue:PREFIX`, `cache:PREFIX`, or `admin`.
        resource: String,
        /// `read` or `write` (none for `admin`).
        permission: Option<String>,
    },
    /// Remove NAME's grant on RESOURCE (as it was granted), or its admin role.
    Revoke {
        /// The identity.
        name: String,
        /// `kv:PREFIX`, `lock:PREFIX`, `queue:PREFIX`, `cache:PREFIX`, or `admin`.
        resource: String,
    },
    /// Every identity with its grants.
    List {
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub(crate) enum IdentityCommand {
    /// Shut identity NAME out, cluster-wide, without re-issuing certificates: its sessions end at
    /// once (locks released, deliveries returned) and every request it makes is refused.
    Disable {
        /// The identity.
        name: String,
    },
    /// Let a disabled identity back in.
    Enable {
        /// The identity.
        name: String,
    },
    /// Identities with grants, a disabled mark or open sessions.
    List {
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// Runs one `acl` command.
pub(crate) async fn run_acl(target: &Target, command: AclCommand) -> anyhow::Result<ExitCode> {
    let client = target.connect().await?;
    let access = client.access();
    let outcome = match command {
        AclCommand::Grant { name, resource, permission } => {
            let target: AclTarget = resource.parse()?;
            let permission = match (&target, permission.as_deref()) {
                (AclTarget::Admin, None) => Permission::Admin,
                (AclTarget::Admin, Some(_)) => anyhow::bail!("`acl grant NAME admin` takes no permission"),
                (AclTarget::Resource(_), Some(permission)) => permission.parse()?,
                (AclTarget::Resource(_), None) => anyhow::bail!("give the permission: read or write"),
            };
            let changed = access.grant(&name, target.clone(), permission).await?;
            let what =
                if permission == Permission::Admin { "admin".to_string() } else { format!("{permission} on {target}") };
            println!("{name}: {what}{}", if changed { "" } else { " (already granted)" });
            Ok(ExitCode::SUCCESS)
        }
        AclCommand::Revoke { name, resource } => {
            let changed = access.revoke(&name, resource.parse()?).await?;
            println!(
                "{name}: {}",
                if changed { format!("revoked {resource}") } else { format!("had no grant on {resource}") }
            );
            Ok(ExitCode::SUCCESS)
        }
        AclCommand::List { json } => {
            let identities = access.identities().await?;
            if json {
                println!("{}", serde_json::to_string(&identities.iter().map(identity_json).collect::<Vec<_>>())?);
            } else {
                println!("{:<24} {:<40} PERMISSION", "IDENTITY", "RESOURCE");
                for identity in &identities {
                    if identity.admin {
                        println!("{:<24} {:<40} admin", identity.identity, "*");
                    }
                    for (resource, permission) in &identity.grants {
                        println!("{:<24} {:<40} {permission}", identity.identity, resource.to_string());
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    };
    client.close().await;
    outcome
}

/// Runs one `identity` command.
pub(crate) async fn run_identity(target: &Target, command: IdentityCommand) -> anyhow::Result<ExitCode> {
    let client = target.connect().await?;
    let access = client.access();
    let outcome = match command {
        IdentityCommand::Disable { name } => {
            let changed = access.disable(&name).await?;
            println!("{name}: disabled{}", if changed { "" } else { " (already)" });
            Ok(ExitCode::SUCCESS)
        }
        IdentityCommand::Enable { name } => {
            let changed = access.enable(&name).await?;
            println!("{name}: enabled{}", if changed { "" } else { " (already)" });
            Ok(ExitCode::SUCCESS)
        }
        IdentityCommand::List { json } => {
            let identities = access.identities().await?;
            if json {
                println!("{}", serde_json::to_string(&identities.iter().map(identity_json).collect::<Vec<_>>())?);
            } else {
                println!("{:<24} {:<9} {:>6} {:>8}", "IDENTITY", "STATE", "GRANTS", "SESSIONS");
                for identity in &identities {
                    let state = if identity.disabled { "disabled" } else { "enabled" };
                    let grants = if identity.admin { "admin".to_string() } else { identity.grants.len().to_string() };
                    println!("{:<24} {:<9} {:>6} {:>8}", identity.identity, state, grants, identity.sessions);
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    };
    client.close().await;
    outcome
}

/// One identity as `acl list --json` and `identity list --json` print it.
fn identity_json(identity: &IdentityInfo) -> serde_json::Value {
    let grants: Vec<serde_json::Value> = identity
        .grants
        .iter()
        .map(|(resource, permission)| {
            serde_json::json!({ "resource": resource.to_string(), "permission": permission.as_str() })
        })
        .collect();
    serde_json::json!({
        "identity": identity.identity,
        "admin": identity.admin,
        "disabled": identity.disabled,
        "grants": grants,
        "sessions": identity.sessions,
    })
}
