//! Tests written for mutants that `cargo mutants` found surviving (see the README's
//! "Mutation testing"): each one pins a decision that the property tests and the simulator
//! did not observe.

use party_proto::wire::{LeaderLimits, ProtocolId, ServerMessage, Welcome};
use party_proto::{ClientConfig, ClientId, ClientInput, ClientOutput, ClientSession, Timestamp};

const NOW: Timestamp = Timestamp::ZERO;

fn limits(max_frame_len: u32, max_in_flight: u32, max_iter_credits: u32) -> LeaderLimits {
    LeaderLimits {
        max_frame_len,
        max_in_flight,
        max_iter_credits,
    }
}

fn welcome(leader_pid: u32, limits: LeaderLimits) -> ClientInput {
    ClientInput::Message(ServerMessage::Welcome(Welcome {
        protocol: ProtocolId::CURRENT,
        leader_pid,
        limits,
    }))
}

fn drain(session: &mut ClientSession) -> Vec<ClientOutput> {
    std::iter::from_fn(|| session.poll_output()).collect()
}

#[test]
fn the_leader_pid_is_the_welcomes_and_is_forgotten_with_the_connection() {
    let mut session = ClientSession::new(ClientId(1), ClientConfig::default());
    assert_eq!(session.leader_pid(), None);
    session.handle_input(NOW, ClientInput::Connected);
    assert_eq!(session.leader_pid(), None, "no welcome yet");
    session.handle_input(NOW, welcome(4242, limits(1 << 20, 8, 8)));
    assert_eq!(session.leader_pid(), Some(4242));
    session.handle_input(NOW, ClientInput::Disconnected);
    assert_eq!(session.leader_pid(), None);
    drain(&mut session);
}
