//! A TCP proxy in front of a test cluster whose links a test can cut, as a network
//! between two data centres drops connections: every open connection is closed at
//! once, and new ones go through again.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;

/// A proxy listening on its own port, forwarding to `127.0.0.1:upstream`.
pub struct Proxy {
    /// The port to connect to instead of the cluster's.
    pub port: u16,
    open: Arc<Mutex<Vec<TcpStream>>>,
}

impl Proxy {
    /// Starts forwarding to `upstream` (for as long as the test binary runs).
    pub fn start(upstream: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding the proxy");
        let port = listener.local_addr().unwrap().port();
        let open: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let links = open.clone();
        thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue; // the client sees the link closed, as with a server down
                };
                if let (Ok(c), Ok(s)) = (client.try_clone(), server.try_clone()) {
                    links.lock().unwrap().extend([c, s]);
                }
                pipe(&client, &server);
                pipe(&server, &client);
            }
        });
        Self { port, open }
    }

    /// Closes every connection open through the proxy, both ways.
    pub fn cut(&self) {
        for link in self.open.lock().unwrap().drain(..) {
            let _ = link.shutdown(Shutdown::Both);
        }
    }

    /// A URL for database `db` as the superuser through the proxy.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }
}

/// Copies bytes from `from` to `to` on a thread of its own until either side closes.
fn pipe(from: &TcpStream, to: &TcpStream) {
    let (mut from, mut to) = (from.try_clone().unwrap(), to.try_clone().unwrap());
    thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = to.shutdown(Shutdown::Both);
        let _ = from.shutdown(Shutdown::Both);
    });
}
