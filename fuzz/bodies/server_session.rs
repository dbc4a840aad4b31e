//! The leader's session fed arbitrary client input: whatever frames the bytes decode to
//! (after an optional valid hello), with store answers for everything it asks. It must
//! never panic, and never send an iterator more entries than it was granted.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use party_proto::wire::{
    encode_frame, ClientMessage, Entry, FrameDecoder, Hello, ProtocolId, Response, ServerMessage,
};
use party_proto::{
    ClientId, IterId, ServerConfig, ServerInput, ServerOutput, ServerSession, Timestamp,
};

pub fn run(data: &[u8]) {
    let Some((&first, bytes)) = data.split_first() else {
        return;
    };
    let config = ServerConfig {
        max_in_flight: 8,
        max_iterators: 4,
        max_iter_credits: 16,
        ..ServerConfig::default()
    };
    let mut now = Timestamp::ZERO;
    let mut session = ServerSession::new(now, config);
    let mut stream = Vec::new();
    if first & 1 == 1 {
        let hello = ClientMessage::Hello(Hello {
            protocol: ProtocolId::CURRENT,
            client_id: ClientId(1),
            store: "fjall".into(),
        });
        encode_frame(&hello, 1 << 20, &mut stream).expect("a hello encodes");
    }
    stream.extend_from_slice(bytes);
    let mut decoder = FrameDecoder::new(1 << 16);
    let mut input = stream.as_slice();
    let mut granted: HashMap<IterId, i64> = HashMap::new();
    loop {
        let inputs = match decoder.decode::<ClientMessage>(&mut input) {
            Ok(Some(message)) => {
                match &message {
                    ClientMessage::IterOpen { iter, credits, .. } => {
                        *granted.entry(*iter).or_default() += i64::from(*credits);
                    }
                    ClientMessage::IterNext { iter, credits, .. } => {
                        *granted.entry(*iter).or_default() += i64::from(*credits);
                    }
                    _ => {}
                }
                vec![ServerInput::Message(message)]
            }
            Ok(None) => break,
            Err(error) => vec![ServerInput::BadFrame(error)],
        };
        let stop = matches!(inputs.first(), Some(ServerInput::BadFrame(_)));
        let mut pending = VecDeque::from(inputs);
        // Run the session and answer its store work, in order, until it is quiet.
        while let Some(next) = pending.pop_front() {
            session.handle_input(now, next);
            while let Some(output) = session.poll_output() {
                match output {
                    ServerOutput::Read { id, .. } | ServerOutput::Write { id, .. } => {
                        pending.push_back(ServerInput::Completed {
                            id,
                            result: Ok(Response::Written),
                        });
                    }
                    ServerOutput::IterPull { iter, max, .. } => {
                        let entries = (0..max.min(40) + u32::from(first >> 7))
                            .map(|i| Entry {
                                key: i.to_be_bytes().to_vec(),
                                value: vec![],
                            })
                            .collect();
                        pending.push_back(ServerInput::IterChunk {
                            iter,
                            entries,
                            exhausted: first & 2 == 2,
                        });
                    }
                    ServerOutput::Send(ServerMessage::IterData { iter, entries }) => {
                        let left = granted.entry(iter).or_default();
                        *left -= entries.len() as i64;
                        assert!(*left >= 0, "sent more entries than granted");
                    }
                    _ => {}
                }
            }
        }
        now = now + Duration::from_millis(u64::from(first));
        session.handle_timeout(now);
        while session.poll_output().is_some() {}
        if stop {
            break;
        }
    }
}
