//! A TCP relay that can cut a link: while cut, no byte moves in either
//! direction and new connections get no further than the relay's socket, as
//! when a cable is pulled (nothing is reset); healed, what was held goes on.
//! Tests put it between a worker and the master to partition the worker.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// A relay from a local port to `target`.
pub struct LinkProxy {
    /// Where clients connect (`127.0.0.1:<port>`).
    pub address: String,
    cut: Arc<AtomicBool>,
    stopped: Arc<AtomicBool>,
}

impl LinkProxy {
    /// Starts relaying connections on a free local port to `target`.
    pub fn start(target: SocketAddr) -> LinkProxy {
        Self::start_on("127.0.0.1:0".parse().unwrap(), target)
    }

    /// Starts relaying connections on `listen` to `target`.
    pub fn start_on(listen: SocketAddr, target: SocketAddr) -> LinkProxy {
        let listener = TcpListener::bind(listen).expect("bind the proxy");
        let address = listener.local_addr().unwrap().to_string();
        let cut = Arc::new(AtomicBool::new(false));
        let stopped = Arc::new(AtomicBool::new(false));
        let (cut_flag, stop_flag) = (cut.clone(), stopped.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if stop_flag.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = client else { continue };
                let (cut, stopped) = (cut_flag.clone(), stop_flag.clone());
                std::thread::spawn(move || relay(client, target, cut, stopped));
            }
        });
        LinkProxy {
            address,
            cut,
            stopped,
        }
    }

    /// Cuts the link: nothing moves until [`LinkProxy::heal`].
    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
    }

    /// Restores the link; held bytes are delivered.
    pub fn heal(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

impl Drop for LinkProxy {
    fn drop(&mut self) {
        self.stopped.store(true, Ordering::SeqCst);
        self.cut.store(false, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(&self.address);
    }
}

fn wait_while_cut(cut: &AtomicBool, stopped: &AtomicBool) -> bool {
    while cut.load(Ordering::SeqCst) {
        if stopped.load(Ordering::SeqCst) {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    !stopped.load(Ordering::SeqCst)
}

fn relay(client: TcpStream, target: SocketAddr, cut: Arc<AtomicBool>, stopped: Arc<AtomicBool>) {
    if !wait_while_cut(&cut, &stopped) {
        return;
    }
    let Ok(server) = TcpStream::connect(target) else {
        return;
    };
    let _ = (client.set_nodelay(true), server.set_nodelay(true));
    let (Ok(client_reader), Ok(server_reader)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    let (cut2, stopped2) = (cut.clone(), stopped.clone());
    std::thread::spawn(move || copy(client_reader, server, &cut2, &stopped2));
    copy(server_reader, client, &cut, &stopped);
}

/// Copies until either side closes, holding bytes while the link is cut.
fn copy(mut from: TcpStream, mut to: TcpStream, cut: &AtomicBool, stopped: &AtomicBool) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if !wait_while_cut(cut, stopped) {
            break;
        }
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if !wait_while_cut(cut, stopped) || to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
    let _ = from.shutdown(Shutdown::Read);
}
