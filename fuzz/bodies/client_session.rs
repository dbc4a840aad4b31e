//! A follower's session fed whatever frames the bytes decode to, as a leader that breaks
//! the protocol might send them, while its caller issues reads and writes and takes from
//! an iterator and a subscription. It must never panic, never answer a request twice, and
//! have answered every request once it is closed.

use std::collections::BTreeSet;
use std::time::Duration;

use party_proto::wire::{FrameDecoder, ReadOp, ServerMessage, WriteOp};
use party_proto::{
    ClientConfig, ClientId, ClientInput, ClientOutput, ClientSession, IterOptions, KeyRange,
    RequestId, Timestamp,
};

/// The first byte: bit 0 retries, bit 1 sets a request timeout, the rest is how many
/// milliseconds pass after each message.
pub fn run(data: &[u8]) {
    let Some((&first, mut input)) = data.split_first() else {
        return;
    };
    let config = ClientConfig {
        retry: first & 1 == 1,
        request_timeout: (first & 2 == 2).then_some(Duration::from_millis(20)),
        ..ClientConfig::default()
    };
    let step = Duration::from_millis(u64::from(first >> 2));
    let mut session = ClientSession::new(ClientId(7), config);
    let mut now = Timestamp::ZERO;
    let mut issued = BTreeSet::new();
    let mut completed = BTreeSet::new();
    let iter = session.open_iter(IterOptions::default());
    let watch = session.open_watch(KeyRange::all(), None);
    session.handle_input(now, ClientInput::Connected);
    let mut decoder = FrameDecoder::new(1 << 16);
    for turn in 0u64.. {
        if turn % 4 == 0 {
            let key = turn.to_be_bytes().to_vec();
            issued.insert(session.read(now, ReadOp::Get { key: key.clone() }));
            let put = WriteOp::Put {
                key,
                value: b"v".to_vec(),
            };
            issued.insert(session.write(now, put));
        }
        let _ = session.iter_take(now, iter, 4);
        let _ = session.watch_take(watch, 4);
        answered(&mut session, &mut completed);
        match decoder.decode::<ServerMessage>(&mut input) {
            Ok(Some(message)) => session.handle_input(now, ClientInput::Message(message)),
            Ok(None) => break,
            Err(error) => {
                session.handle_input(now, ClientInput::Broken(error.into()));
                break;
            }
        }
        answered(&mut session, &mut completed);
        now = now + step;
        session.handle_timeout(now);
    }
    session.handle_input(now, ClientInput::Close);
    answered(&mut session, &mut completed);
    assert_eq!(
        completed, issued,
        "requests answered, against issued, once closed"
    );
}

fn answered(session: &mut ClientSession, completed: &mut BTreeSet<RequestId>) {
    while let Some(output) = session.poll_output() {
        if let ClientOutput::Completed { id, .. } = output {
            assert!(completed.insert(id), "{id:?} answered twice");
        }
    }
}
