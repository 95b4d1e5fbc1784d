//! Every pure parser and the request verdict, on arbitrary bytes: none may
//! panic, and what parses must be consistent.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lifeboat_nbd::proto::*;

fuzz_target!(|data: &[u8]| {
    if data.is_empty() {
        return;
    }
    let (sel, rest) = (data[0], &data[1..]);
    match sel % 5 {
        0 => {
            if let Ok(h) = <&[u8; 16]>::try_from(rest.get(..16).unwrap_or(&[])) {
                let _ = parse_option_header(h);
            }
        }
        1 => {
            if let Ok(r) = parse_info_request(rest) {
                assert!(r.name.len() <= MAX_STRING);
                assert!(r.requests.len() * 2 <= rest.len());
            }
        }
        2 => {
            if let Ok(r) = parse_meta_context_request(rest) {
                assert!(r.queries.len() * 4 <= rest.len());
                for q in &r.queries {
                    let _ = query_matches_base_allocation(q, sel & 0x80 != 0);
                }
            }
        }
        3 => {
            let _ = parse_export_name(rest);
        }
        _ => {
            // A request header plus the negotiated state it meets.
            if rest.len() < REQUEST_LEN + 9 {
                return;
            }
            let hdr: &[u8; REQUEST_LEN] = rest[..REQUEST_LEN].try_into().unwrap();
            let st = &rest[REQUEST_LEN..];
            let n = Negotiated {
                size: u64::from_be_bytes(st[0..8].try_into().unwrap()),
                read_only: st[8] & 1 != 0,
                structured: st[8] & 2 != 0,
                base_allocation: if st[8] & 4 != 0 { Some(1) } else { None },
            };
            if let Ok(r) = parse_request(hdr) {
                assert_eq!(&encode_request(&r), hdr);
                match check_request(&r, &n) {
                    Verdict::Run { payload } | Verdict::Error { payload, .. } => {
                        // Never asked to read an oversized payload.
                        assert!(payload <= MAX_PAYLOAD);
                        if let Verdict::Run { .. } = check_request(&r, &n) {
                            if r.cmd == CMD_READ || r.cmd == CMD_WRITE {
                                assert!(r.offset + r.len as u64 <= n.size);
                                assert!(r.len > 0 && r.len <= MAX_PAYLOAD);
                            }
                        }
                    }
                    Verdict::Close => assert!(r.cmd == CMD_WRITE && r.len > MAX_PAYLOAD),
                    Verdict::Disconnect => assert_eq!(r.cmd, CMD_DISC),
                }
            }
        }
    }
});
