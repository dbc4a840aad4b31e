//! Arbitrary bytes, cut into arbitrary chunks, into the frame decoder of both directions:
//! no panic, never more than one frame buffered, and a sticky typed error.

use party_proto::wire::{ClientMessage, FrameDecoder, ServerMessage};

const MAX: u32 = 4096;

fn decode<M: serde::de::DeserializeOwned>(data: &[u8]) {
    let Some((&cut, bytes)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(cut % 64) + 1;
    let mut decoder = FrameDecoder::new(MAX);
    let mut failed = None;
    for mut piece in bytes.chunks(chunk) {
        loop {
            match decoder.decode::<M>(&mut piece) {
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(error) => {
                    failed = Some(error);
                    break;
                }
            }
        }
        assert!(
            decoder.buffered_len() <= 4 + MAX as usize,
            "more than one frame buffered"
        );
        if failed.is_some() {
            break;
        }
    }
    if let Some(error) = failed {
        let mut more: &[u8] = &[1, 0, 0, 0, 0];
        assert_eq!(
            decoder.decode::<M>(&mut more).err(),
            Some(error),
            "errors stick"
        );
    }
}

pub fn run(data: &[u8]) {
    decode::<ClientMessage>(data);
    decode::<ServerMessage>(data);
}
