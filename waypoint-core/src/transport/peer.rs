//! The Unix socket peer check: which local processes may hand connections to the waypoint.

/// Who may connect to a Unix socket listener, by the credentials the kernel records for the
/// connecting process (`SO_PEERCRED`: its uid, gid and pid at `connect()` time, which it cannot
/// forge). The file mode keeps strangers from opening the socket at all; this check also keeps
/// out processes that share the socket's group (or run as root and ignore the mode), so only
/// the co-located ztunnel can claim identities in PROXY headers. A connection whose credentials
/// cannot be read is refused too: fail closed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct PeerCheck {
    /// The uid required, if any.
    pub uid: Option<u32>,
    /// The gid required, if any.
    pub gid: Option<u32>,
}

/// Why a Unix socket peer was refused; [`PeerRejection::reason`] is its metric label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum PeerRejection {
    /// The peer runs as another user.
    #[error("peer uid {found} is not the required {required}")]
    Uid {
        /// The peer's uid.
        found: u32,
        /// The uid required.
        required: u32,
    },
    /// The peer runs with another primary group.
    #[error("peer gid {found} is not the required {required}")]
    Gid {
        /// The peer's gid.
        found: u32,
        /// The gid required.
        required: u32,
    },
    /// The kernel did not tell who the peer is.
    #[error("peer credentials unavailable")]
    Unknown,
}

impl PeerRejection {
    /// Every metric label, so counters can start at zero.
    pub(crate) const REASONS: [&'static str; 3] =
        ["uid_mismatch", "gid_mismatch", "no_credentials"];

    /// The `reason` label.
    pub(crate) fn reason(&self) -> &'static str {
        match self {
            PeerRejection::Uid { .. } => "uid_mismatch",
            PeerRejection::Gid { .. } => "gid_mismatch",
            PeerRejection::Unknown => "no_credentials",
        }
    }
}

impl PeerCheck {
    /// True when nothing is required.
    pub(crate) fn is_open(&self) -> bool {
        self.uid.is_none() && self.gid.is_none()
    }

    /// Checks a peer's `(uid, gid)`, `None` when they could not be read.
    pub(crate) fn check(&self, creds: Option<(u32, u32)>) -> Result<(), PeerRejection> {
        if self.is_open() {
            return Ok(());
        }
        let (uid, gid) = creds.ok_or(PeerRejection::Unknown)?;
        match (self.uid, self.gid) {
            (Some(required), _) if uid != required => Err(PeerRejection::Uid {
                found: uid,
                required,
            }),
            (_, Some(required)) if gid != required => Err(PeerRejection::Gid {
                found: gid,
                required,
            }),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_peer_check_requires_what_is_set_and_fails_closed() {
        let open = PeerCheck::default();
        assert_eq!(open.check(None), Ok(()));
        assert_eq!(open.check(Some((5, 5))), Ok(()));

        let uid = PeerCheck {
            uid: Some(1337),
            gid: None,
        };
        assert_eq!(uid.check(Some((1337, 0))), Ok(()));
        let wrong = uid.check(Some((0, 0))).unwrap_err();
        assert_eq!(wrong.reason(), "uid_mismatch");
        assert_eq!(wrong.to_string(), "peer uid 0 is not the required 1337");
        assert_eq!(uid.check(None), Err(PeerRejection::Unknown));

        let both = PeerCheck {
            uid: Some(1),
            gid: Some(2),
        };
        assert_eq!(both.check(Some((1, 2))), Ok(()));
        assert_eq!(
            both.check(Some((1, 3))).unwrap_err().reason(),
            "gid_mismatch"
        );
    }
}
