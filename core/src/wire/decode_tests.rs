//! The decoder against hostile bytes (fuzzing without a fuzzer, on stable): every request and
//! answer the golden tests pin, with bits flipped, bytes cut off, inserted or appended, and plain
//! random bytes, is decoded as a node or a client would. Each decode returns a message or a
//! typed `Malformed` error, never a panic; a huge length prefix (one of the mutations) must not
//! make it allocate what the prefix claims (serde caps what it reserves up front), or the test
//! would abort. A failure names the seed to replay.

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::golden::{admin_commands, answers, commands};
use super::*;
use crate::error::FrameError;

/// Mutated inputs per message.
const MUTATIONS: u64 = 400;

/// SplitMix64.
fn next(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// `bytes` changed in one to three random ways.
fn mutate(bytes: &[u8], state: &mut u64) -> Vec<u8> {
    let mut out = bytes.to_vec();
    for _ in 0..1 + next(state) % 3 {
        let at = if out.is_empty() { 0 } else { (next(state) % out.len() as u64) as usize };
        match next(state) % 6 {
            0 if !out.is_empty() => out[at] ^= 1 << (next(state) % 8),
            1 if !out.is_empty() => out[at] = next(state) as u8,
            2 => out.truncate(at),
            3 => out.insert(at, next(state) as u8),
            // A huge length prefix where a length may be.
            4 => out.splice(at..at, [0xff, 0xff, 0xff, 0xff, 0x0f]).for_each(drop),
            _ => out.extend((0..next(state) % 16).map(|_| next(state) as u8)),
        }
    }
    out
}

/// Decodes every mutation of `message`'s encoding as a `T`: it must not panic.
fn survives<T: DeserializeOwned + std::fmt::Debug>(message: &impl Serialize, seed: u64) {
    let encoded = postcard::to_stdvec(message).expect("encodes");
    let mut state = seed;
    for mutation in 0..MUTATIONS {
        let input = mutate(&encoded, &mut state);
        let outcome = std::panic::catch_unwind(|| decode_body::<T>(&input).map(drop));
        match outcome {
            Ok(Ok(())) | Ok(Err(FrameError::Malformed { .. })) => {}
            Ok(Err(other)) => panic!("seed {seed}, mutation {mutation}: not Malformed but {other:?}"),
            Err(_) => panic!("seed {seed}, mutation {mutation}: decoding {input:02x?} panicked"),
        }
    }
}

#[test]
fn mutated_requests_decode_or_are_malformed() {
    let write = |command| WriteRequest { session: 3, seq: 4, acked_below: 2, command, secret: SessionSecret([7; 16]) };
    let mut requests: Vec<Request> = commands().into_iter().map(|command| Request::Write(write(command))).collect();
    requests.extend(admin_commands().into_iter().map(Request::Admin));
    requests.push(Request::OpenSession { ttl_ms: 5_000, secret: SessionSecret([1; 16]) });
    requests.push(Request::KeepAlive { session: 3, secret: SessionSecret([1; 16]) });
    for (seed, request) in requests.iter().enumerate() {
        survives::<Request>(request, seed as u64);
    }
}

#[test]
fn mutated_answers_decode_or_are_malformed() {
    for (seed, answer) in answers().iter().enumerate() {
        survives::<Result<Response, ServerError>>(answer, 1_000 + seed as u64);
    }
}

#[test]
fn random_bytes_decode_or_are_malformed() {
    let mut state = 42;
    for _ in 0..5_000 {
        let input: Vec<u8> = (0..next(&mut state) % 64).map(|_| next(&mut state) as u8).collect();
        for outcome in [
            std::panic::catch_unwind(|| decode_body::<Request>(&input).map(drop)),
            std::panic::catch_unwind(|| decode_body::<Result<Response, ServerError>>(&input).map(drop)),
        ] {
            assert!(outcome.is_ok(), "decoding {input:02x?} panicked");
        }
    }
}
