//! Who serves whom: a leader admits or refuses a new connection, and a follower its
//! leader, on facts the driver gathers (the peer's user, how many followers are connected).

use crate::error::ErrorCode;

/// What the driver knows about a new connection.
#[derive(serde::Serialize, serde::Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerFacts {
    /// The peer's effective user, where the platform tells.
    pub uid: Option<u32>,
    /// The user the leader runs as, where known.
    pub owner: Option<u32>,
    /// Followers connected right now, not counting this one.
    pub connected: u32,
    /// Followers the leader serves at once.
    pub max_connections: u32,
}

/// Admits a connection, or says why it is refused (to tell the peer before hanging up).
/// Another user is refused even below the connection limit: the socket's owner-only mode
/// already keeps it out, and this holds if the mode is loosened.
pub fn admit_peer(peer: PeerFacts) -> Result<(), ErrorCode> {
    if let (Some(uid), Some(owner)) = (peer.uid, peer.owner) {
        if uid != owner {
            return Err(ErrorCode::OtherUser { uid });
        }
    }
    if peer.connected >= peer.max_connections {
        return Err(ErrorCode::TooManyConnections {
            limit: peer.max_connections,
        });
    }
    Ok(())
}

/// Whether the process that accepted this one's connection may be its leader: not if it
/// runs as another user (`peer_uid`) than this process (`user`). Where the platform does
/// not tell, there is nothing to judge.
pub fn admit_leader(peer_uid: Option<u32>, user: Option<u32>) -> Result<(), ErrorCode> {
    match (peer_uid, user) {
        (Some(uid), Some(user)) if uid != user => Err(ErrorCode::LeaderOfOtherUser { uid }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(uid: Option<u32>, connected: u32) -> PeerFacts {
        PeerFacts {
            uid,
            owner: Some(1000),
            connected,
            max_connections: 2,
        }
    }

    #[test]
    fn the_owner_is_served_up_to_the_limit_and_others_never() {
        assert_eq!(admit_peer(peer(Some(1000), 1)), Ok(()));
        assert_eq!(admit_peer(peer(None, 0)), Ok(()), "no credentials to judge");
        assert_eq!(
            admit_peer(peer(Some(1000), 2)),
            Err(ErrorCode::TooManyConnections { limit: 2 })
        );
        assert_eq!(
            admit_peer(peer(Some(0), 0)),
            Err(ErrorCode::OtherUser { uid: 0 }),
            "another user, even with room"
        );
    }
}
