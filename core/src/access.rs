//! Access control for admins: grants on name prefixes, and identities that can be disabled
//! without re-issuing certificates. Every change goes through the Raft log, so it takes effect on
//! every node at the same position and survives restarts.

use crate::client::{CallOptions, Client};
use crate::error::ClientError;
use crate::wire::{AclTarget, AdminCommand, IdentityInfo, Permission, Query, QueryResponse, Request, Response};

/// Grants and identities; every call needs an admin identity.
///
/// ```no_run
/// # async fn example(client: distsync::Client) -> Result<(), distsync::ClientError> {
/// use distsync::wire::Permission;
///
/// let access = client.access();
/// access.grant("billing", "lock:billing/".parse()?, Permission::Write).await?;
/// access.grant("billing", "kv:config/".parse()?, Permission::Read).await?;
/// for identity in access.identities().await? {
///     println!("{} admin={} grants={}", identity.identity, identity.admin, identity.grants.len());
/// }
/// access.disable("billing").await?; // a leaked key: its sessions end, its requests are refused
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Access {
    client: Client,
}

impl Access {
    pub(crate) fn new(client: Client) -> Self {
        Access { client }
    }

    /// Grants `permission` on `target` to `identity`, replacing an earlier permission on the same
    /// target; for [`AclTarget::Admin`] the permission is ignored. Returns whether anything
    /// changed.
    ///
    /// # Errors
    ///
    /// [`ClientError::Server`] with `PermissionDenied` unless this client is an admin;
    /// [`ClientError::InvalidArgument`] for a bad identity or prefix; `LimitReached` past
    /// [`crate::wire::GRANTS_PER_IDENTITY_MAX`] or [`crate::wire::IDENTITIES_MAX`].
    pub async fn grant(&self, identity: &str, target: AclTarget, permission: Permission) -> Result<bool, ClientError> {
        self.apply(AdminCommand::Grant { identity: identity.to_string(), target, permission }).await
    }

    /// Removes `identity`'s grant on `target`; returns whether it had one.
    ///
    /// # Errors
    ///
    /// As [`Access::grant`].
    pub async fn revoke(&self, identity: &str, target: AclTarget) -> Result<bool, ClientError> {
        self.apply(AdminCommand::Revoke { identity: identity.to_string(), target }).await
    }

    /// Disables `identity`: its sessions end at once (locks released, deliveries returned) and
    /// each of its requests is refused from the next on, on every node. Returns whether it was
    /// enabled.
    ///
    /// # Errors
    ///
    /// As [`Access::grant`]; `InvalidArgument` when it would leave no enabled admin.
    pub async fn disable(&self, identity: &str) -> Result<bool, ClientError> {
        self.apply(AdminCommand::SetEnabled { identity: identity.to_string(), enabled: false }).await
    }

    /// Enables a disabled `identity` again; returns whether it was disabled.
    ///
    /// # Errors
    ///
    /// As [`Access::grant`].
    pub async fn enable(&self, identity: &str) -> Result<bool, ClientError> {
        self.apply(AdminCommand::SetEnabled { identity: identity.to_string(), enabled: true }).await
    }

    /// Every identity with grants, a disabled mark or open sessions, in name order.
    ///
    /// # Errors
    ///
    /// As [`Access::grant`].
    pub async fn identities(&self) -> Result<Vec<IdentityInfo>, ClientError> {
        let mut all = Vec::new();
        let mut after = None;
        loop {
            match self.client.read(Query::Identities { after: after.clone() }).await? {
                QueryResponse::Identities { identities, more } => {
                    after = identities.last().map(|info| info.identity.clone());
                    all.extend(identities);
                    if !more || after.is_none() {
                        return Ok(all);
                    }
                }
                other => {
                    return Err(ClientError::Protocol {
                        reason: format!("unexpected answer to an identity list: {other:?}"),
                    })
                }
            }
        }
    }

    async fn apply(&self, command: AdminCommand) -> Result<bool, ClientError> {
        command.validate()?;
        match self.client.call(&Request::Admin(command), CallOptions::default()).await? {
            Response::AdminApplied { changed } => Ok(changed),
            other => Err(ClientError::Protocol { reason: format!("unexpected answer to an admin command: {other:?}") }),
        }
    }
}
