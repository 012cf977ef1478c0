//! The Redis link against a scripted Redis on a loopback port, for what a real `redis-server` does not do on demand:
//! go silent in the middle of a pipeline, or drop the connection while a node leaves. (The server crate's cluster
//! tests run the link against a real `redis-server`.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use switchboard_cluster::redis::{RedisBackend, RedisSettings};
use switchboard_cluster::resp::{self, Frame, Value};
use switchboard_cluster::{Backend, Command, Event, NodeId};
use switchboard_core::cluster::ClaimOutcome;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// What the scripted Redis does once a connection has registered the node (answered its first heartbeat).
#[derive(Clone, Copy)]
enum Then {
    /// Reads on, answers nothing.
    GoSilent,
    /// Closes the connection at the next command.
    Hang,
}

/// A scripted Redis: answers the handshake and the first heartbeat of every connection, then does `then` on the
/// first connection and behaves on later ones. Returns its address and the number of connections it accepted.
async fn scripted_redis(then: Then) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("redis://{}", listener.local_addr().unwrap());
    let connections = Arc::new(AtomicUsize::new(0));
    let count = connections.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let first = count.fetch_add(1, Ordering::SeqCst) == 0;
            tokio::spawn(serve(stream, first.then_some(then)));
        }
    });
    (url, connections)
}

async fn serve(mut stream: TcpStream, then: Option<Then>) {
    let mut input = Vec::new();
    let mut registered = false;
    loop {
        let command = loop {
            if let Ok(Some((Frame::Reply(Value::Array(args)), used))) = resp::parse(&input) {
                input.drain(..used);
                break args;
            }
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => input.extend_from_slice(&chunk[..n]),
            }
        };
        if registered {
            match then {
                Some(Then::GoSilent) => continue,
                Some(Then::Hang) => return,
                None => {}
            }
        }
        let name = match command.first() {
            Some(Value::Bytes(name)) => String::from_utf8_lossy(name).to_uppercase(),
            _ => return,
        };
        let reply: Vec<u8> = match name.as_str() {
            "HELLO" => b"%1\r\n+proto\r\n:3\r\n".to_vec(),
            "SCRIPT" => b"$4\r\nsha1\r\n".to_vec(),
            "SUBSCRIBE" => {
                let mut out = Vec::new();
                for (n, channel) in command[1..].iter().enumerate() {
                    let Value::Bytes(channel) = channel else { return };
                    out.extend_from_slice(format!(">3\r\n$9\r\nsubscribe\r\n${}\r\n", channel.len()).as_bytes());
                    out.extend_from_slice(channel);
                    out.extend_from_slice(format!("\r\n:{}\r\n", n + 1).as_bytes());
                }
                out
            }
            // The heartbeat (alive nodes) and the claim script ([won, evicted]) are the only EVALSHAs here.
            "EVALSHA" if !registered => {
                registered = true;
                b"*1\r\n$4\r\nnode\r\n".to_vec()
            }
            "EVALSHA" => b"*2\r\n:1\r\n$0\r\n\r\n".to_vec(),
            "PUBLISH" => b":1\r\n".to_vec(),
            _ => b"-ERR unknown command\r\n".to_vec(),
        };
        if stream.write_all(&reply).await.is_err() {
            return;
        }
    }
}

fn start(url: String) -> (RedisBackend, tokio::task::JoinHandle<()>, mpsc::Receiver<Event>) {
    let (events, rx) = mpsc::channel(1024);
    let settings = RedisSettings {
        url,
        node: NodeId(Arc::from("me")),
        // A heartbeat every second: no heartbeat falls between the steps of these tests.
        node_timeout: Duration::from_secs(10),
    };
    let (backend, task) = RedisBackend::start(settings, events).unwrap();
    (backend, task, rx)
}

async fn next(events: &mut mpsc::Receiver<Event>) -> Event {
    tokio::time::timeout(Duration::from_secs(5), events.recv()).await.expect("an event in time").expect("an event")
}

fn claim(ticket: u64) -> Command {
    Command::Claim { ticket, key: Arc::from("alice"), replace: false }
}

#[tokio::test]
async fn a_redis_that_goes_silent_fails_what_it_was_asked_and_the_link_comes_back() {
    let (url, connections) = scripted_redis(Then::GoSilent).await;
    let (backend, _task, mut events) = start(url);
    assert_eq!(next(&mut events).await, Event::LinkUp);
    assert!(backend.ready());
    backend.submit(claim(1)).unwrap();
    // No answer within the reply timeout (2 s): the claim fails, the link goes down, and a new connection (which
    // answers) brings it back, where a claim is answered.
    let started = tokio::time::Instant::now();
    assert_eq!(next(&mut events).await, Event::Claimed { ticket: 1, outcome: ClaimOutcome::Unavailable });
    assert!(started.elapsed() >= Duration::from_millis(1500), "failed after {:?}", started.elapsed());
    assert_eq!(next(&mut events).await, Event::LinkDown);
    assert_eq!(next(&mut events).await, Event::LinkUp);
    assert_eq!(connections.load(Ordering::SeqCst), 2);
    backend.submit(claim(2)).unwrap();
    assert_eq!(next(&mut events).await, Event::Claimed { ticket: 2, outcome: ClaimOutcome::Won { evicted: None } });
}

#[tokio::test]
async fn a_node_that_leaves_while_redis_drops_the_connection_stops_and_never_registers_again() {
    let (url, connections) = scripted_redis(Then::Hang).await;
    let (backend, task, mut events) = start(url);
    assert_eq!(next(&mut events).await, Event::LinkUp);
    tokio::time::timeout(Duration::from_secs(5), backend.depart()).await.expect("depart returns");
    tokio::time::timeout(Duration::from_secs(5), task).await.expect("the task ends").unwrap();
    assert_eq!(connections.load(Ordering::SeqCst), 1, "no reconnection after leaving");
}
