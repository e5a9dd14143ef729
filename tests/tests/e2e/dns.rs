//! Backends named by DNS, against a DNS server inside the test on 127.0.0.1: a name that
//! answers one address, then two, then the other one, then none, then the first again; the
//! gateway's traffic follows each change (a name that stops resolving keeps its addresses)
//! and no request fails on the way. A name that does not resolve at start is refused
//! with the name, and `/upstreams` shows each backend's name and address.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{RData, Record, RecordType};
use wasmgate_example_origin::Origin;
use wasmgate_tests::client;
use wasmgate_tests::harness::{self, Toml};
use wasmgate_tests::load::Load;

/// The one name the server knows.
const NAME: &str = "svc.test.";

/// A DNS server answering A queries for [`NAME`] with `answers` (TTL 0), and NXDOMAIN for
/// any other name.
async fn dns_server(answers: Arc<Mutex<Vec<Ipv4Addr>>>) -> SocketAddr {
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let addr = socket.local_addr().expect("addr");
    tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        while let Ok((n, from)) = socket.recv_from(&mut buf).await {
            let Ok(query) = Message::from_vec(&buf[..n]) else { continue };
            let mut response = Message::response(query.metadata.id, query.metadata.op_code);
            response.metadata.recursion_desired = query.metadata.recursion_desired;
            response.metadata.recursion_available = true;
            response.metadata.authoritative = true;
            for q in &query.queries {
                response.add_query(q.clone());
                if !q.name().to_ascii().eq_ignore_ascii_case(NAME) {
                    response.metadata.response_code = ResponseCode::NXDomain;
                    continue;
                }
                if q.query_type() == RecordType::A {
                    let ips = answers.lock().expect("answers").clone();
                    for ip in ips {
                        response.add_answer(Record::from_rdata(q.name().clone(), 0, RData::A(A(ip))));
                    }
                }
            }
            if let Ok(bytes) = response.to_vec() {
                let _ = socket.send_to(&bytes, from).await;
            }
        }
    });
    addr
}

/// Origins `b` and `c` on 127.0.0.2 and 127.0.0.3, on one port.
async fn two_origins() -> (Origin, Origin, u16) {
    for _ in 0..20 {
        let port = harness::closed_port().port();
        let b = Origin::start("b", SocketAddr::from(([127, 0, 0, 2], port)), None).await;
        let c = Origin::start("c", SocketAddr::from(([127, 0, 0, 3], port)), None).await;
        if let (Ok(b), Ok(c)) = (b, c) {
            return (b, c, port);
        }
    }
    panic!("no port free on both 127.0.0.2 and 127.0.0.3");
}

fn config(dns: SocketAddr, backend: &str) -> Toml {
    Toml::new()
        .listener()
        .raw("[resolver]")
        .raw(&format!(r#"nameservers = ["{dns}"]"#))
        .raw("[upstreams.o]")
        .raw(&format!(r#"backends = ["{backend}"]"#))
        .raw(r#"resolve_interval = "200ms""#)
        .route("o")
}

/// Waits (up to 10 s) until 20 requests in a row are answered by exactly `origins`.
async fn answered_by(addr: SocketAddr, origins: &[&str]) {
    let want: BTreeSet<String> = origins.iter().map(|o| (*o).to_owned()).collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut seen = BTreeSet::new();
        for _ in 0..20 {
            let reply = client::get(addr, "/", &[]).await.expect("request");
            assert_eq!(reply.status, 200);
            seen.insert(reply.header("x-origin").to_owned());
        }
        if seen == want {
            return;
        }
        assert!(Instant::now() < deadline, "answered by {seen:?}, not {want:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traffic_follows_the_name_as_its_addresses_change() {
    let (b, c, port) = two_origins().await;
    let answers = Arc::new(Mutex::new(vec![Ipv4Addr::new(127, 0, 0, 2)]));
    let dns = dns_server(answers.clone()).await;
    let gw = harness::start(&config(dns, &format!("svc.test:{port}"))).await.expect("gateway");
    let addr = gw.addrs()[0];
    let load = Load::start(addr, 4, "/");
    answered_by(addr, &["b"]).await;

    *answers.lock().expect("answers") = vec![Ipv4Addr::new(127, 0, 0, 2), Ipv4Addr::new(127, 0, 0, 3)];
    answered_by(addr, &["b", "c"]).await;
    let upstreams = gw.gateway();
    let group = upstreams.upstreams().get("o").expect("group");
    let resolved: Vec<String> = group.backends().iter().map(|b| b.label().to_string()).collect();
    assert_eq!(
        resolved,
        [format!("svc.test:{port} (127.0.0.2:{port})"), format!("svc.test:{port} (127.0.0.3:{port})")]
    );

    *answers.lock().expect("answers") = vec![Ipv4Addr::new(127, 0, 0, 3)];
    answered_by(addr, &["c"]).await;

    // The name stops resolving: it keeps its addresses, and follows again once it resolves.
    *answers.lock().expect("answers") = vec![];
    tokio::time::sleep(Duration::from_millis(600)).await;
    answered_by(addr, &["c"]).await;
    *answers.lock().expect("answers") = vec![Ipv4Addr::new(127, 0, 0, 2)];
    answered_by(addr, &["b"]).await;
    load.wait_for(100).await;
    let report = load.finish().await;
    assert!(report.errors.is_empty(), "{:?}", &report.errors[..report.errors.len().min(5)]);
    assert!(b.requests() > 0 && c.requests() > 0);
    gw.stop().await;
}

#[tokio::test]
async fn a_name_that_does_not_resolve_at_start_is_refused_with_the_name() {
    let dns = dns_server(Arc::new(Mutex::new(vec![]))).await;
    let error = match harness::start(&config(dns, "missing.test:8080")).await {
        Ok(_) => panic!("a name that does not resolve was accepted"),
        Err(error) => error.to_string(),
    };
    assert!(error.contains("upstreams.o.backends[0]") && error.contains("missing.test:8080"), "{error}");
}
