//! A UDP echo peer: every datagram back to its sender, from a fixed buffer (it allocates
//! nothing per packet, so it can stand next to an allocation count), on a thread named
//! `echo-peer`.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// An echo peer that stops when dropped (or with [`EchoPeer::stop`]).
pub struct EchoPeer {
    /// The UDP address the peer echoes datagrams on.
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<u64>>,
}

impl EchoPeer {
    /// Binds `bind` (e.g. `127.0.0.1:0`, `[::1]:0`) and echoes every datagram back.
    pub fn start(bind: &str) -> std::io::Result<Self> {
        let s = UdpSocket::bind(bind)?;
        // How often the thread looks at the stop flag.
        s.set_read_timeout(Some(Duration::from_millis(50)))?;
        let addr = s.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("echo-peer".into())
            .spawn(move || {
                let mut buf = [0u8; 2048];
                let mut echoed = 0u64;
                while !flag.load(Ordering::Relaxed) {
                    if let Ok((n, from)) = s.recv_from(&mut buf) {
                        if s.send_to(&buf[..n], from).is_ok() {
                            echoed += 1;
                        }
                    }
                }
                echoed
            })?;
        Ok(Self {
            addr,
            stop,
            thread: Some(thread),
        })
    }

    /// Stops the peer; how many datagrams it echoed.
    pub fn stop(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .map_or(0, |t| t.join().expect("the echo thread"))
    }
}

impl Drop for EchoPeer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
